package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/controller/client"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// join asks the cluster at cfg.Join to add this node. It retries while the
// cluster has no leader or cannot be reached, up to JoinTimeout, and stops
// at once at an address that is not a controller or a refusal.
func (s *Server) join(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.JoinTimeout)
	defer cancel()
	req := &v1.AddMemberRequest{Id: s.id.NodeID, RaftAddress: s.id.raftAdvertise(), Address: s.id.grpcAdvertise(),
		RepositoryId: s.relay.repositoryID(ctx)}
	var last error
	for {
		err := s.tryJoin(ctx, req)
		if err == nil {
			s.log.Info("joined the cluster", "via", s.cfg.Join)
			return nil
		}
		var permanent *joinRefused
		if errors.As(err, &permanent) {
			return err
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("could not join the cluster via %s within %s: %w", strings.Join(s.cfg.Join, ","), s.cfg.JoinTimeout, last)
		case <-s.stop:
			return errShutdown
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// joinRefused is an answer that retrying will not change.
type joinRefused struct{ err error }

func (e *joinRefused) Error() string { return e.err.Error() }
func (e *joinRefused) Unwrap() error { return e.err }

func (s *Server) tryJoin(ctx context.Context, req *v1.AddMemberRequest) error {
	c, err := client.DialAny(ctx, s.cfg.Join, withProbe(s.clientOptions(), 2*time.Second))
	if err != nil {
		if errors.Is(err, client.ErrTLS) || errors.Is(err, client.ErrNoCredentials) {
			return &joinRefused{fmt.Errorf("cannot join: %w", err)}
		}
		if errors.Is(err, client.ErrNotController) && !errors.Is(err, client.ErrUnreachable) {
			return &joinRefused{fmt.Errorf("cannot join: %w (--join takes the --grpc-addr of a running controller, not its --raft-addr)", err)}
		}
		if errors.Is(err, client.ErrUnreachable) {
			return fmt.Errorf("%w (is a controller running there, and is that its --grpc-addr?)", err)
		}
		return err
	}
	defer func() { _ = c.Close() }()
	if c.NodeID == s.id.NodeID {
		return &joinRefused{fmt.Errorf("cannot join: --join %s is this node itself", c.Addr)}
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	_, err = c.Control.AddMember(actx, req)
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Errorf("controller %s (%s) cannot add this node: it is not part of a bootstrapped cluster, or its cluster has no leader (%s)", c.NodeID, c.Addr, st.Message())
	default:
		return &joinRefused{fmt.Errorf("controller %s (%s) refused to add node %s: %s", c.NodeID, c.Addr, s.id.NodeID, st.Message())}
	}
}

func withProbe(o client.Options, d time.Duration) client.Options {
	o.ProbeTimeout = d
	return o
}

package controller

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Reads are consistent by default (issue 18): a follower forwards the read
// to the leader; the leader answers only once it has
//
//  1. committed an entry of its own term (the barrier lead runs on
//     election: before that, a new leader's commit index may be behind
//     what the previous leader acknowledged),
//  2. noted its commit index when the read arrived,
//  3. confirmed with a quorum that it still leads (raft.VerifyLeader: a
//     deposed leader that has not noticed yet cannot answer), and
//  4. applied its catalog up to that commit index.
//
// That is etcd's ReadIndex. Any write acknowledged before the read
// started was committed before step 2, so the answer holds it.
//
// hashicorp/raft batches concurrent VerifyLeader calls itself: every
// pending check rides on the next heartbeat round to the followers, so 16
// concurrent readers cost about one round trip each, not 16. An etcd-style
// queue in front of it (one VerifyLeader in flight, reads arriving meanwhile
// waiting for the next) was measured with BenchmarkReads and was slower:
// GetJob at 16 readers, p50 2.5 ms, p99 21 ms, 4,249 reads/s against 1.9 ms,
// 7.2 ms and 7,289 reads/s without it (a read waits for a whole later round
// instead of joining the next heartbeat), so it is not used.
//
// A lease read (answering while the last quorum contact is younger than
// the leader lease) would save the round trip, but it trusts the clocks of
// three machines to drift less than the lease, and hashicorp/raft exposes
// no lease a reader could check safely; the round trip is well under a
// millisecond on a LAN.
//
// A stale read (the request's stale field) is served from the catalog of
// the node asked, whatever its state, and says how far behind it may be.

// readPrep prepares a read: fwd tells the caller to forward it to the
// leader (a consistent read on a follower); otherwise info is the answer's
// ReadInfo, or err says why no consistent answer can be given here.
func (c *controlService) readPrep(ctx context.Context, stale bool) (fwd bool, info *v1.ReadInfo, err error) {
	s := c.s
	if stale {
		return false, s.staleInfo(), nil
	}
	if !s.isLeader() {
		id, _ := s.leader()
		if wasForwarded(ctx) {
			return false, nil, catalog.Errorf(ErrNotLeader, "node %s received a forwarded read but is not the leader (it knows %q as leader); retry", s.id.NodeID, id)
		}
		// A leader silent for a heartbeat timeout is gone or cut off (an
		// election is due): forwarding to it would wait out the caller's
		// deadline instead of letting it retry on the next leader.
		if lc := s.raft.LastContact(); id != "" && !lc.IsZero() && time.Since(lc) > s.cfg.Raft.HeartbeatTimeout {
			return false, nil, catalog.Errorf(ErrNoLeader, "node %s has not heard from the leader %s for %s (an election is due); retry", s.id.NodeID, id, time.Since(lc).Round(time.Millisecond))
		}
		return true, nil, nil
	}
	applied, err := s.readIndex(ctx)
	if err != nil {
		return false, nil, err
	}
	return false, &v1.ReadInfo{NodeId: s.id.NodeID, LeaderId: s.id.NodeID, AppliedIndex: applied, CommitIndex: applied}, nil
}

// forwardRead forwards a consistent read to the leader. When there is no
// leader to reach, the error says so and that a stale read would answer.
func forwardRead[Req, Resp any](ctx context.Context, s *Server, req Req, call rpc[Req, Resp]) (Resp, error) {
	resp, err := forward(ctx, s, req, call)
	if err == nil {
		return resp, nil
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codeOf(err), err.Error())
	}
	if st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded {
		return resp, status.Errorf(st.Code(), "consistent read: %s; a stale read (--stale) answers from node %s's own catalog", st.Message(), s.id.NodeID)
	}
	return resp, err
}

// staleInfo is the ReadInfo of a read served from this node's catalog now.
func (s *Server) staleInfo() *v1.ReadInfo {
	info := &v1.ReadInfo{NodeId: s.id.NodeID, Stale: true, AppliedIndex: s.raft.AppliedIndex(), CommitIndex: s.raft.CommitIndex()}
	_, lid := s.raft.LeaderWithID()
	info.LeaderId = string(lid)
	if s.raft.State() != raft.Leader {
		if lc := s.raft.LastContact(); !lc.IsZero() {
			info.LastLeaderContact = timestampOf(lc)
			info.SinceLeaderContact = durationpb.New(time.Since(lc))
		}
	}
	return info
}

// readIndex makes a consistent read possible on the leader (steps 1 to 4
// above) and returns the index the read is served at. It must run on the
// leader; it fails when this node cannot confirm its leadership.
func (s *Server) readIndex(ctx context.Context) (uint64, error) {
	if err := s.waitEstablished(ctx); err != nil {
		return 0, err
	}
	commit := s.raft.CommitIndex()
	if err := s.raft.VerifyLeader().Error(); err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return 0, errShutdown
		}
		return 0, catalog.Errorf(ErrNoLeader, "node %s could not confirm its leadership with a quorum (%v): the cluster may have no quorum; retry", s.id.NodeID, err)
	}
	if err := s.waitApplied(ctx, commit); err != nil {
		return 0, err
	}
	return commit, nil
}

// waitEstablished waits until this node, leading, has committed an entry
// of its current term (lead's barrier), for at most the apply timeout.
func (s *Server) waitEstablished(ctx context.Context) error {
	if s.establishedTerm.Load() == s.raft.CurrentTerm() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for s.establishedTerm.Load() != s.raft.CurrentTerm() {
		if !s.isLeader() {
			return catalog.Errorf(ErrNoLeader, "node %s lost the leadership while taking it over; retry", s.id.NodeID)
		}
		select {
		case <-ctx.Done():
			return catalog.Errorf(ErrNoLeader, "node %s leads (term %d) but has not committed an entry of its term within %s, so it cannot tell what is committed; retry", s.id.NodeID, s.raft.CurrentTerm(), s.cfg.ApplyTimeout)
		case <-t.C:
		}
	}
	return nil
}

// waitApplied waits until the catalog has applied index. On the leader it
// has, or is a few microseconds from it: entries are applied right after
// they commit.
func (s *Server) waitApplied(ctx context.Context, index uint64) error {
	if s.raft.AppliedIndex() >= index {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	t := time.NewTicker(200 * time.Microsecond)
	defer t.Stop()
	for s.raft.AppliedIndex() < index {
		select {
		case <-ctx.Done():
			if err := context.Cause(ctx); errors.Is(err, context.Canceled) {
				return err
			}
			return catalog.Errorf(ErrNoLeader, "node %s had not applied index %d within %s (applied %d)", s.id.NodeID, index, s.cfg.ApplyTimeout, s.raft.AppliedIndex())
		case <-t.C:
		}
	}
	return nil
}

package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func (c *controlService) TransferLeadership(ctx context.Context, req *v1.TransferLeadershipRequest) (*v1.TransferLeadershipResponse, error) {
	s := c.s
	if !s.isLeader() {
		return forward(ctx, s, req, v1.ControlServiceClient.TransferLeadership)
	}
	leader, err := s.transferLeadership(ctx, req.GetTargetId())
	if err != nil {
		return nil, err
	}
	return &v1.TransferLeadershipResponse{PreviousLeaderId: s.id.NodeID, LeaderId: leader, Term: s.raft.CurrentTerm()}, nil
}

// errNoOtherVoter: leadership cannot move because this node is the only
// voter.
var errNoOtherVoter = errors.New("no other voter")

// transferLeadership hands this leader's leadership to target (a voter's
// node id; "": the voter Raft finds most up to date) and waits until this
// node sees another leader, or ctx ends. It returns the new leader's id.
//
// hashicorp/raft sends the target a TimeoutNow once it has caught up, so
// the target starts its election at once instead of after an election
// timeout; meanwhile this leader refuses new writes (they fail as
// unavailable, and the CLI retries elsewhere).
func (s *Server) transferLeadership(ctx context.Context, target string) (string, error) {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return "", catalog.Errorf(ErrNoLeader, "reading the Raft configuration: %v", err)
	}
	var voters []string
	var addr raft.ServerAddress
	for _, srv := range cf.Configuration().Servers {
		if srv.Suffrage != raft.Voter || string(srv.ID) == s.id.NodeID {
			continue
		}
		voters = append(voters, string(srv.ID))
		if string(srv.ID) == target {
			addr = srv.Address
		}
	}
	slices.Sort(voters)
	switch {
	case target == s.id.NodeID:
		return "", catalog.Errorf(catalog.ErrConflict, "node %s already leads", target)
	case len(voters) == 0:
		return "", catalog.Errorf(catalog.ErrConflict, "node %s is the cluster's only voter: %w; add nodes first (tidemark controller --join)", s.id.NodeID, errNoOtherVoter)
	case target != "" && addr == "":
		return "", catalog.Errorf(catalog.ErrNotFound, "controller node %q is not a voting member (voters besides the leader %s: %s)", target, s.id.NodeID, strings.Join(voters, ", "))
	}
	start := time.Now()
	var f raft.Future
	if target == "" {
		f = s.raft.LeadershipTransfer()
	} else {
		f = s.raft.LeadershipTransferToServer(raft.ServerID(target), addr)
	}
	if err := f.Error(); err != nil {
		return "", catalog.Errorf(ErrNoLeader, "transferring leadership from %s: %v", s.id.NodeID, err)
	}
	// The future resolves when the target was told to start its election;
	// wait until this node hears of the new leader.
	for {
		if _, id := s.raft.LeaderWithID(); id != "" && string(id) != s.id.NodeID {
			s.log.Info("leadership transferred", "to", string(id), "took", time.Since(start))
			return string(id), nil
		}
		select {
		case <-ctx.Done():
			return "", catalog.Errorf(ErrNoLeader, "leadership left %s but no new leader was seen within the call's deadline: %v", s.id.NodeID, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// HandOff transfers leadership to another voter when this node leads and
// has one, so that stopping it (SIGTERM) costs the cluster no election
// timeout; it is a no-op on a follower or a single node. It returns the new
// leader's id ("" when nothing was transferred). A failure is only logged
// by the caller: the node stops anyway and the others elect a leader the
// slow way.
func (s *Server) HandOff(ctx context.Context) (string, error) {
	if s.raft == nil || !s.isLeader() {
		return "", nil
	}
	leader, err := s.transferLeadership(ctx, "")
	if errors.Is(err, errNoOtherVoter) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("controller %s: handing off leadership: %w", s.id.NodeID, err)
	}
	return leader, nil
}

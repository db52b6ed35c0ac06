package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/fsm"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// isLeader reports whether this node is the Raft leader right now.
func (s *Server) isLeader() bool { return s.raft.State() == raft.Leader }

// leader returns the leader's node id and gRPC address as this node knows
// them; empty when there is no leader or its address is not in the catalog
// yet.
func (s *Server) leader() (id, addr string) {
	_, lid := s.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	id = string(lid)
	if id == s.id.NodeID {
		return id, s.id.grpcAdvertise()
	}
	if m, err := s.fsm.Store().Read().Member(id); err == nil {
		addr = m.GetAddress()
	}
	return id, addr
}

// apply proposes cmd to Raft and waits for it to be applied here. It must
// run on the leader. Raft errors become ErrNoLeader (the write was not
// committed, or its fate is unknown because leadership was lost); a
// business error from the FSM comes back as is, with the response.
func (s *Server) apply(ctx context.Context, cmd *v1.Command) (*fsm.Response, error) {
	cmd, call := s.guard(ctx, cmd)
	b, err := fsm.Encode(cmd)
	if err != nil {
		return nil, fmt.Errorf("encoding command: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	f := s.raft.Apply(b, s.cfg.ApplyTimeout)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		return nil, catalog.Errorf(ErrNoLeader, "the write was not committed within %s (node %s cannot reach a quorum of the cluster); it may still take effect: check, then retry", s.cfg.ApplyTimeout, s.id.NodeID)
	}
	switch {
	case err == nil:
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return nil, catalog.Errorf(ErrNoLeader, "node %s lost the leadership before the write was committed (%v); it may still take effect under the next leader: check, then retry", s.id.NodeID, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return nil, catalog.Errorf(ErrNoLeader, "node %s could not start the write within %s", s.id.NodeID, s.cfg.ApplyTimeout)
	case errors.Is(err, raft.ErrRaftShutdown):
		return nil, errShutdown
	default:
		return nil, catalog.Errorf(ErrNoLeader, "raft apply: %v", err)
	}
	resp, ok := f.Response().(*fsm.Response)
	if !ok {
		return nil, fmt.Errorf("raft apply returned %T", f.Response())
	}
	if call != nil && resp.Replayed {
		call.replayed, call.value = true, resp.Value
	}
	return resp, resp.Err
}

// addMember adds a node to the Raft configuration and records its gRPC
// address. Adding a member that is already there with the same addresses
// changes nothing.
func (s *Server) addMember(ctx context.Context, req *v1.AddMemberRequest) error {
	if !validNodeID(req.GetId()) || req.GetRaftAddress() == "" || req.GetAddress() == "" {
		return invalid("AddMember needs a valid id, raft_address and address")
	}
	if theirs, ours := req.GetRepositoryId(), s.relay.repositoryID(ctx); theirs != "" && ours != "" && theirs != ours {
		return catalog.Errorf(catalog.ErrConflict, "node %s's --repo holds repository %s, this cluster's holds %s: give every controller the same --repo (one bucket and prefix), or agents relaying through them would split backups between repositories",
			req.GetId(), theirs, ours)
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return catalog.Errorf(ErrNoLeader, "reading the Raft configuration: %v", err)
	}
	for _, srv := range cf.Configuration().Servers {
		if string(srv.ID) != req.GetId() && string(srv.Address) == req.GetRaftAddress() {
			return catalog.Errorf(catalog.ErrConflict, "raft address %s is already used by node %s", req.GetRaftAddress(), srv.ID)
		}
	}
	var f raft.IndexFuture
	if req.GetNonvoter() {
		f = s.raft.AddNonvoter(raft.ServerID(req.GetId()), raft.ServerAddress(req.GetRaftAddress()), 0, s.cfg.ApplyTimeout)
	} else {
		f = s.raft.AddVoter(raft.ServerID(req.GetId()), raft.ServerAddress(req.GetRaftAddress()), 0, s.cfg.ApplyTimeout)
	}
	if err := f.Error(); err != nil {
		return catalog.Errorf(ErrNoLeader, "adding node %s at %s: %v", req.GetId(), req.GetRaftAddress(), err)
	}
	_, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_UpsertMember{UpsertMember: &v1.UpsertMember{Member: &v1.MemberRecord{
		Id: req.GetId(), Address: req.GetAddress(), RaftAddress: req.GetRaftAddress(), UpdatedAt: now(),
	}}}})
	if err == nil {
		s.log.Info("member added", "member", req.GetId(), "raft", req.GetRaftAddress(), "grpc", req.GetAddress(), "voter", !req.GetNonvoter())
	}
	return err
}

// removeMember removes a node from the Raft configuration and the catalog.
func (s *Server) removeMember(ctx context.Context, id string) error {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return catalog.Errorf(ErrNoLeader, "reading the Raft configuration: %v", err)
	}
	found := false
	for _, srv := range cf.Configuration().Servers {
		found = found || string(srv.ID) == id
	}
	if !found {
		return catalog.Errorf(catalog.ErrNotFound, "controller node %q is not a member", id)
	}
	// Forget the address first: once the leader removes itself it can
	// commit nothing more.
	if _, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_RemoveMember{RemoveMember: &v1.RemoveMember{Id: id}}}); err != nil {
		return err
	}
	if err := s.raft.RemoveServer(raft.ServerID(id), 0, s.cfg.ApplyTimeout).Error(); err != nil {
		return catalog.Errorf(ErrNoLeader, "removing node %s: %v", id, err)
	}
	s.log.Info("member removed", "member", id)
	return nil
}

// catalog, term and memberAddr serve the agent hub (hubNode).
func (s *Server) catalog() *catalog.Store { return s.fsm.Store() }
func (s *Server) term() uint64            { return s.raft.CurrentTerm() }
func (s *Server) memberAddr(id string) string {
	if m, err := s.fsm.Store().Read().Member(id); err == nil {
		return m.GetAddress()
	}
	return ""
}

package controller

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// clusterService is ClusterService: this node's own Raft view, and
// maintenance.
type clusterService struct {
	v1.UnimplementedClusterServiceServer
	s *Server
}

func (c *clusterService) NodeStatus(context.Context, *v1.NodeStatusRequest) (*v1.NodeStatusResponse, error) {
	return c.s.nodeStatus(), nil
}

func (c *clusterService) TakeSnapshot(context.Context, *v1.TakeSnapshotRequest) (*v1.TakeSnapshotResponse, error) {
	f := c.s.raft.Snapshot()
	if err := f.Error(); errors.Is(err, raft.ErrNothingNewToSnapshot) {
		idx, _ := strconv.ParseUint(c.s.raft.Stats()["last_snapshot_index"], 10, 64)
		return &v1.TakeSnapshotResponse{Index: idx}, nil
	} else if err != nil {
		return nil, err
	}
	meta, rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	_ = rc.Close()
	return &v1.TakeSnapshotResponse{Index: meta.Index}, nil
}

// nodeStatus is this node's local Raft state.
func (s *Server) nodeStatus() *v1.NodeStatusResponse {
	st := &v1.NodeStatusResponse{
		NodeId: s.id.NodeID, Address: s.id.grpcAdvertise(), RaftAddress: s.id.raftAdvertise(),
		Term: s.raft.CurrentTerm(), CommitIndex: s.raft.CommitIndex(), AppliedIndex: s.raft.AppliedIndex(),
		LastLogIndex: s.raft.LastIndex(),
	}
	st.LastSnapshotIndex, _ = strconv.ParseUint(s.raft.Stats()["last_snapshot_index"], 10, 64)
	switch s.raft.State() {
	case raft.Leader:
		st.State = v1.MemberState_MEMBER_STATE_LEADER
	case raft.Candidate:
		st.State = v1.MemberState_MEMBER_STATE_CANDIDATE
	default:
		st.State = v1.MemberState_MEMBER_STATE_FOLLOWER
		if lc := s.raft.LastContact(); !lc.IsZero() {
			st.LastContact = timestampOf(lc)
		}
	}
	st.LeaderId, _ = s.leader()
	return st
}

// members lists the Raft configuration with each member's own view: every
// member is asked (NodeStatus, in parallel, briefly); one that does not
// answer is UNREACHABLE.
func (s *Server) members(ctx context.Context) []*v1.Member {
	cf := s.raft.GetConfiguration()
	if cf.Error() != nil {
		return nil
	}
	servers := cf.Configuration().Servers
	r := s.fsm.Store().Read()
	out := make([]*v1.Member, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		m := &v1.Member{Id: string(srv.ID), RaftAddress: string(srv.Address), Voter: srv.Suffrage == raft.Voter,
			State: v1.MemberState_MEMBER_STATE_UNREACHABLE}
		if rec, err := r.Member(m.Id); err == nil {
			m.Address = rec.GetAddress()
		}
		out[i] = m
		if m.Id == s.id.NodeID {
			m.Address = s.id.grpcAdvertise()
			st := s.nodeStatus()
			m.State, m.LastContact = st.GetState(), st.GetLastContact()
			continue
		}
		if m.Address == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.peerCluster(m.Address)
			if err != nil {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			st, err := c.NodeStatus(cctx, &v1.NodeStatusRequest{})
			if err != nil || st.GetNodeId() != m.Id {
				return
			}
			m.State, m.LastContact = st.GetState(), st.GetLastContact()
		}()
	}
	wg.Wait()
	return out
}

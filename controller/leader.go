package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// monitorLeadership starts the leader-only work when Raft makes this node
// leader and stops it when it loses the leadership (Nomad's leader.go): the
// agent sessions, the lease timers and the assigner exist only between the
// two.
func (s *Server) monitorLeadership() {
	var stop func() // ends the current term's leader work; nil when not leading
	stopLeading := func() {
		if stop == nil {
			return
		}
		stop()
		stop = nil
		id, _ := s.leader()
		s.agents.revoke(id)
		s.log.Info("leadership lost")
	}
	for {
		select {
		case <-s.stop:
			stopLeading()
			return
		case leading := <-s.raft.LeaderCh():
			// Two trues in a row mean the leadership was lost and
			// regained in between: start over.
			stopLeading()
			if leading {
				stop = s.startLeading()
			}
		}
	}
}

// startLeading runs lead until the returned function is called, which
// waits for it to return.
func (s *Server) startLeading() func() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.lead(ctx)
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}

// lead is the leader's loop: after a barrier (so the catalog holds every
// entry of earlier terms) it records its own address, rebuilds the lease
// timers, and assigns pending jobs until ctx ends.
func (s *Server) lead(ctx context.Context) {
	s.log.Info("elected leader; waiting for the barrier")
	var term uint64
	for {
		// The term before the barrier: a barrier that commits commits an
		// entry of this term or of a later one, which also cannot end
		// until this one's entries are in.
		term = s.raft.CurrentTerm()
		err := s.raft.Barrier(s.cfg.ApplyTimeout).Error()
		if err == nil {
			break
		}
		s.log.Warn("barrier failed", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	s.agents.establish()
	// Consistent reads may be served from here on: the catalog holds every
	// earlier entry and the hub knows the sessions (reads.go).
	s.establishedTerm.Store(term)
	s.publishAddress(ctx)
	s.publishCA(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.agents.commitLoop(ctx) })
	wg.Go(func() { s.scheduleLoop(ctx) })
	wg.Go(func() { s.policyLoop(ctx) })
	wg.Go(func() { s.reconcileLoop(ctx) })
	wg.Go(func() { s.alertLoop(ctx) })
	wg.Go(func() { s.pruneLoop(ctx) })
	defer wg.Wait()
	s.agents.assignLoop(ctx)
}

// publishAddress makes sure the catalog has this node's gRPC address, which
// followers forward to and tell agents about.
func (s *Server) publishAddress(ctx context.Context) {
	m, err := s.fsm.Store().Read().Member(s.id.NodeID)
	if err == nil && m.GetAddress() == s.id.grpcAdvertise() && m.GetRaftAddress() == s.id.raftAdvertise() {
		return
	}
	for ctx.Err() == nil {
		_, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_UpsertMember{UpsertMember: &v1.UpsertMember{Member: &v1.MemberRecord{
			Id: s.id.NodeID, Address: s.id.grpcAdvertise(), RaftAddress: s.id.raftAdvertise(), UpdatedAt: now(),
		}}}})
		if err == nil || !errors.Is(err, ErrNoLeader) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// assignLoop assigns pending jobs whenever something may have made one
// assignable (a submission, a registration, a job ending, an expiry), and
// once a second in case a kick was missed.
func (h *agentHub) assignLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		h.assignPending(ctx)
		select {
		case <-ctx.Done():
			return
		case <-h.kick:
		case <-tick.C:
		}
	}
}

// exclusiveKind: jobs of kind k need their instance to themselves (one
// backup or restore at a time).
func exclusiveKind(k v1.JobKind) bool {
	return k == v1.JobKind_JOB_KIND_BACKUP || k == v1.JobKind_JOB_KIND_RESTORE
}

// assignPending hands every pending job whose instance's agent has a live
// session to that agent, oldest first, each under a new lease.
func (h *agentHub) assignPending(ctx context.Context) {
	r := h.node.catalog().Read()
	for _, j := range r.JobsInState(v1.JobState_JOB_STATE_PENDING) {
		if ctx.Err() != nil {
			return
		}
		in, err := r.Instance(j.GetInstance())
		if err != nil {
			continue
		}
		ss := h.session(in.GetAgent())
		if ss == nil && j.GetKind() == v1.JobKind_JOB_KIND_BINLOG_STREAM {
			ss = h.streamStandIn(r, in, j)
		}
		if ss == nil {
			continue
		}
		if exclusiveKind(j.GetKind()) {
			// An instance is busy until its last backup or restore has
			// stopped on the agent, not just been cancelled.
			if b := h.instanceBusy(ctx, r, in); b != nil {
				h.noteWaiting(j.GetId(), fmt.Sprintf("waiting for job %s to stop on instance %s (at the latest %s)",
					b.GetId(), in.GetName(), b.GetStoppingUntil().AsTime().UTC().Format(time.RFC3339)))
				continue
			}
		}
		t := time.Now()
		resp, err := h.node.apply(ctx, &v1.Command{Cmd: &v1.Command_AssignJob{AssignJob: &v1.AssignJob{
			JobId: j.GetId(), Agent: ss.name,
			Lease:         &v1.LeaseToken{Term: h.node.term(), JobId: j.GetId()},
			LeaseDeadline: timestampOf(t.Add(h.ttl)), AssignedAt: timestampOf(t),
		}}})
		if err != nil {
			if !errors.Is(err, catalog.ErrConflict) {
				h.log.Warn("could not assign a job", "job", j.GetId(), "agent", ss.name, "err", err)
			}
			if errors.Is(err, ErrNoLeader) {
				return
			}
			continue
		}
		nj := resp.Value.(*v1.Job)
		h.clearWaiting(nj.GetId())
		h.mu.Lock()
		delete(h.streamExpired, nj.GetId())
		if h.leading {
			h.armLease(nj.GetId(), nj.GetLease(), ss.name, h.ttl)
		}
		h.mu.Unlock()
		ss.send(h.assignmentMsg(h.node.catalog().Read(), nj))
		h.log.Info("job assigned", "job", nj.GetId(), "agent", ss.name, "attempt", nj.GetAttempt(), "lease", catalog.LeaseString(nj.GetLease()))
	}
}

// streamStandIn is the agent to run a `cluster` group's stream job j on
// while the agent of its instance in is lost: the live agent of another
// member of the group, one whose server was a primary when last probed
// first, else the first by name. The stream keeps its name (the job's
// instance), so it continues the same archive; the streamer follows the
// group's primary by the members' addresses whatever agent runs it. Nil
// for a stream of one instance, when no other member's agent is live, or
// while this leader is within its first lease and takeover grace (the
// instance's own agent may still reconnect: a leader change alone never
// moves a stream), unless the job's lease ran out on this leader while
// the instance's agent held it (that agent had its full window then). The
// FSM accepts such an assignment only for a member of the job's group.
func (h *agentHub) streamStandIn(r *catalog.Read, in *v1.Instance, j *v1.Job) *session {
	cluster := j.GetBinlogStream().GetCluster()
	if cluster == "" {
		return nil
	}
	h.mu.Lock()
	early := time.Since(h.leadingSince) < h.ttl+h.grace && h.streamExpired[j.GetId()] != in.GetAgent()
	h.mu.Unlock()
	if early {
		return nil
	}
	var pick *session
	for _, m := range groupOf(r, in, cluster)[1:] {
		ss := h.session(m.GetAgent())
		if ss == nil || m.GetAgent() == in.GetAgent() {
			continue
		}
		if !m.GetCapabilities().GetIsReplica() {
			pick = ss
			break
		}
		if pick == nil {
			pick = ss
		}
	}
	if pick != nil {
		h.log.Warn("the agent of a group's binlog stream is lost; moving the stream to another member's agent",
			"job", j.GetId(), "stream", j.GetInstance(), "lost_agent", in.GetAgent(), "agent", pick.name, "cluster", cluster)
	}
	return pick
}

// noteWaiting shows why a pending job is not assigned (GetJob, WatchJob
// show it as the job's progress), waking watchers only when it changed.
func (h *agentHub) noteWaiting(jobID, why string) {
	h.mu.Lock()
	same := h.progress[jobID].GetPhase() == why
	h.mu.Unlock()
	if !same {
		h.log.Info("job waits for its instance", "job", jobID, "why", why)
		h.setProgress(jobID, &v1.JobProgress{Phase: why, UpdatedAt: now()})
	}
}

// clearWaiting drops what noteWaiting said once the job is assigned.
func (h *agentHub) clearWaiting(jobID string) {
	h.mu.Lock()
	p := h.progress[jobID]
	h.mu.Unlock()
	if p != nil && strings.HasPrefix(p.GetPhase(), "waiting for job ") {
		h.setProgress(jobID, nil)
	}
}

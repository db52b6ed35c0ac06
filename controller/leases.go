package controller

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/fsm"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Lease timers live in the leader's memory only (Nomad's heartbeat.go in
// spirit): a heartbeat that lists a job under its current lease resets the
// job's timer, which costs no Raft entry; only an expiry is written
// (ExpireLease). A new leader rebuilds every timer from the catalog with a
// full lease plus Config.TakeoverGrace from the moment it took over, so a
// leader change never expires the lease of an agent that reconnects within
// the time PROTOCOL.md works out.

// lease is the timer of one job's current lease.
type lease struct {
	token    *v1.LeaseToken
	agent    string
	timer    *time.Timer
	deadline time.Time
}

// armLease starts (or restarts) the timer of a job's lease, for d. The
// caller holds h.mu.
func (h *agentHub) armLease(jobID string, token *v1.LeaseToken, agent string, d time.Duration) {
	if l := h.leases[jobID]; l != nil {
		l.timer.Stop()
	}
	l := &lease{token: token, agent: agent, deadline: time.Now().Add(d)}
	l.timer = time.AfterFunc(d, func() { h.expire(jobID, token) })
	h.leases[jobID] = l
}

// renew resets the timer of a job's lease if token is the lease the timer
// runs for; it reports whether it did.
func (h *agentHub) renew(jobID string, token *v1.LeaseToken) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.leading {
		return false
	}
	l := h.leases[jobID]
	if l == nil || !catalog.SameLease(l.token, token) {
		return false
	}
	l.timer.Reset(h.ttl)
	l.deadline = time.Now().Add(h.ttl)
	return true
}

// dropLease stops a job's timer (the job ended or moved on).
func (h *agentHub) dropLease(jobID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if l := h.leases[jobID]; l != nil {
		l.timer.Stop()
		delete(h.leases, jobID)
	}
}

// dropLeaseOf stops a job's timer only if it runs for token. Whoever ends
// one attempt (an expiry, a result) calls it after its Raft entry, and by
// then the assigner may already have given the job its next attempt and
// armed that lease's timer: dropping by job id alone would delete the new
// timer, and an agent that then vanished would leave the job ASSIGNED
// until the next leader change (issue 20 item 6).
func (h *agentHub) dropLeaseOf(jobID string, token *v1.LeaseToken) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if l := h.leases[jobID]; l != nil && catalog.SameLease(l.token, token) {
		l.timer.Stop()
		delete(h.leases, jobID)
	}
}

// expire runs on a lease timer's goroutine: it writes ExpireLease for the
// job's attempt, which retries it (back to pending) while attempts remain.
func (h *agentHub) expire(jobID string, token *v1.LeaseToken) {
	h.mu.Lock()
	l := h.leases[jobID]
	if !h.leading || l == nil || !catalog.SameLease(l.token, token) {
		h.mu.Unlock()
		return
	}
	agent := l.agent
	h.mu.Unlock()

	j, err := h.node.catalog().Read().Job(jobID)
	if err != nil || !catalog.SameLease(j.GetLease(), token) || !catalog.Active(j.GetState()) {
		h.dropLeaseOf(jobID, token)
		return
	}
	retry := j.GetAttempt() < fsm.MaxAttempts(j) || fsm.Continuous(j.GetKind())
	resp, err := h.node.apply(context.Background(), &v1.Command{Cmd: &v1.Command_ExpireLease{ExpireLease: &v1.ExpireLease{
		JobId: jobID, Lease: token, ExpiredAt: now(), Retry: retry, AgentGrace: durationpb.New(h.grace),
	}}})
	if err != nil {
		if errors.Is(err, catalog.ErrStaleLease) || errors.Is(err, catalog.ErrNotFound) {
			h.dropLeaseOf(jobID, token)
			return
		}
		// No quorum or lost leadership: try again soon if still leader.
		h.log.Warn("could not expire a lease; retrying", "job", jobID, "lease", catalog.LeaseString(token), "err", err)
		h.mu.Lock()
		if h.leading && h.leases[jobID] == l {
			l.timer.Reset(time.Second)
		}
		h.mu.Unlock()
		return
	}
	nj, _ := resp.Value.(*v1.Job)
	if h.afterExpire != nil {
		h.afterExpire(jobID)
	}
	h.metrics.LeaseExpired()
	h.log.Warn("lease expired", "job", jobID, "agent", agent, "lease", catalog.LeaseString(token),
		"attempt", j.GetAttempt(), "now", catalog.StateName(nj.GetState()))
	h.dropLeaseOf(jobID, token)
	h.setProgress(jobID, nil)
	if nj.GetKind() == v1.JobKind_JOB_KIND_BINLOG_STREAM {
		h.mu.Lock()
		h.streamExpired[jobID] = agent
		h.mu.Unlock()
	}
	// If the agent is still connected (alive but not listing the job),
	// tell it to stop the attempt.
	if ss := h.session(agent); ss != nil {
		ss.send(&v1.ControllerMessage{Msg: &v1.ControllerMessage_CancelJob{CancelJob: &v1.JobCancellation{
			JobId: jobID, Lease: token, Reason: "lease expired",
		}}})
	}
	h.kickAssigner()
}

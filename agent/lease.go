package agent

import (
	"context"
	"fmt"
	"time"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// A partitioned agent stops its jobs by itself once their leases have
// certainly run out on the leader, so the instance is quiet (its
// statements killed) by the time the leader hands it to another job.
//
// The leader renews a lease when it receives a Heartbeat (or Register)
// listing it, and answers with LeasesRenewed (when the agent asked, with
// Register.renewal_acks, and the leader said it does, with
// Registered.renewal_acks). The agent cannot know when the leader
// received the message, only that it was after the agent sent it: so it
// counts each job's lease from the send time of the last acknowledged
// message that renewed it. Once lease_duration + takeover_grace has passed
// since, the lease has certainly run out (renewed at or after that send;
// a new leader gives the jobs it inherits one window of lease_duration +
// takeover_grace, so stopping after lease_duration alone would kill a job
// whose agent is still reconnecting after a silent leader death), and the
// agent cancels the job, which kills its statements. A newly assigned
// job counts from the last acknowledgement the session had before the
// assignment arrived (the leader arms a lease just before it sends the
// assignment, after it answered the messages before).
//
// Binlog stream jobs are left running: they are continuous and
// idempotent (a new attempt resumes from the repository), and stopping
// one during a controller outage would only widen the recovery point.

// noteSent returns the send hook that records when message seq left.
func (a *Agent) noteSent(s *session) func(seq uint64) {
	return func(seq uint64) {
		t := time.Now()
		a.mu.Lock()
		defer a.mu.Unlock()
		s.sentAt[seq] = t
		if s.lastRenewal.IsZero() {
			s.lastRenewal = t // the Register: answered by Registered
		}
		// Answers older than two leases could not keep a lease anyway;
		// a partition must not grow the map.
		for q, at := range s.sentAt {
			if a.leaseTTL > 0 && t.Sub(at) > 2*a.leaseTTL {
				delete(s.sentAt, q)
			}
		}
	}
}

// setLeaseTerms records the lease terms a Registered gave.
func (a *Agent) setLeaseTerms(s *session, r *v1.Registered) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.leaseTTL = r.GetLeaseDuration().AsDuration()
	a.leaseGrace = r.GetTakeoverGrace().AsDuration()
	a.renewalAcks = r.GetRenewalAcks() && a.leaseTTL > 0
}

// renewalAnchor is where a newly assigned job's lease counts from: the
// live session's last acknowledged renewal, else now. The caller holds
// a.mu.
func (a *Agent) renewalAnchor() time.Time {
	if a.sess != nil && !a.sess.lastRenewal.IsZero() {
		return a.sess.lastRenewal
	}
	return time.Now()
}

// leasesRenewed moves the renewal time of the jobs a LeasesRenewed names.
func (a *Agent) leasesRenewed(s *session, m *v1.LeasesRenewed) {
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := s.sentAt[m.GetSeq()]
	if !ok {
		return
	}
	delete(s.sentAt, m.GetSeq())
	if at.After(s.lastRenewal) {
		s.lastRenewal = at
	}
	for _, id := range m.GetJobIds() {
		if j := a.jobs[id]; j != nil && at.After(j.renewedAt) {
			j.renewedAt = at
		}
	}
}

// leaseWatch cancels, every tick, the jobs whose lease renewal is over a
// lease old, until ctx ends.
func (a *Agent) leaseWatch(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.expireLeases(time.Now())
	}
}

// expireLeases cancels the jobs whose lease has certainly run out at now.
func (a *Agent) expireLeases(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.renewalAcks {
		return
	}
	for _, j := range a.jobs {
		if j.result != nil || j.superseded || j.selfExpired || j.job.GetKind() == v1.JobKind_JOB_KIND_BINLOG_STREAM {
			continue
		}
		if since := now.Sub(j.renewedAt); since >= a.leaseTTL+a.leaseGrace {
			j.selfExpired = true
			a.log.Warn("no lease renewal from the controller for a lease duration and the takeover grace: the lease has run out there, stopping the job",
				"job", j.id, "lease", leaseString(j.lease), "since_renewal", since.Round(time.Millisecond), "lease_duration", a.leaseTTL, "takeover_grace", a.leaseGrace)
			j.cancel(fmt.Errorf("lease %s ran out: no renewal acknowledged by the controller for %s (lease duration %s + takeover grace %s); the agent stopped the job by itself",
				leaseString(j.lease), since.Round(time.Millisecond), a.leaseTTL, a.leaseGrace))
		}
	}
}

package fsm

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// DefaultMaxAttempts is the attempts a job gets when it names none: one
// retry after a lost lease.
const DefaultMaxAttempts = 2

// MaxAttempts returns the attempts job j is allowed.
func MaxAttempts(j *v1.Job) uint32 {
	if n := j.GetMaxAttempts(); n > 0 {
		return n
	}
	return DefaultMaxAttempts
}

// exclusive reports whether jobs of kind k need the instance to themselves:
// one backup or restore per instance at a time.
func exclusive(k v1.JobKind) bool {
	return k == v1.JobKind_JOB_KIND_BACKUP || k == v1.JobKind_JOB_KIND_RESTORE
}

// Continuous reports whether jobs of kind k run until cancelled: a binlog
// stream is never done, so every attempt that ends (lease expiry, an
// agent's result) sends it back to pending for another, whatever its
// max_attempts.
func Continuous(k v1.JobKind) bool { return k == v1.JobKind_JOB_KIND_BINLOG_STREAM }

// keptAttempts bounds the attempts a job keeps in its history: a
// continuous job may lose thousands over its life (an agent that restarts
// every day), and any job's max_attempts may be set high. The newest are
// kept; Job.attempt still counts them all.
const keptAttempts = 20

// applySubmitJob adds a pending job. It refuses an unknown instance, a
// restore of a backup that is not complete, and a second backup or restore
// of an instance that already has one active (naming that job).
func applySubmitJob(w *catalog.Write, c *v1.SubmitJob) (proto.Message, error) {
	j := c.GetJob()
	switch {
	case j.GetId() == "":
		return nil, catalog.Errorf(catalog.ErrInvalid, "SubmitJob without a job id")
	case j.GetKind() == v1.JobKind_JOB_KIND_UNSPECIFIED:
		return nil, catalog.Errorf(catalog.ErrInvalid, "job %q has no kind", j.GetId())
	case j.GetState() != v1.JobState_JOB_STATE_PENDING:
		return nil, catalog.Errorf(catalog.ErrInvalid, "job %q is submitted in state %s, not PENDING", j.GetId(), j.GetState())
	}
	if _, err := w.Job(j.GetId()); err == nil {
		return nil, catalog.Errorf(catalog.ErrAlreadyExists, "job %q already exists", j.GetId())
	}
	if _, err := w.Instance(j.GetInstance()); err != nil {
		return nil, err
	}
	if exclusive(j.GetKind()) {
		for _, o := range w.ActiveJobsOf(j.GetInstance()) {
			if exclusive(o.GetKind()) {
				return nil, catalog.Errorf(catalog.ErrConflict, "instance %q already has %s job %s (%s); one backup or restore per instance at a time",
					j.GetInstance(), kindName(o.GetKind()), o.GetId(), stateName(o.GetState()))
			}
		}
	}
	if j.GetKind() == v1.JobKind_JOB_KIND_BINLOG_STREAM {
		if err := checkStreamSubmit(w, j); err != nil {
			return nil, err
		}
	}
	if r := j.GetRestore(); r != nil {
		b, err := w.Backup(r.GetBackupId())
		if err != nil {
			return nil, err
		}
		if b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE {
			return nil, catalog.Errorf(catalog.ErrConflict, "backup %q is %s, not complete", b.GetId(), b.GetStatus())
		}
		if b.GetExpiredAt() != nil {
			return nil, catalog.Errorf(catalog.ErrConflict, "backup %q is marked expired (%s): its manifest is being deleted; restore another backup", b.GetId(), b.GetExpireReason())
		}
		for _, o := range b.GetCopies() {
			if o.GetRepositoryUri() == r.GetRepositoryUri() && o.GetExpiredAt() != nil {
				return nil, catalog.Errorf(catalog.ErrConflict, "the copy of backup %q in %s is being expired by job %s: restore from another repository", b.GetId(), o.GetRepositoryUri(), o.GetExpireJobId())
			}
		}
	}
	if cp := j.GetCopy(); cp != nil {
		b, err := w.Backup(cp.GetBackupId())
		if err != nil {
			return nil, err
		}
		if b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE || b.GetExpiredAt() != nil {
			return nil, catalog.Errorf(catalog.ErrConflict, "backup %q is %s%s: only a complete backup is copied", b.GetId(), b.GetStatus(),
				map[bool]string{true: " and marked expired"}[b.GetExpiredAt() != nil])
		}
		for _, o := range b.GetCopies() {
			if o.GetRepositoryUri() == cp.GetDestinationRepositoryUri() && o.GetExpiredAt() != nil {
				return nil, catalog.Errorf(catalog.ErrConflict, "the copy of backup %q in %s is being expired by job %s: copy it again after that job", b.GetId(), o.GetRepositoryUri(), o.GetExpireJobId())
			}
		}
	}
	if err := w.PutJob(j); err != nil {
		return nil, err
	}
	return j, nil
}

// checkStreamSubmit refuses a second binlog stream of an instance or of its
// `cluster` group (the stream follows the group's primary, so one covers
// them all), and opens the stream's record with the new job.
func checkStreamSubmit(w *catalog.Write, j *v1.Job) error {
	p := j.GetBinlogStream()
	if p == nil {
		return catalog.Errorf(catalog.ErrInvalid, "binlog stream job %q carries no binlog stream params", j.GetId())
	}
	in, err := w.Instance(j.GetInstance())
	if err != nil {
		return err
	}
	if o := w.ActiveStreamOf(in); o != nil {
		if o.GetInstance() == in.GetName() {
			return catalog.Errorf(catalog.ErrConflict, "instance %q already has binlog stream job %s (%s); one stream per instance",
				in.GetName(), o.GetId(), stateName(o.GetState()))
		}
		return catalog.Errorf(catalog.ErrConflict, "instance %q is in cluster %q, whose binlog stream job %s (%s) runs for instance %q; one stream per cluster group",
			in.GetName(), in.GetLabels()[catalog.ClusterLabel], o.GetId(), stateName(o.GetState()), o.GetInstance())
	}
	rec := &v1.BinlogStream{Instance: j.GetInstance()}
	if old, err := w.BinlogStream(j.GetInstance()); err == nil {
		rec = proto.CloneOf(old)
	}
	rec.JobId, rec.Lease, rec.Cluster, rec.RepositoryUri = j.GetId(), nil, p.GetCluster(), p.GetRepositoryUri()
	rec.LastError, rec.LastErrorAt, rec.Failures = "", nil, 0
	rec.UpdatedAt = j.GetCreatedAt()
	return w.PutBinlogStream(rec)
}

// applyAssignJob hands a pending job to an agent under a new lease whose
// index is this entry's: every node derives the same token, and a later
// assignment always has a larger one.
func applyAssignJob(w *catalog.Write, e entry, c *v1.AssignJob) (proto.Message, error) {
	old, err := w.Job(c.GetJobId())
	if err != nil {
		return nil, err
	}
	if old.GetState() != v1.JobState_JOB_STATE_PENDING {
		return nil, catalog.Errorf(catalog.ErrConflict, "job %s is %s, not pending", old.GetId(), stateName(old.GetState()))
	}
	if _, err := w.Agent(c.GetAgent()); err != nil {
		return nil, fmt.Errorf("assigning job %s: %w", old.GetId(), err)
	}
	in, err := w.Instance(old.GetInstance())
	if err != nil {
		return nil, fmt.Errorf("assigning job %s: %w", old.GetId(), err)
	}
	if in.GetAgent() != c.GetAgent() && !groupAgent(w, old, c.GetAgent()) {
		return nil, catalog.Errorf(catalog.ErrConflict, "job %s runs on instance %q of agent %q, not %q", old.GetId(), in.GetName(), in.GetAgent(), c.GetAgent())
	}
	j := proto.CloneOf(old)
	j.State = v1.JobState_JOB_STATE_ASSIGNED
	j.Attempt++
	// The term is the entry's too: it is the term of the leader that
	// proposed it, whatever the command says.
	j.Lease = &v1.LeaseToken{Term: e.Term, Index: e.Index, JobId: j.GetId()}
	j.LeaseDeadline = c.GetLeaseDeadline()
	j.Agent = c.GetAgent()
	j.AssignedAt = c.GetAssignedAt()
	j.UpdatedAt = c.GetAssignedAt()
	j.Progress = nil
	j.Result = nil
	if b := j.GetBackup(); b != nil {
		b.BackupId = catalog.AttemptBackupID(j.GetId(), j.GetAttempt())
	}
	if err := w.PutJob(j); err != nil {
		return nil, err
	}
	return j, nil
}

// groupAgent says whether agent serves a member of the `cluster` group of
// binlog stream job j (by the cluster label value the job recorded): a
// group's stream may run on any member's agent, which the leader uses when
// the agent of the job's instance is lost.
func groupAgent(r *catalog.Write, j *v1.Job, agent string) bool {
	c := j.GetBinlogStream().GetCluster()
	if j.GetKind() != v1.JobKind_JOB_KIND_BINLOG_STREAM || c == "" {
		return false
	}
	for _, m := range r.Instances() {
		if m.GetAgent() == agent && m.GetLabels()[catalog.ClusterLabel] == c {
			return true
		}
	}
	return false
}

// applyUpdateJobState applies an agent's report (under a lease) or a
// controller's decision (cancel, without a lease). A report under any lease
// but the job's current one is refused: that is the fence. The same final
// report twice changes nothing.
func applyUpdateJobState(w *catalog.Write, c *v1.UpdateJobState) (proto.Message, error) {
	old, err := w.Job(c.GetJobId())
	if err != nil {
		return nil, err
	}
	j := proto.CloneOf(old)
	to := c.GetState()
	if c.GetLease() != nil {
		if !catalog.SameLease(c.GetLease(), old.GetLease()) {
			return nil, catalog.Errorf(catalog.ErrStaleLease, "job %s: report under lease %s, but the job's current lease is %s (%s)",
				old.GetId(), catalog.LeaseString(c.GetLease()), catalog.LeaseString(old.GetLease()), stateName(old.GetState()))
		}
		if catalog.Terminal(old.GetState()) {
			if to == old.GetState() {
				return old, errUnchanged
			}
			return nil, catalog.Errorf(catalog.ErrConflict, "job %s already %s", old.GetId(), stateName(old.GetState()))
		}
		switch to {
		case v1.JobState_JOB_STATE_UNSPECIFIED, v1.JobState_JOB_STATE_RUNNING:
			// Started, or progress only: it is running from now on.
			j.State = v1.JobState_JOB_STATE_RUNNING
		case v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_FAILED:
			if Continuous(j.GetKind()) {
				// The attempt ended, the job did not: back to pending.
				why := c.GetResult().GetError()
				if why == "" {
					why = c.GetReason()
				}
				if why == "" {
					why = "the agent ended the attempt"
				}
				endAttempt(j, c.GetUpdatedAt(), why)
				j.State = v1.JobState_JOB_STATE_PENDING
				j.Agent = ""
				j.UpdatedAt = c.GetUpdatedAt()
				if err := w.PutJob(j); err != nil {
					return nil, err
				}
				return j, nil
			}
			j.State = to
			j.LeaseDeadline = nil
		default:
			return nil, catalog.Errorf(catalog.ErrInvalid, "an agent cannot move job %s to %s", old.GetId(), stateName(to))
		}
	} else {
		if !catalog.Active(old.GetState()) {
			return nil, catalog.Errorf(catalog.ErrConflict, "job %s is already %s", old.GetId(), stateName(old.GetState()))
		}
		if to != v1.JobState_JOB_STATE_CANCELLED && to != v1.JobState_JOB_STATE_FAILED {
			return nil, catalog.Errorf(catalog.ErrInvalid, "the controller can only cancel or fail job %s, not move it to %s", old.GetId(), stateName(to))
		}
		// The attempt loses its lease: whatever it reports later is stale.
		// Its agent may still be stopping it: the instance stays busy.
		if old.GetLease() != nil && old.GetAgent() != "" && old.GetState() != v1.JobState_JOB_STATE_PENDING {
			ttl := old.GetLeaseDeadline().AsTime().Sub(old.GetAssignedAt().AsTime())
			if old.GetLeaseDeadline() == nil || old.GetAssignedAt() == nil || ttl <= 0 {
				ttl = fallbackLease
			}
			markStopping(j, old, c.GetUpdatedAt().AsTime().Add(ttl+StopGrace))
		}
		endAttempt(j, c.GetUpdatedAt(), c.GetReason())
		j.State = to
	}
	if c.GetProgress() != nil {
		j.Progress = c.GetProgress()
	}
	if catalog.Terminal(j.GetState()) {
		j.Result = c.GetResult()
		j.Reason = c.GetReason()
		if j.Reason == "" {
			j.Reason = c.GetResult().GetError()
		}
	}
	j.UpdatedAt = c.GetUpdatedAt()
	if b := c.GetBackup(); b != nil {
		if err := checkJobBackup(j, b); err != nil {
			return nil, err
		}
		if err := w.PutBackup(b); err != nil {
			return nil, err
		}
	}
	if err := w.PutJob(j); err != nil {
		return nil, err
	}
	return j, nil
}

// checkJobBackup: the backup a job records is the one its current attempt
// was told to write, complete, and fenced by its lease.
func checkJobBackup(j *v1.Job, b *v1.Backup) error {
	if err := checkBackup(b); err != nil {
		return err
	}
	want := j.GetBackup().GetBackupId()
	switch {
	case j.GetState() != v1.JobState_JOB_STATE_SUCCEEDED:
		return catalog.Errorf(catalog.ErrInvalid, "job %s records backup %s without succeeding", j.GetId(), b.GetId())
	case b.GetId() != want:
		return catalog.Errorf(catalog.ErrInvalid, "job %s attempt %d writes backup %q, not %q", j.GetId(), j.GetAttempt(), want, b.GetId())
	case b.GetInstance() != j.GetInstance() || b.GetJobId() != j.GetId():
		return catalog.Errorf(catalog.ErrInvalid, "backup %s names instance %q and job %q, not %q and %q", b.GetId(), b.GetInstance(), b.GetJobId(), j.GetInstance(), j.GetId())
	case !catalog.SameLease(b.GetFence(), j.GetLease()):
		return catalog.Errorf(catalog.ErrStaleLease, "backup %s is fenced by lease %s, not the job's %s", b.GetId(), catalog.LeaseString(b.GetFence()), catalog.LeaseString(j.GetLease()))
	}
	return nil
}

// applyExpireLease ends the current attempt of a job whose lease ran out:
// back to pending for another attempt when the leader asked for a retry and
// attempts remain, else failed. An expiry of a lease the job no longer holds
// is refused as stale (the job moved on before the entry was applied).
func applyExpireLease(w *catalog.Write, c *v1.ExpireLease) (proto.Message, error) {
	old, err := w.Job(c.GetJobId())
	if err != nil {
		return nil, err
	}
	if !catalog.SameLease(c.GetLease(), old.GetLease()) || !catalog.Active(old.GetState()) {
		return nil, catalog.Errorf(catalog.ErrStaleLease, "job %s: lease %s is not current (the job is %s under lease %s)",
			old.GetId(), catalog.LeaseString(c.GetLease()), stateName(old.GetState()), catalog.LeaseString(old.GetLease()))
	}
	j := proto.CloneOf(old)
	reason := fmt.Sprintf("lease expired: agent %s stopped heartbeating", old.GetAgent())
	if old.GetAgent() != "" {
		// The agent stops the attempt by itself when the lease runs out
		// on its side, at most agent_grace after here; its kills get
		// StopGrace.
		markStopping(j, old, c.GetExpiredAt().AsTime().Add(c.GetAgentGrace().AsDuration()+StopGrace))
	}
	endAttempt(j, c.GetExpiredAt(), reason)
	j.UpdatedAt = c.GetExpiredAt()
	if c.GetRetry() && (Continuous(j.GetKind()) || j.GetAttempt() < MaxAttempts(j)) {
		j.State = v1.JobState_JOB_STATE_PENDING
		j.Agent = ""
	} else {
		j.State = v1.JobState_JOB_STATE_FAILED
		j.Reason = fmt.Sprintf("%s (attempt %d of %d)", reason, j.GetAttempt(), MaxAttempts(j))
		j.Result = &v1.JobResult{Error: j.Reason}
	}
	if err := w.PutJob(j); err != nil {
		return nil, err
	}
	return j, nil
}

// StopGrace is how long an agent may take to stop an attempt once it knows
// to (its cancellation arrived, or its lease ran out on its side): the
// engines' kills of their statements are bounded by 30 s
// (mysqlx.KillTimeout).
const StopGrace = 30 * time.Second

// fallbackLease stands for the lease of an attempt whose record has no
// deadline (written by an older leader).
const fallbackLease = time.Minute

// markStopping records that old's current attempt may still be stopping on
// its agent until until, for a job that needs the instance to itself.
func markStopping(j, old *v1.Job, until time.Time) {
	if !exclusive(old.GetKind()) {
		return
	}
	j.StoppingLease, j.StoppingAgent, j.StoppingUntil = old.GetLease(), old.GetAgent(), timestamppb.New(until)
}

// applyAttemptStopped clears a job's stopping attempt: the leader learnt
// it is over. Another lease than the stopping one changes nothing.
func applyAttemptStopped(w *catalog.Write, c *v1.AttemptStopped) (proto.Message, error) {
	old, err := w.Job(c.GetJobId())
	if err != nil {
		return nil, err
	}
	if !catalog.SameLease(c.GetLease(), old.GetStoppingLease()) {
		return old, errUnchanged
	}
	j := proto.CloneOf(old)
	j.StoppingLease, j.StoppingAgent, j.StoppingUntil = nil, "", nil
	if err := w.PutJob(j); err != nil {
		return nil, err
	}
	return j, nil
}

// endAttempt moves the current attempt, if any, into the job's history and
// takes its lease away.
func endAttempt(j *v1.Job, at *timestamppb.Timestamp, why string) {
	if j.GetLease() != nil {
		j.PreviousAttempts = append(j.PreviousAttempts, &v1.JobAttempt{
			Attempt: j.GetAttempt(), Agent: j.GetAgent(), Lease: j.GetLease(),
			BackupId: j.GetBackup().GetBackupId(), AssignedAt: j.GetAssignedAt(),
			EndedAt: at, Error: why,
		})
		if len(j.PreviousAttempts) > keptAttempts {
			j.PreviousAttempts = j.PreviousAttempts[len(j.PreviousAttempts)-keptAttempts:]
		}
	}
	j.Lease, j.LeaseDeadline, j.AssignedAt, j.Progress = nil, nil, nil, nil
	if b := j.GetBackup(); b != nil {
		b.BackupId = ""
	}
}

func stateName(s v1.JobState) string { return catalog.StateName(s) }
func kindName(k v1.JobKind) string   { return catalog.KindName(k) }

package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/agent/runner"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// job is one assigned attempt. It stays in Agent.jobs from assignment until
// the controller acknowledges its result, so it is listed (with its lease)
// in heartbeats and in the Register of a new session all that time.
type job struct {
	id      string
	job     *v1.Job
	lease   *v1.LeaseToken
	cancel  context.CancelCauseFunc
	done    chan struct{} // closed when the attempt has ended
	started time.Time

	progress     atomic.Pointer[v1.JobProgress]
	progressKick chan struct{}

	// A binlog stream's state for heartbeats; its messages are replaced,
	// never changed, so a copy of the struct may be sent.
	streamMu sync.Mutex
	stream   v1.StreamReport

	// Guarded by Agent.mu: when the agent sent the last Heartbeat (or
	// Register) whose lease renewal for this job the controller
	// acknowledged (lease.go), and whether the job was stopped because
	// that is over a lease ago.
	renewedAt   time.Time
	selfExpired bool

	// waitFor are the instance's exclusive jobs that had not ended when
	// this one was assigned: it starts once every one of them has.
	waitFor []*job

	// Guarded by Agent.mu.
	result     *v1.JobResultReport // set once the attempt ended
	superseded bool                // a newer lease replaced it: never report
}

// exclusive reports whether jobs of kind k need their instance to
// themselves on the agent: backups and restores, the kinds the
// controller allows one of per instance. A binlog stream runs beside
// them (PROTOCOL.md), and so do copy and expire jobs, which touch only
// repositories, never the server.
func exclusive(k v1.JobKind) bool {
	return k == v1.JobKind_JOB_KIND_BACKUP || k == v1.JobKind_JOB_KIND_RESTORE
}

func (j *job) running() *v1.RunningJob {
	return &v1.RunningJob{JobId: j.id, Lease: j.lease, Stream: j.streamReport()}
}

func leaseString(l *v1.LeaseToken) string {
	return fmt.Sprintf("%d/%d", l.GetTerm(), l.GetIndex())
}

// runningJobs lists the leases the agent holds, for Register and Heartbeat.
func (a *Agent) runningJobs() []*v1.RunningJob {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*v1.RunningJob
	for _, j := range a.jobs {
		if !j.superseded {
			out = append(out, j.running())
		}
	}
	return out
}

func (a *Agent) runningCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.jobs)
}

// assign starts an assigned job. It runs on the session's receive
// goroutine and returns at once.
func (a *Agent) assign(m *v1.JobAssignment) {
	jb := m.GetJob()
	lease := m.GetLease()
	if lease == nil {
		lease = jb.GetLease()
	}
	if jb.GetId() == "" || lease == nil {
		a.log.Error("controller sent a job assignment without a job id or lease; ignored", "job", jb.GetId())
		return
	}
	// Every line of the attempt says which job, instance and attempt.
	log := a.log.With("job", jb.GetId(), "instance", jb.GetInstance(), "attempt", jb.GetAttempt(), "lease", leaseString(lease))
	ctx, cancel := context.WithCancelCause(a.runCtx)
	j := &job{id: jb.GetId(), job: jb, lease: lease, cancel: cancel, done: make(chan struct{}),
		started: time.Now(), progressKick: make(chan struct{}, 1)}

	a.mu.Lock()
	old := a.jobs[j.id]
	switch {
	case old != nil && proto.Equal(old.lease, lease):
		// The same assignment again (e.g. re-sent after a reconnect): the
		// attempt is already running, or its result is waiting to be sent.
		a.mu.Unlock()
		cancel(nil)
		log.Info("job assignment repeated; the attempt is already under way")
		a.kick()
		return
	case old != nil && runner.Older(lease, old.lease):
		a.mu.Unlock()
		cancel(nil)
		log.Warn("ignoring an assignment older than the one the agent holds", "held", leaseString(old.lease))
		return
	case old != nil:
		// A newer lease for a job the agent still runs: the old attempt can
		// only produce a stale result, so it stops and is never reported.
		old.superseded = true
		old.cancel(fmt.Errorf("superseded by lease %s", leaseString(lease)))
		log.Warn("job reassigned under a newer lease; stopping the old attempt", "old_lease", leaseString(old.lease))
	}
	a.jobs[j.id] = j
	j.renewedAt = a.renewalAnchor()
	if exclusive(jb.GetKind()) {
		// One job at a time per instance: a job the controller cancelled
		// (or whose lease ran out) may still be stopping here, its
		// statements being killed, when the controller hands out the
		// instance's next one. The new one waits for it.
		inst := jb.GetInstance()
		j.waitFor = slices.Clone(a.onInstance[inst])
		a.onInstance[inst] = append(a.onInstance[inst], j)
	}
	shutting := a.shuttingDown
	a.mu.Unlock()
	if shutting {
		cancel(ErrShutdown)
	}
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		if old != nil {
			<-old.done
			// Its result will never be sent; a manifest it stored would
			// claim a backup the catalog never accepts.
			if rep := old.result; rep.GetOk() && rep.GetBackupId() != "" {
				a.discardManifest(old, rep, log.With("old_lease", leaseString(old.lease)))
			}
		}
		if jb.GetKind() == v1.JobKind_JOB_KIND_BINLOG_STREAM {
			a.runStream(ctx, j, log)
			return
		}
		a.runJob(ctx, j, log)
	}()
}

// leaveInstance takes an ended job off its instance's list.
func (a *Agent) leaveInstance(j *job) {
	a.mu.Lock()
	defer a.mu.Unlock()
	inst := j.job.GetInstance()
	a.onInstance[inst] = slices.DeleteFunc(a.onInstance[inst], func(o *job) bool { return o == j })
	if len(a.onInstance[inst]) == 0 {
		delete(a.onInstance, inst)
	}
}

// awaitInstance waits until every job j waits for has ended, reporting
// which one it waits for in j's progress. It returns ctx's cause if j is
// cancelled first: j then never started, so it may end at once (a job
// queued behind j waits for the same ones itself).
func (a *Agent) awaitInstance(ctx context.Context, j *job, progress func(*v1.JobProgress), log *slog.Logger) error {
	for _, o := range j.waitFor {
		select {
		case <-o.done:
			continue
		default:
		}
		log.Info("waiting for the instance's previous job to stop", "previous_job", o.id, "previous_lease", leaseString(o.lease))
		progress(&v1.JobProgress{Phase: fmt.Sprintf("waiting for job %s to stop on instance %s", o.id, j.job.GetInstance()),
			UpdatedAt: timestamppb.Now()})
		select {
		case <-o.done:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// runJob runs one attempt and queues its result.
func (a *Agent) runJob(ctx context.Context, j *job, log *slog.Logger) {
	defer close(j.done)
	defer a.leaveInstance(j)
	defer j.cancel(nil)
	rep := &v1.JobResultReport{JobId: j.id, Lease: j.lease}
	inst := j.job.GetInstance()
	dsn, ok := a.dsns[inst]
	var res *runner.Result
	var err error
	progress := func(p *v1.JobProgress) {
		j.progress.Store(p)
		select {
		case j.progressKick <- struct{}{}:
		default:
		}
	}
	switch {
	case !ok:
		err = fmt.Errorf("instance %q is not served by agent %s (it serves: %s)", inst, a.cfg.Name, a.instanceNames())
	case ctx.Err() != nil:
		err = context.Cause(ctx)
	default:
		stopProgress := a.reportProgress(ctx, j)
		if err = a.awaitInstance(ctx, j, progress, log); err != nil {
			stopProgress()
			break
		}
		log.Info("job starting", "kind", j.job.GetKind().String())
		if rp := j.job.GetRestore(); rp != nil && rp.GetStopAt() != nil {
			res, err = a.runPITR(ctx, j, dsn, progress, log)
		} else {
			res, err = runner.Run(ctx, runner.Params{
				Job: j.job, Lease: j.lease, DSN: dsn, OpenRepo: a.openRepo, Parallel: a.cfg.Parallel,
				Progress: progress, Engines: a.cfg.Engines,
			})
		}
		stopProgress()
	}
	if err != nil && ctx.Err() != nil {
		// The engine's error says "context canceled"; the cause says why
		// (and a failed kill, what may still run on the server).
		if errors.Is(err, mysqlx.ErrStatementsLeft) {
			err = fmt.Errorf("%w; %w", context.Cause(ctx), err)
		} else {
			err = context.Cause(ctx)
		}
	}
	a.recordJob(j, res, err, ctx.Err() != nil)
	if err != nil {
		rep.Error = err.Error()
		log.Warn("job failed", "err", err, "took", time.Since(j.started).Round(time.Millisecond))
	} else {
		rep.Ok = true
		rep.BackupId, rep.ManifestKey = res.BackupID, res.ManifestKey
		// Where the backup lives, so the catalog can send a restore there.
		rep.RepositoryUri = a.reportedRepo(j.job.GetBackup().GetRepositoryUri())
		if res.Manifest != nil {
			// The controller records the backup from the manifest; the
			// stream list is for restores and would bloat the message.
			m := proto.CloneOf(res.Manifest)
			m.Streams = nil
			rep.Manifest = m
		}
		for _, w := range res.Warnings {
			log.Warn("job warning", "warning", w)
		}
		log.Info("job succeeded", "backup", res.BackupID, "manifest", res.ManifestKey,
			"tables", res.Tables, "rows", res.Rows, "took", time.Since(j.started).Round(time.Millisecond))
	}
	a.mu.Lock()
	j.result = rep // a superseded attempt's is read by its successor, never sent
	a.mu.Unlock()
	a.kick()
}

// reportProgress sends j's latest progress at most once per
// ProgressInterval, the first one at once. Progress is best effort: with no
// live session it is dropped. The returned func stops it.
func (a *Agent) reportProgress(ctx context.Context, j *job) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var last *v1.JobProgress
		for {
			select {
			case <-ctx.Done():
				return
			case <-j.progressKick:
			}
			if p := j.progress.Load(); p != last {
				last = p
				a.sendProgress(j, p)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(a.cfg.ProgressInterval):
			}
		}
	}()
	return func() { cancel(); <-done }
}

// sendProgress sends a progress report on the live session, if any.
func (a *Agent) sendProgress(j *job, p *v1.JobProgress) {
	a.mu.Lock()
	s := a.sess
	a.mu.Unlock()
	if s == nil {
		return
	}
	m := &v1.AgentMessage{Msg: &v1.AgentMessage_JobProgress{JobProgress: &v1.JobProgressReport{JobId: j.id, Lease: j.lease, Progress: p}}}
	// A send error means the stream broke; the session ends on its own.
	_, _ = s.send(m, func(seq uint64) {
		a.mu.Lock()
		delete(s.progressSeq, s.progressOf[j])
		s.progressSeq[seq], s.progressOf[j] = j, seq
		a.mu.Unlock()
	})
}

// kick wakes the session to send the results that are ready.
func (a *Agent) kick() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// cancelJob stops a job at the controller's request; its result (failed,
// with the reason) is still reported.
func (a *Agent) cancelJob(m *v1.JobCancellation) {
	a.mu.Lock()
	j := a.jobs[m.GetJobId()]
	a.mu.Unlock()
	log := a.log.With("job", m.GetJobId())
	switch {
	case j == nil:
		log.Info("cancellation of a job the agent does not run; ignored")
	case m.GetLease() != nil && !proto.Equal(m.GetLease(), j.lease):
		log.Info("cancellation for another attempt of the job; ignored", "lease", leaseString(m.GetLease()), "held", leaseString(j.lease))
	default:
		reason := m.GetReason()
		if reason == "" {
			reason = "no reason given"
		}
		log.Info("job cancelled by the controller", "reason", reason)
		j.cancel(fmt.Errorf("cancelled by the controller: %s", reason))
	}
}

// stopJobs cancels every running job with cause and waits up to d for them
// to end.
func (a *Agent) stopJobs(cause error, d time.Duration) {
	a.mu.Lock()
	var running []*job
	for _, j := range a.jobs {
		if j.result == nil {
			running = append(running, j)
			j.cancel(cause)
		}
	}
	a.mu.Unlock()
	deadline := time.After(d)
	for _, j := range running {
		select {
		case <-j.done:
		case <-deadline:
			a.log.Error("job did not stop in time", "job", j.id, "timeout", d)
			return
		}
	}
}

// resultAcked forgets a job whose result the controller recorded.
func (a *Agent) resultAcked(j *job) {
	a.mu.Lock()
	if a.jobs[j.id] == j {
		delete(a.jobs, j.id)
	}
	a.mu.Unlock()
	a.log.Info("controller recorded the job's result", "job", j.id, "lease", leaseString(j.lease))
}

// resultRefused handles an Error answering a result.
func (a *Agent) resultRefused(j *job, e *v1.Error) {
	log := a.log.With("job", j.id, "lease", leaseString(j.lease), "code", e.GetCode(), "message", e.GetMessage())
	if retryable(e.GetCode()) {
		// Not a verdict on the result: send it again with the next
		// heartbeat (the session marks it unsent).
		log.Warn("controller could not record the job's result now; will resend")
		return
	}
	a.mu.Lock()
	if a.jobs[j.id] == j {
		delete(a.jobs, j.id)
	}
	rep := j.result
	a.mu.Unlock()
	if e.GetCode() != codeFailedPrecondition {
		log.Error("controller refused the job's result")
		return
	}
	log.Warn("controller refused the job's result as stale: the attempt's lease is no longer the job's")
	if !rep.GetOk() || rep.GetBackupId() == "" {
		return
	}
	a.discardManifest(j, rep, log)
}

// discardManifest deletes the manifest a refused or superseded attempt
// stored, in the background. Such a manifest would claim a complete backup
// the catalog never accepted: restores, retention and `tidemark backups`
// listing the repository would see a backup the controller does not know
// of, and nothing would ever expire it. Only a manifest carrying this
// attempt's lease is deleted, never another attempt's.
func (a *Agent) discardManifest(j *job, rep *v1.JobResultReport, log *slog.Logger) {
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		ctx, cancel := context.WithTimeout(a.runCtx, time.Minute)
		defer cancel()
		id := rep.GetBackupId()
		repo, closeRepo, err := a.openRepo(ctx, j.job.GetBackup().GetRepositoryUri())
		if err != nil {
			log.Error("cannot open the repository to delete the refused attempt's manifest", "backup", id, "err", err)
			return
		}
		defer closeRepo()
		deleted, err := repo.DiscardManifest(ctx, id, j.lease)
		switch {
		case err != nil:
			log.Error("deleting the refused attempt's manifest", "backup", id, "err", err)
		case deleted:
			log.Warn("deleted the refused attempt's manifest; its chunks go at the next gc", "backup", id, "manifest", rep.GetManifestKey())
		default:
			log.Info("the refused attempt's manifest is gone or belongs to another attempt; left alone", "backup", id)
		}
	}()
}

// gRPC codes (google.rpc.Code) the agent tells apart in Error messages.
const (
	codeDeadlineExceeded   = 4
	codeAlreadyExists      = 6
	codePermissionDenied   = 7
	codeResourceExhausted  = 8
	codeFailedPrecondition = 9
	codeAborted            = 10
	codeUnavailable        = 14
	codeUnauthenticated    = 16
	codeInvalidArgument    = 3
)

func retryable(code int32) bool {
	switch code {
	case codeUnavailable, codeAborted, codeResourceExhausted, codeDeadlineExceeded:
		return true
	}
	return false
}

package controller

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/fsm"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// fsmLog applies commands to an FSM as Raft would (consecutive indexes).
type fsmLog struct {
	t     *testing.T
	f     *fsm.FSM
	index uint64
}

func (l *fsmLog) apply(c *v1.Command) (proto.Message, error) {
	l.t.Helper()
	b, err := proto.Marshal(c)
	if err != nil {
		l.t.Fatal(err)
	}
	l.index++
	r := l.f.Apply(&raft.Log{Index: l.index, Term: 3, Type: raft.LogCommand, Data: b}).(*fsm.Response)
	return r.Value, r.Err
}

func (l *fsmLog) ok(c *v1.Command) proto.Message {
	l.t.Helper()
	v, err := l.apply(c)
	if err != nil {
		l.t.Fatalf("apply %v: %v", c, err)
	}
	return v
}

func (l *fsmLog) job(id string) *v1.Job {
	l.t.Helper()
	j, err := l.f.Store().Read().Job(id)
	if err != nil {
		l.t.Fatal(err)
	}
	return j
}

// TestReconcileSweep drives the catalog through the interleavings that
// leave orphan manifests (a lease lost after the manifest was stored, then
// a second attempt that succeeds; a job cancelled; a job failed by its
// agent) and checks the sweep's jobs: the superseded attempts with their
// leases, never a succeeded job's backup, never a running job, nothing
// within the grace, one job per (instance, repository), nothing named
// twice while a reconcile job holds it, and nothing again once swept.
func TestReconcileSweep(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }
	l := &fsmLog{t: t, f: fsm.New()}
	l.ok(&v1.Command{Cmd: &v1.Command_RegisterAgent{RegisterAgent: &v1.RegisterAgent{
		Agent: &v1.Agent{Id: "id-a", Name: "a", RegisteredAt: at(0)}, RegisteredAt: at(0),
		Instances: []*v1.Instance{{Name: "db1", Agent: "a", UpdatedAt: at(0)}, {Name: "db2", Agent: "a", UpdatedAt: at(0)}}}}})
	submit := func(id, instance, repo string) {
		l.ok(&v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: &v1.Job{
			Id: id, Kind: v1.JobKind_JOB_KIND_BACKUP, Instance: instance, State: v1.JobState_JOB_STATE_PENDING, MaxAttempts: 3,
			CreatedAt: at(0), UpdatedAt: at(0), Params: &v1.Job_Backup{Backup: &v1.BackupParams{Engine: "logical", RepositoryUri: repo}}}}}})
	}
	assign := func(id string, d time.Duration) *v1.Job {
		return l.ok(&v1.Command{Cmd: &v1.Command_AssignJob{AssignJob: &v1.AssignJob{JobId: id, Agent: "a", AssignedAt: at(d), LeaseDeadline: at(d + time.Minute)}}}).(*v1.Job)
	}
	loseLease := func(j *v1.Job, d time.Duration) {
		l.ok(&v1.Command{Cmd: &v1.Command_ExpireLease{ExpireLease: &v1.ExpireLease{JobId: j.GetId(), Lease: j.GetLease(), ExpiredAt: at(d), Retry: true}}})
	}
	succeed := func(j *v1.Job, d time.Duration) {
		bid := j.GetBackup().GetBackupId()
		l.ok(&v1.Command{Cmd: &v1.Command_UpdateJobState{UpdateJobState: &v1.UpdateJobState{
			JobId: j.GetId(), Lease: j.GetLease(), State: v1.JobState_JOB_STATE_SUCCEEDED, UpdatedAt: at(d),
			Result: &v1.JobResult{BackupId: bid, ManifestKey: "manifests/" + bid},
			Backup: &v1.Backup{Id: bid, Instance: j.GetInstance(), Engine: "logical", Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE,
				ManifestKey: "manifests/" + bid, JobId: j.GetId(), Fence: j.GetLease(), StartedAt: at(d - time.Second), FinishedAt: at(d)}}}})
	}
	// j1: a1 lost its lease (the agent died after its manifest PUT), a2
	// succeeded.
	submit("j1", "db1", "")
	a1 := assign("j1", time.Minute)
	loseLease(a1, 2*time.Minute)
	succeed(assign("j1", 3*time.Minute), 4*time.Minute)
	// j2: one attempt, succeeded: nothing to sweep.
	submit("j2", "db2", "")
	succeed(assign("j2", time.Minute), 2*time.Minute)
	// j3 (another repository): a1 lost its lease, a2 cancelled.
	submit("j3", "db2", "s3://other/x")
	loseLease(assign("j3", 5*time.Minute), 6*time.Minute)
	assign("j3", 7*time.Minute)
	l.ok(&v1.Command{Cmd: &v1.Command_UpdateJobState{UpdateJobState: &v1.UpdateJobState{JobId: "j3", State: v1.JobState_JOB_STATE_CANCELLED, UpdatedAt: at(8 * time.Minute), Reason: "cancelled by test"}}})
	// j4 (db2, same repository as j2): a1 lost its lease, a2 runs: not
	// swept until it ends.
	submit("j4", "db2", "")
	loseLease(assign("j4", 5*time.Minute), 6*time.Minute)
	assign("j4", 7*time.Minute)

	r := l.f.Store().Read()
	if got := reconcileJobs(r, t0.Add(20*time.Minute), 15*time.Minute, 2); len(got) != 1 || len(got[0].GetReconcile().GetJobIds()) != 1 {
		t.Fatalf("20 minutes in, grace 15m: %v; want j1 alone (j3 ended 12 minutes ago)", got)
	}
	got := reconcileJobs(r, t0.Add(time.Hour), 15*time.Minute, 2)
	if len(got) != 2 {
		t.Fatalf("%d reconcile jobs, want one per (instance, repository) with work: %v", len(got), got)
	}
	describe := func(j *v1.Job) string {
		rp := j.GetReconcile()
		var ts []string
		for _, tg := range rp.GetTargets() {
			ts = append(ts, tg.GetBackupId()+"@"+catalog.LeaseString(tg.GetFence()))
		}
		return j.GetInstance() + " " + rp.GetRepositoryUri() + " jobs=" + strings.Join(rp.GetJobIds(), ",") + " targets=" + strings.Join(ts, ",")
	}
	j3 := l.job("j3")
	want := []string{
		"db1  jobs=j1 targets=j1-a1@" + catalog.LeaseString(a1.GetLease()),
		"db2 s3://other/x jobs=j3 targets=j3-a1@" + catalog.LeaseString(j3.GetPreviousAttempts()[0].GetLease()) + ",j3-a2@" + catalog.LeaseString(j3.GetPreviousAttempts()[1].GetLease()),
	}
	for i, j := range got {
		if d := describe(j); d != want[i] {
			t.Errorf("reconcile job %d: %s\nwant %s", i, d, want[i])
		}
		if j.GetKind() != v1.JobKind_JOB_KIND_RECONCILE || j.GetState() != v1.JobState_JOB_STATE_PENDING || j.GetMaxAttempts() != 2 {
			t.Errorf("job %v", j)
		}
	}
	// Submitted: while the reconcile job is active its jobs are not named
	// again.
	rj := l.ok(&v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: got[0]}}}).(*v1.Job)
	if again := reconcileJobs(l.f.Store().Read(), t0.Add(time.Hour), 15*time.Minute, 2); len(again) != 1 || again[0].GetInstance() != "db2" {
		t.Fatalf("with j1's reconcile job pending: %v", again)
	}
	// It succeeds: j1 is swept and never named again.
	rj = assignAs(l, rj.GetId(), at(61*time.Minute))
	if cmd := jobOutcome(rj, at(62*time.Minute)); cmd == nil || cmd.GetFinishReconcile() == nil {
		t.Fatalf("outcome of a reconcile job: %v", cmd)
	} else {
		l.ok(cmd)
		if _, err := l.apply(cmd); err != nil {
			t.Errorf("FinishReconcile again: %v", err)
		}
	}
	if j1 := l.job("j1"); j1.GetOrphansSweptBy() != rj.GetId() || !j1.GetOrphansSweptAt().AsTime().Equal(t0.Add(62*time.Minute)) {
		t.Errorf("j1 after the sweep: swept by %q at %v", j1.GetOrphansSweptBy(), j1.GetOrphansSweptAt())
	}
	l.ok(&v1.Command{Cmd: &v1.Command_UpdateJobState{UpdateJobState: &v1.UpdateJobState{JobId: rj.GetId(), Lease: rj.GetLease(), State: v1.JobState_JOB_STATE_SUCCEEDED, UpdatedAt: at(62 * time.Minute)}}})
	again := reconcileJobs(l.f.Store().Read(), t0.Add(2*time.Hour), 15*time.Minute, 2)
	if len(again) != 1 || slices.Contains(again[0].GetReconcile().GetJobIds(), "j1") {
		t.Fatalf("after j1 was swept: %v", again)
	}
	// The reconcile job of j3 fails (say, an agent too old for the kind):
	// j3 waits reconcileRetryAfter before a pass names it again.
	rj3 := l.ok(&v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: again[0]}}}).(*v1.Job)
	rj3 = assignAs(l, rj3.GetId(), at(2*time.Hour))
	l.ok(&v1.Command{Cmd: &v1.Command_UpdateJobState{UpdateJobState: &v1.UpdateJobState{JobId: rj3.GetId(), Lease: rj3.GetLease(),
		State: v1.JobState_JOB_STATE_FAILED, UpdatedAt: at(2 * time.Hour), Result: &v1.JobResult{Error: "kind reconcile is not supported by this agent"}}}})
	if soon := reconcileJobs(l.f.Store().Read(), t0.Add(2*time.Hour+30*time.Minute), 15*time.Minute, 2); len(soon) != 0 {
		t.Errorf("30 minutes after a failed reconcile job: %v", soon)
	}
	if later := reconcileJobs(l.f.Store().Read(), t0.Add(3*time.Hour+time.Minute), 15*time.Minute, 2); len(later) != 1 || later[0].GetReconcile().GetJobIds()[0] != "j3" {
		t.Errorf("an hour after a failed reconcile job: %v", later)
	}
	// A FinishReconcile naming a job its reconcile job was not given is
	// refused.
	if _, err := l.apply(&v1.Command{Cmd: &v1.Command_FinishReconcile{FinishReconcile: &v1.FinishReconcile{JobId: rj.GetId(), SweptJobIds: []string{"j4"}}}}); err == nil ||
		!strings.Contains(err.Error(), "was not given job j4") {
		t.Errorf("FinishReconcile of a job not given: %v", err)
	}
	if _, err := l.apply(&v1.Command{Cmd: &v1.Command_FinishReconcile{FinishReconcile: &v1.FinishReconcile{JobId: "j2", SweptJobIds: []string{"j1"}}}}); err == nil ||
		!strings.Contains(err.Error(), "not a reconcile job") {
		t.Errorf("FinishReconcile under a backup job: %v", err)
	}
}

func assignAs(l *fsmLog, id string, at *timestamppb.Timestamp) *v1.Job {
	return l.ok(&v1.Command{Cmd: &v1.Command_AssignJob{AssignJob: &v1.AssignJob{JobId: id, Agent: "a", AssignedAt: at,
		LeaseDeadline: timestamppb.New(at.AsTime().Add(time.Minute))}}}).(*v1.Job)
}

// BenchmarkReconcileJobs: one sweep pass over a catalog of 100,000
// finished backup jobs, one in ten with a lost first attempt, half of
// those swept already.
func BenchmarkReconcileJobs(b *testing.B) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	s := catalog.New()
	w := s.Write()
	for i := range 4 {
		if err := w.PutInstance(&v1.Instance{Name: fmt.Sprintf("db%d", i), Agent: "a"}); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 100000 {
		id := fmt.Sprintf("j%06d", i)
		j := &v1.Job{Id: id, Kind: v1.JobKind_JOB_KIND_BACKUP, Instance: fmt.Sprintf("db%d", i%4), State: v1.JobState_JOB_STATE_SUCCEEDED,
			Attempt: 1, Lease: &v1.LeaseToken{JobId: id, Term: 1, Index: uint64(2 * i)}, CreatedAt: timestamppb.New(t0), UpdatedAt: timestamppb.New(t0),
			Params: &v1.Job_Backup{Backup: &v1.BackupParams{BackupId: id + "-a1"}}, Result: &v1.JobResult{BackupId: id + "-a1"}}
		if i%10 == 0 {
			j.Attempt, j.GetBackup().BackupId, j.Result.BackupId = 2, id+"-a2", id+"-a2"
			j.PreviousAttempts = []*v1.JobAttempt{{Attempt: 1, Lease: &v1.LeaseToken{JobId: id, Term: 1, Index: uint64(2*i + 1)}, BackupId: id + "-a1", EndedAt: timestamppb.New(t0)}}
			if i%20 == 0 {
				j.OrphansSweptAt = timestamppb.New(t0)
			}
		}
		if err := w.PutJob(j); err != nil {
			b.Fatal(err)
		}
	}
	w.Commit()
	r := s.Read()
	b.ResetTimer()
	for range b.N {
		js := reconcileJobs(r, t0.Add(time.Hour), 15*time.Minute, 2)
		// The 5,000 unswept jobs all run on db2 (i%10 == 10 mod 20): one
		// reconcile job, capped at maxReconcileTargets.
		if len(js) != 1 || len(js[0].GetReconcile().GetTargets()) != maxReconcileTargets {
			b.Fatalf("%d reconcile jobs", len(js))
		}
	}
}

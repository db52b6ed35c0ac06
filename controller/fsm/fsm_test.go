package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }

// node applies commands like Raft would: consecutive indexes, one term
// that the test may raise.
type node struct {
	t     *testing.T
	fsm   *FSM
	index uint64
	term  uint64
}

func newNode(t *testing.T) *node { return &node{t: t, fsm: New(), term: 1} }

func (n *node) apply(c *v1.Command) *Response {
	n.t.Helper()
	b, err := Encode(c)
	if err != nil {
		n.t.Fatal(err)
	}
	n.index++
	return n.fsm.Apply(&raft.Log{Index: n.index, Term: n.term, Type: raft.LogCommand, Data: b}).(*Response)
}

func (n *node) ok(c *v1.Command) proto.Message {
	n.t.Helper()
	r := n.apply(c)
	if r.Err != nil {
		n.t.Fatalf("apply %v: %v", c, r.Err)
	}
	return r.Value
}

func (n *node) fails(c *v1.Command, want error, msg string) {
	n.t.Helper()
	r := n.apply(c)
	if !errors.Is(r.Err, want) || !strings.Contains(fmt.Sprint(r.Err), msg) {
		n.t.Fatalf("apply %v: got %v, want %v containing %q", c, r.Err, want, msg)
	}
}

func (n *node) job(id string) *v1.Job {
	n.t.Helper()
	j, err := n.fsm.Store().Read().Job(id)
	if err != nil {
		n.t.Fatal(err)
	}
	return j
}

func register(agent string, instances ...string) *v1.Command {
	c := &v1.RegisterAgent{Agent: &v1.Agent{Id: "id-" + agent, Name: agent, RegisteredAt: ts(0)}, RegisteredAt: ts(0)}
	for _, in := range instances {
		c.Instances = append(c.Instances, &v1.Instance{Name: in, Agent: agent, UpdatedAt: ts(0)})
	}
	return &v1.Command{Cmd: &v1.Command_RegisterAgent{RegisterAgent: c}}
}

func submitBackup(id, instance string, at time.Duration) *v1.Command {
	return &v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: &v1.Job{
		Id: id, Kind: v1.JobKind_JOB_KIND_BACKUP, Instance: instance, State: v1.JobState_JOB_STATE_PENDING,
		CreatedAt: ts(at), UpdatedAt: ts(at), Params: &v1.Job_Backup{Backup: &v1.BackupParams{Engine: "logical"}},
	}}}}
}

func assign(id, agent string, at time.Duration) *v1.Command {
	return &v1.Command{Cmd: &v1.Command_AssignJob{AssignJob: &v1.AssignJob{
		JobId: id, Agent: agent, AssignedAt: ts(at), LeaseDeadline: ts(at + 30*time.Second),
	}}}
}

func update(id string, lease *v1.LeaseToken, state v1.JobState, at time.Duration) *v1.UpdateJobState {
	return &v1.UpdateJobState{JobId: id, Lease: lease, State: state, UpdatedAt: ts(at)}
}

func updateCmd(u *v1.UpdateJobState) *v1.Command {
	return &v1.Command{Cmd: &v1.Command_UpdateJobState{UpdateJobState: u}}
}

func expire(id string, lease *v1.LeaseToken, retry bool, at time.Duration) *v1.Command {
	return &v1.Command{Cmd: &v1.Command_ExpireLease{ExpireLease: &v1.ExpireLease{JobId: id, Lease: lease, ExpiredAt: ts(at), Retry: retry}}}
}

func completeBackup(j *v1.Job, at time.Duration) *v1.UpdateJobState {
	u := update(j.GetId(), j.GetLease(), v1.JobState_JOB_STATE_SUCCEEDED, at)
	bid := j.GetBackup().GetBackupId()
	u.Result = &v1.JobResult{BackupId: bid, ManifestKey: "manifests/" + bid}
	u.Backup = &v1.Backup{
		Id: bid, Instance: j.GetInstance(), Engine: "logical", Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE,
		ManifestKey: "manifests/" + bid, JobId: j.GetId(), Fence: j.GetLease(), StartedAt: ts(at - time.Second), FinishedAt: ts(at),
		SizeBytes: 100, StoredBytes: 40,
	}
	return u
}

// TestEveryArmHasApplier fails when a Command arm is added without an
// applier: dispatch panics for it.
func TestEveryArmHasApplier(t *testing.T) {
	oneof := (&v1.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("cmd")
	for i := range oneof.Fields().Len() {
		fd := oneof.Fields().Get(i)
		t.Run(string(fd.Name()), func(t *testing.T) {
			cmd := &v1.Command{}
			m := cmd.ProtoReflect()
			m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("arm %s: %v", fd.Name(), r)
				}
			}()
			// An empty command is a business error for most arms; what
			// matters is that some applier takes it.
			_, _ = dispatch(catalog.New().Write(), entry{Index: 1, Term: 1}, cmd)
		})
	}
}

func TestUndecodableEntryPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Apply of garbage did not panic")
		}
	}()
	New().Apply(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte{0xff, 0xff, 0xff}})
}

// script applies one command of every arm and returns the node.
func script(t *testing.T) *node {
	n := newNode(t)
	n.ok(&v1.Command{Cmd: &v1.Command_UpsertMember{UpsertMember: &v1.UpsertMember{Member: &v1.MemberRecord{Id: "c1", Address: "127.0.0.1:1", RaftAddress: "127.0.0.1:2", UpdatedAt: ts(0)}}}})
	n.ok(&v1.Command{Cmd: &v1.Command_UpsertMember{UpsertMember: &v1.UpsertMember{Member: &v1.MemberRecord{Id: "c2", Address: "127.0.0.1:3", RaftAddress: "127.0.0.1:4", UpdatedAt: ts(0)}}}})
	n.ok(&v1.Command{Cmd: &v1.Command_RemoveMember{RemoveMember: &v1.RemoveMember{Id: "c2"}}})
	n.ok(register("db1", "db1"))
	n.ok(register("db2", "db2"))
	n.ok(&v1.Command{Cmd: &v1.Command_UpsertInstance{UpsertInstance: &v1.UpsertInstance{
		Instance: &v1.Instance{Name: "db1-replica", Agent: "db1", Labels: map[string]string{"role": "replica", "dc": "eu"}}, UpdatedAt: ts(time.Second)}}})
	n.ok(submitBackup("j1", "db1", time.Second))
	j := n.ok(assign("j1", "db1", 2*time.Second)).(*v1.Job)
	n.ok(updateCmd(update("j1", j.GetLease(), v1.JobState_JOB_STATE_RUNNING, 3*time.Second)))
	n.ok(updateCmd(completeBackup(j, 4*time.Second)))
	n.ok(submitBackup("j2", "db2", 5*time.Second))
	j2 := n.ok(assign("j2", "db2", 6*time.Second)).(*v1.Job)
	n.ok(expire("j2", j2.GetLease(), true, 7*time.Second))
	n.ok(&v1.Command{Cmd: &v1.Command_RecordBackup{RecordBackup: &v1.RecordBackup{Backup: &v1.Backup{
		Id: "imported-1", Instance: "db2", Engine: "logical", Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE, StartedAt: ts(0)}, RecordedAt: ts(8 * time.Second)}}})
	n.ok(submitBackup("j3", "db1-replica", 9*time.Second))
	n.ok(updateCmd(&v1.UpdateJobState{JobId: "j3", State: v1.JobState_JOB_STATE_CANCELLED, Reason: "cancelled by test", UpdatedAt: ts(10 * time.Second)}))
	n.ok(submitStream("s1", "db2", 11*time.Second))
	s1 := n.ok(assign("s1", "db2", 12*time.Second)).(*v1.Job)
	n.ok(watermarks(13*time.Second, wm(s1, "0-1-10", 12*time.Second, "")))
	n.ok(applyPolicies(14*time.Second, spec("p1", "@hourly"), spec("p2", "@daily")))
	n.ok(&v1.Command{Cmd: &v1.Command_DeletePolicy{DeletePolicy: &v1.DeletePolicy{Name: "p2", DeletedAt: ts(15 * time.Second)}}})
	n.ok(&v1.Command{Cmd: &v1.Command_RecordScheduleSkips{RecordScheduleSkips: &v1.RecordScheduleSkips{Skips: []*v1.ScheduleSkip{
		{Id: "skip-1", Policy: "p1", RunKey: "db1", First: ts(0), Last: ts(time.Hour), Count: 2, Reason: "missed", RecordedAt: ts(16 * time.Second)},
	}}}})
	return n
}

func spec(name, cron string) *v1.PolicySpec {
	return &v1.PolicySpec{Name: name, Selector: "env=prod", Backups: []*v1.PolicySchedule{{Cron: cron, Engine: "auto", Prefer: "any"}}}
}

func applyPolicies(at time.Duration, specs ...*v1.PolicySpec) *v1.Command {
	c := &v1.ApplyPolicies{Specs: specs, AppliedBy: "user alice", AppliedAt: ts(at)}
	for _, s := range specs {
		c.Sources = append(c.Sources, "name: "+s.GetName()+"\n")
	}
	return &v1.Command{Cmd: &v1.Command_ApplyPolicies{ApplyPolicies: c}}
}

// TestPolicies: versions count changes only, keep the replaced version, a
// bad command applies none of its policies, skips are recorded once.
func TestPolicies(t *testing.T) {
	n := newNode(t)
	n.ok(applyPolicies(0, spec("a", "@hourly"), spec("b", "@daily")))
	n.ok(applyPolicies(time.Second, spec("a", "@hourly"), spec("b", "@every 1h")))
	r := n.fsm.Store().Read()
	a, _ := r.Policy("a")
	b, _ := r.Policy("b")
	if a.GetVersion() != 1 || !a.GetUpdatedAt().AsTime().Equal(t0) {
		t.Fatalf("unchanged a = %v", a)
	}
	if b.GetVersion() != 2 || b.GetPrevious().GetVersion() != 1 || b.GetPrevious().GetSpec().GetBackups()[0].GetCron() != "@daily" ||
		!b.GetCreatedAt().AsTime().Equal(t0) || !b.GetUpdatedAt().AsTime().Equal(t0.Add(time.Second)) || b.GetUpdatedBy() != "user alice" {
		t.Fatalf("changed b = %v", b)
	}
	// All or nothing: c is valid, the unnamed one is not.
	n.fails(applyPolicies(2*time.Second, spec("c", "@hourly"), spec("", "@hourly")), catalog.ErrInvalid, "policy 2 has no name")
	n.fails(applyPolicies(2*time.Second, spec("c", "@hourly"), spec("c", "@daily")), catalog.ErrInvalid, `"c" given twice`)
	if _, err := n.fsm.Store().Read().Policy("c"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("half-applied: c = %v", err)
	}
	n.fails(&v1.Command{Cmd: &v1.Command_DeletePolicy{DeletePolicy: &v1.DeletePolicy{Name: "zz"}}}, catalog.ErrNotFound, `policy "zz"`)
	skip := func(reason string) *v1.Command {
		return &v1.Command{Cmd: &v1.Command_RecordScheduleSkips{RecordScheduleSkips: &v1.RecordScheduleSkips{Skips: []*v1.ScheduleSkip{
			{Id: "s1", Policy: "a", RunKey: "db1", Count: 1, Reason: reason}}}}}
	}
	n.ok(skip("first"))
	n.ok(skip("second"))
	if s, _ := n.fsm.Store().Read().ScheduleSkip("s1"); s.GetReason() != "first" {
		t.Fatalf("skip recorded twice: %v", s)
	}
	// A scheduled job id submitted again is refused as existing, the first
	// kept.
	n.ok(register("db1", "db1"))
	n.ok(submitBackup("sched-1", "db1", 0))
	n.fails(submitBackup("sched-1", "db1", time.Second), catalog.ErrAlreadyExists, `job "sched-1" already exists`)
}

func submitStream(id, instance string, at time.Duration) *v1.Command {
	return &v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: &v1.Job{
		Id: id, Kind: v1.JobKind_JOB_KIND_BINLOG_STREAM, Instance: instance, State: v1.JobState_JOB_STATE_PENDING,
		CreatedAt: ts(at), UpdatedAt: ts(at), Params: &v1.Job_BinlogStream{BinlogStream: &v1.BinlogStreamParams{}},
	}}}}
}

// wm is a stream entry of RecordWatermarks for job j's current lease.
func wm(j *v1.Job, gtid string, durable time.Duration, lastErr string) *v1.BinlogStream {
	return &v1.BinlogStream{Instance: j.GetInstance(), JobId: j.GetId(), Lease: j.GetLease(), LastError: lastErr,
		Watermark: &v1.StreamWatermark{Instance: j.GetInstance(), Gtid: gtid, File: "bin.000001", Position: 4,
			LastEventTime: ts(durable - time.Second), DurableAt: ts(durable)}}
}

func watermarks(at time.Duration, streams ...*v1.BinlogStream) *v1.Command {
	return &v1.Command{Cmd: &v1.Command_RecordWatermarks{RecordWatermarks: &v1.RecordWatermarks{Streams: streams, RecordedAt: ts(at)}}}
}

// TestBinlogStreamJob: a stream job is one per instance and per cluster
// group, sits beside a backup, is never done (an expiry or a result sends
// it back to pending whatever max_attempts says), and its watermarks are
// fenced by its lease and never move backwards.
func TestBinlogStreamJob(t *testing.T) {
	n := newNode(t)
	n.ok(register("a1", "db1", "db2", "solo"))
	for _, name := range []string{"db1", "db2"} {
		n.ok(&v1.Command{Cmd: &v1.Command_UpsertInstance{UpsertInstance: &v1.UpsertInstance{
			Instance: &v1.Instance{Name: name, Agent: "a1", Labels: map[string]string{"cluster": "c1"}}, UpdatedAt: ts(0)}}})
	}
	n.ok(submitStream("s1", "db1", time.Second))
	n.fails(submitStream("s2", "db1", 2*time.Second), catalog.ErrConflict, `instance "db1" already has binlog stream job s1 (pending)`)
	n.fails(submitStream("s2", "db2", 2*time.Second), catalog.ErrConflict, `instance "db2" is in cluster "c1", whose binlog stream job s1 (pending) runs for instance "db1"`)
	n.ok(submitStream("s3", "solo", 2*time.Second))
	n.ok(submitBackup("b1", "db1", 3*time.Second)) // a backup runs beside the stream

	s1 := n.ok(assign("s1", "a1", 4*time.Second)).(*v1.Job)
	n.ok(watermarks(5*time.Second, wm(s1, "0-1-5", 5*time.Second, "")))
	// Lease expiries, more than max_attempts: always back to pending.
	for i := range 4 {
		at := time.Duration(10+2*i) * time.Second
		n.ok(expire("s1", s1.GetLease(), true, at))
		if j := n.job("s1"); j.GetState() != v1.JobState_JOB_STATE_PENDING {
			t.Fatalf("after expiry %d: %v", i+1, j)
		}
		s1 = n.ok(assign("s1", "a1", at+time.Second)).(*v1.Job)
	}
	// A watermark under a superseded lease is skipped, one under the
	// current lease applies, an older one does not move it back.
	stale := wm(s1, "0-1-99", 30*time.Second, "")
	stale.Lease = &v1.LeaseToken{Term: 1, Index: 1, JobId: "s1"}
	got := n.ok(watermarks(31*time.Second, stale, wm(s1, "0-1-20", 30*time.Second, "connection refused"))).(*v1.RecordWatermarks)
	if len(got.GetStreams()) != 1 || got.GetStreams()[0].GetWatermark().GetGtid() != "0-1-20" {
		t.Fatalf("applied %v", got)
	}
	n.ok(watermarks(32*time.Second, wm(s1, "0-1-7", 6*time.Second, "")))
	rec, err := n.fsm.Store().Read().BinlogStream("db1")
	if err != nil || rec.GetWatermark().GetGtid() != "0-1-20" || rec.GetLastError() != "" || rec.GetJobId() != "s1" {
		t.Fatalf("stream record %v, %v", rec, err)
	}
	// An agent's result ends the attempt, not the job.
	u := update("s1", s1.GetLease(), v1.JobState_JOB_STATE_FAILED, 40*time.Second)
	u.Result = &v1.JobResult{Error: "agent shutting down"}
	if j := n.ok(updateCmd(u)).(*v1.Job); j.GetState() != v1.JobState_JOB_STATE_PENDING || j.GetLease() != nil ||
		j.GetPreviousAttempts()[len(j.GetPreviousAttempts())-1].GetError() != "agent shutting down" {
		t.Fatalf("after a result: %v", j)
	}
	// Cancelled: the stream record stays, a new stream may start.
	n.ok(updateCmd(&v1.UpdateJobState{JobId: "s1", State: v1.JobState_JOB_STATE_CANCELLED, Reason: "binlog stop", UpdatedAt: ts(50 * time.Second)}))
	n.ok(submitStream("s4", "db2", 51*time.Second))
	if rec, _ := n.fsm.Store().Read().BinlogStream("db1"); rec.GetWatermark().GetGtid() != "0-1-20" {
		t.Fatalf("record after stop: %v", rec)
	}
}

func TestApplyEveryArm(t *testing.T) {
	n := script(t)
	r := n.fsm.Store().Read()
	if ms := r.Members(); len(ms) != 1 || ms[0].GetId() != "c1" {
		t.Errorf("members = %v", ms)
	}
	if got := len(r.Instances()); got != 3 {
		t.Errorf("%d instances, want 3", got)
	}
	if in := r.InstancesOf("db1"); len(in) != 2 {
		t.Errorf("instances of db1 = %v", in)
	}
	j1 := n.job("j1")
	if j1.GetState() != v1.JobState_JOB_STATE_SUCCEEDED || j1.GetAttempt() != 1 || j1.GetBackup().GetBackupId() != "j1-a1" {
		t.Errorf("j1 = %v", j1)
	}
	b, err := r.Backup("j1-a1")
	if err != nil || b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE || !catalog.SameLease(b.GetFence(), j1.GetLease()) {
		t.Errorf("backup j1-a1 = %v, %v", b, err)
	}
	j2 := n.job("j2")
	if j2.GetState() != v1.JobState_JOB_STATE_PENDING || j2.GetLease() != nil || len(j2.GetPreviousAttempts()) != 1 ||
		j2.GetPreviousAttempts()[0].GetError() != "lease expired: agent db2 stopped heartbeating" {
		t.Errorf("j2 after a retried expiry = %v", j2)
	}
	if j3 := n.job("j3"); j3.GetState() != v1.JobState_JOB_STATE_CANCELLED || j3.GetReason() != "cancelled by test" {
		t.Errorf("j3 = %v", j3)
	}
	if bs := r.Backups(""); len(bs) != 2 || bs[0].GetId() != "j1-a1" {
		t.Errorf("backups newest first = %v", bs)
	}
}

func TestSubmitRefusals(t *testing.T) {
	n := newNode(t)
	n.ok(register("db1", "db1"))
	n.fails(submitBackup("j1", "nope", 0), catalog.ErrNotFound, `instance "nope"`)
	n.ok(submitBackup("j1", "db1", 0))
	n.fails(submitBackup("j1", "db1", 0), catalog.ErrAlreadyExists, "j1")
	n.fails(submitBackup("j2", "db1", 0), catalog.ErrConflict, `instance "db1" already has backup job j1 (pending)`)
	// Another agent cannot claim db1.
	n.fails(register("db9", "db1"), catalog.ErrConflict, `instance "db1" belongs to agent "db1"`)
	// Only active jobs count, whatever state moved them there.
	n.ok(updateCmd(&v1.UpdateJobState{JobId: "j1", State: v1.JobState_JOB_STATE_CANCELLED, UpdatedAt: ts(time.Second)}))
	n.ok(submitBackup("j2", "db1", 2*time.Second))
	n.ok(assign("j2", "db1", 3*time.Second))
	n.fails(submitBackup("j3", "db1", 4*time.Second), catalog.ErrConflict, `instance "db1" already has backup job j2 (assigned)`)
}

// TestLeaseFencing: once a lease expired and the job was reassigned, the
// old attempt's reports are refused, and only the current attempt records a
// backup, once.
func TestLeaseFencing(t *testing.T) {
	n := newNode(t)
	n.ok(register("db1", "db1"))
	n.ok(submitBackup("j1", "db1", 0))
	a1 := n.ok(assign("j1", "db1", time.Second)).(*v1.Job)
	n.ok(updateCmd(update("j1", a1.GetLease(), v1.JobState_JOB_STATE_RUNNING, 2*time.Second)))
	n.term = 2 // a new leader expires the lease and reassigns
	n.ok(expire("j1", a1.GetLease(), true, 40*time.Second))
	a2 := n.ok(assign("j1", "db1", 41*time.Second)).(*v1.Job)
	if a2.GetAttempt() != 2 || a2.GetBackup().GetBackupId() != "j1-a2" || a2.GetLease().GetTerm() != 2 || a2.GetLease().GetIndex() <= a1.GetLease().GetIndex() {
		t.Fatalf("second attempt = %v", a2)
	}
	// The paused first attempt wakes up and reports success.
	n.fails(updateCmd(completeBackup(a1, 42*time.Second)), catalog.ErrStaleLease, "current lease is j1@2/")
	n.fails(updateCmd(update("j1", a1.GetLease(), v1.JobState_JOB_STATE_RUNNING, 42*time.Second)), catalog.ErrStaleLease, "")
	n.fails(expire("j1", a1.GetLease(), true, 42*time.Second), catalog.ErrStaleLease, "")
	if _, err := n.fsm.Store().Read().Backup("j1-a1"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("the stale attempt's backup was recorded: %v", err)
	}
	// A backup fenced by another lease is refused too.
	bad := completeBackup(a2, 43*time.Second)
	bad.Backup.Fence = a1.GetLease()
	n.fails(updateCmd(bad), catalog.ErrStaleLease, "fenced by lease")
	// The current attempt records its backup; the same result again is a
	// no-op.
	n.ok(updateCmd(completeBackup(a2, 44*time.Second)))
	if r := n.apply(updateCmd(completeBackup(a2, 45*time.Second))); r.Err != nil || !r.Unchanged {
		t.Fatalf("repeated result: %+v", r)
	}
	if bs := n.fsm.Store().Read().Backups("db1"); len(bs) != 1 || bs[0].GetId() != "j1-a2" {
		t.Fatalf("backups = %v", bs)
	}
	// Out of attempts: a second expiry fails the job for good.
	n.ok(submitBackup("j2", "db1", 50*time.Second))
	for i := range 2 {
		a := n.ok(assign("j2", "db1", time.Duration(51+i)*time.Second)).(*v1.Job)
		n.ok(expire("j2", a.GetLease(), true, time.Duration(52+i)*time.Second))
	}
	if j := n.job("j2"); j.GetState() != v1.JobState_JOB_STATE_FAILED || !strings.Contains(j.GetReason(), "lease expired: agent db1 stopped heartbeating (attempt 2 of 2)") {
		t.Fatalf("j2 = %v", j)
	}
}

func TestCancelTakesTheLease(t *testing.T) {
	n := newNode(t)
	n.ok(register("db1", "db1"))
	n.ok(submitBackup("j1", "db1", 0))
	a := n.ok(assign("j1", "db1", time.Second)).(*v1.Job)
	n.ok(updateCmd(&v1.UpdateJobState{JobId: "j1", State: v1.JobState_JOB_STATE_CANCELLED, Reason: "by test", UpdatedAt: ts(2 * time.Second)}))
	n.fails(updateCmd(completeBackup(a, 3*time.Second)), catalog.ErrStaleLease, "")
	n.fails(updateCmd(&v1.UpdateJobState{JobId: "j1", State: v1.JobState_JOB_STATE_CANCELLED, UpdatedAt: ts(4 * time.Second)}), catalog.ErrConflict, "already cancelled")
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	n := script(t)
	want, err := Marshal(n.fsm.Store())
	if err != nil {
		t.Fatal(err)
	}
	snap, err := n.fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	// Applying after the snapshot was taken does not change it.
	n.ok(register("db3", "db3"))
	if !bytes.Equal(sink.Bytes(), want) {
		t.Fatal("persisted snapshot differs from the catalog at snapshot time")
	}
	m := New()
	if err := m.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	got, _ := Marshal(m.Store())
	if !bytes.Equal(got, want) {
		t.Fatal("restored catalog differs")
	}
	if _, err := m.Store().Read().Agent("db3"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatal("restore kept records from after the snapshot")
	}
	if j, err := m.Store().Read().Job("j1"); err != nil || j.GetState() != v1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("restored j1 = %v, %v", j, err)
	}
}

// TestDeterminism: the same log applied on two FSMs gives byte-identical
// snapshots, business errors included.
func TestDeterminism(t *testing.T) {
	a, b := script(t), script(t)
	for _, n := range []*node{a, b} {
		n.apply(submitBackup("j1", "db1", 0)) // refused the same way on both
	}
	sa, _ := Marshal(a.fsm.Store())
	sb, _ := Marshal(b.fsm.Store())
	if len(sa) == 0 || !bytes.Equal(sa, sb) {
		t.Fatalf("snapshots differ (%d vs %d bytes)", len(sa), len(sb))
	}
}

type memSink struct {
	bytes.Buffer
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

// TestBinlogGaps: a gap an agent reports with every heartbeat (and again
// after a restart) is recorded once, stamped with the batch's time; a new
// one is appended; alerted_at is stamped once and survives later reports;
// a stream without a record changes nothing.
func TestBinlogGaps(t *testing.T) {
	n := newNode(t)
	n.ok(register("a1", "db1"))
	n.ok(submitStream("s1", "db1", time.Second))
	s1 := n.ok(assign("s1", "a1", 2*time.Second)).(*v1.Job)
	gap := func(after, before string) *v1.BinlogGap {
		return &v1.BinlogGap{After: after, Before: before, AfterGtid: "0-1-5", Reason: "purged", DetectedAt: ts(3 * time.Second),
			AlertedAt: ts(time.Hour)} // an agent's stamp, never taken
	}
	withGaps := func(e *v1.BinlogStream, gs ...*v1.BinlogGap) *v1.BinlogStream { e.Gaps = gs; return e }
	g1 := gap("GTID 0-1-5 (bin.000001:900)", "GTID 0-1-9 (bin.000003:4)")
	n.ok(watermarks(5*time.Second, withGaps(wm(s1, "0-1-10", 5*time.Second, ""), g1)))
	n.ok(watermarks(6*time.Second, withGaps(wm(s1, "0-1-11", 6*time.Second, ""), g1)))
	rec, _ := n.fsm.Store().Read().BinlogStream("db1")
	if gs := rec.GetGaps(); len(gs) != 1 || !gs[0].GetRecordedAt().AsTime().Equal(ts(5*time.Second).AsTime()) || gs[0].GetAlertedAt() != nil ||
		gs[0].GetReason() != "purged" || !gs[0].GetDetectedAt().AsTime().Equal(ts(3*time.Second).AsTime()) {
		t.Fatalf("gaps after two reports of one gap: %v", gs)
	}
	mark := func(at time.Duration, gs ...*v1.BinlogGap) *v1.Command {
		return &v1.Command{Cmd: &v1.Command_MarkBinlogGapsAlerted{MarkBinlogGapsAlerted: &v1.MarkBinlogGapsAlerted{Instance: "db1", Gaps: gs, AlertedAt: ts(at)}}}
	}
	if got := n.ok(mark(7*time.Second, g1)).(*v1.MarkBinlogGapsAlerted); len(got.GetGaps()) != 1 {
		t.Fatalf("marked %v", got)
	}
	if got := n.ok(mark(8*time.Second, g1)).(*v1.MarkBinlogGapsAlerted); len(got.GetGaps()) != 0 {
		t.Fatalf("marked twice: %v", got)
	}
	g2 := gap("GTID 0-1-20 (bin.000004:700)", "GTID 0-1-30 (bin.000006:4)")
	n.ok(watermarks(9*time.Second, withGaps(wm(s1, "0-1-31", 9*time.Second, ""), g1, g2)))
	rec, _ = n.fsm.Store().Read().BinlogStream("db1")
	gs := rec.GetGaps()
	if len(gs) != 2 || !gs[0].GetAlertedAt().AsTime().Equal(ts(7*time.Second).AsTime()) || gs[1].GetAlertedAt() != nil ||
		gs[1].GetAfter() != g2.GetAfter() || !gs[1].GetRecordedAt().AsTime().Equal(ts(9*time.Second).AsTime()) {
		t.Fatalf("gaps after a second gap: %v", gs)
	}
	if got := n.ok(&v1.Command{Cmd: &v1.Command_MarkBinlogGapsAlerted{MarkBinlogGapsAlerted: &v1.MarkBinlogGapsAlerted{
		Instance: "nope", Gaps: []*v1.BinlogGap{g1}, AlertedAt: ts(10 * time.Second)}}}).(*v1.MarkBinlogGapsAlerted); len(got.GetGaps()) != 0 {
		t.Fatalf("marked a gap of an unknown stream: %v", got)
	}
}

// TestGroupStreamOnAnotherMember: a `cluster` group's stream job may be
// assigned to the agent of any member of its group (the leader does so
// when the agent of the job's instance is lost), never to another agent;
// a stream of one instance and a backup only to their instance's agent.
func TestGroupStreamOnAnotherMember(t *testing.T) {
	n := newNode(t)
	n.ok(register("a1", "pa"))
	n.ok(register("a2", "pb"))
	n.ok(register("a3", "other"))
	for _, name := range []string{"pa", "pb"} {
		n.ok(&v1.Command{Cmd: &v1.Command_UpsertInstance{UpsertInstance: &v1.UpsertInstance{
			Instance: &v1.Instance{Name: name, Agent: map[string]string{"pa": "a1", "pb": "a2"}[name], Labels: map[string]string{"cluster": "pg"}}, UpdatedAt: ts(0)}}})
	}
	grp := submitStream("s1", "pa", time.Second)
	grp.GetSubmitJob().GetJob().GetBinlogStream().Cluster = "pg"
	n.ok(grp)
	n.fails(assign("s1", "a3", 2*time.Second), catalog.ErrConflict, `job s1 runs on instance "pa" of agent "a1", not "a3"`)
	if j := n.ok(assign("s1", "a2", 2*time.Second)).(*v1.Job); j.GetAgent() != "a2" || j.GetInstance() != "pa" {
		t.Fatalf("group stream on another member's agent: %v", j)
	}
	n.ok(submitStream("s2", "other", 3*time.Second))
	n.fails(assign("s2", "a2", 4*time.Second), catalog.ErrConflict, `job s2 runs on instance "other" of agent "a3", not "a2"`)
	n.ok(submitBackup("b1", "pa", 5*time.Second))
	n.fails(assign("b1", "a2", 6*time.Second), catalog.ErrConflict, `job b1 runs on instance "pa" of agent "a1", not "a2"`)
}

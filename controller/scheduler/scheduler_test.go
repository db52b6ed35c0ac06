package scheduler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/fsm"
	"github.com/tidemark-backup/tidemark/controller/policy"
	"github.com/tidemark-backup/tidemark/engines/selection"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// raftLike applies commands to a real FSM the way Raft would, one at a
// time: the scheduler's Applier and Catalog.
type raftLike struct {
	t     *testing.T
	mu    sync.Mutex
	fsm   *fsm.FSM
	index uint64
	clock *fakeClock
}

func (f *raftLike) Read() *catalog.Read { return f.fsm.Store().Read() }

func (f *raftLike) Apply(_ context.Context, cmd *v1.Command) error {
	b, err := fsm.Encode(cmd)
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	return f.fsm.Apply(&raft.Log{Index: f.index, Term: 1, Type: raft.LogCommand, Data: b}).(*fsm.Response).Err
}

func (f *raftLike) Cancel(ctx context.Context, id, reason string) error {
	return f.Apply(ctx, &v1.Command{Cmd: &v1.Command_UpdateJobState{UpdateJobState: &v1.UpdateJobState{
		JobId: id, State: v1.JobState_JOB_STATE_CANCELLED, Reason: reason, UpdatedAt: timestamppb.New(f.clock.Now())}}})
}

func (f *raftLike) must(cmd *v1.Command) {
	f.t.Helper()
	if err := f.Apply(context.Background(), cmd); err != nil {
		f.t.Fatal(err)
	}
}

// finishAll ends every active backup job (cancelled: this test is about
// scheduling, not running).
func (f *raftLike) finishAll() {
	for _, j := range f.Read().ActiveJobs() {
		if j.GetKind() == v1.JobKind_JOB_KIND_BACKUP {
			_ = f.Cancel(context.Background(), j.GetId(), "test: done")
		}
	}
}

func (f *raftLike) applyYAML(doc string) {
	f.t.Helper()
	ps, err := policy.Parse("t.yaml", []byte(doc))
	if err != nil {
		f.t.Fatal(err)
	}
	c := &v1.ApplyPolicies{AppliedBy: "test", AppliedAt: timestamppb.New(f.clock.Now())}
	for _, p := range ps {
		c.Specs = append(c.Specs, p.Spec)
		c.Sources = append(c.Sources, p.Source)
	}
	f.must(&v1.Command{Cmd: &v1.Command_ApplyPolicies{ApplyPolicies: c}})
}

func newEnv(t *testing.T) (*raftLike, *fakeClock) {
	clock := &fakeClock{t: t0}
	f := &raftLike{t: t, fsm: fsm.New(), clock: clock}
	reg := &v1.RegisterAgent{Agent: &v1.Agent{Id: "a1", Name: "a1"}}
	for _, in := range []struct {
		name    string
		labels  map[string]string
		replica bool
	}{
		{"db1", map[string]string{"env": "prod", "dc": "a"}, false},
		{"db2", map[string]string{"env": "prod", "dc": "a"}, false},
		{"db3", map[string]string{"env": "prod", "dc": "b"}, false},
		{"pg-1", map[string]string{"env": "prod", "dc": "b", "cluster": "pg"}, false},
		{"pg-2", map[string]string{"env": "prod", "dc": "b", "cluster": "pg"}, true},
		{"dev1", map[string]string{"env": "dev"}, false},
	} {
		reg.Instances = append(reg.Instances, &v1.Instance{Name: in.name, Agent: "a1", Labels: in.labels,
			Capabilities: &v1.Capabilities{IsReplica: in.replica}})
	}
	f.must(&v1.Command{Cmd: &v1.Command_RegisterAgent{RegisterAgent: reg}})
	return f, clock
}

func jobsOf(f *raftLike, kind v1.JobKind) []*v1.Job {
	return slices.DeleteFunc(f.Read().Jobs(catalog.JobFilter{}), func(j *v1.Job) bool { return j.GetKind() != kind })
}

// TestScheduling: the right instances, one run per group on the preferred
// member, deterministic ids, no repeat after a leader change, late runs
// within catch-up start once, older ones and runs beyond catch-up are
// recorded as skipped, max_concurrent holds runs back.
func TestScheduling(t *testing.T) {
	f, clock := newEnv(t)
	f.applyYAML(`name: prod
selector: env=prod, dc in (a,b)
backups:
  - schedule: "@every 1m"
    prefer: replica
    catch_up: 30s
`)
	s := New(Config{Clock: clock, DefaultRepo: "file:///repo"}, f, f)
	s.Recompute()
	if res := s.Tick(context.Background()); res.Submitted != 0 {
		t.Fatalf("submitted before anything was due: %+v", res)
	}
	clock.add(time.Minute + 7*time.Second) // past the largest spread (6s)
	res := s.Tick(context.Background())
	if res.Submitted != 4 || len(res.Errors) > 0 {
		t.Fatalf("first tick: %+v", res)
	}
	jobs := jobsOf(f, v1.JobKind_JOB_KIND_BACKUP)
	var got []string
	for _, j := range jobs {
		got = append(got, j.GetRunKey()+"@"+j.GetInstance())
		if j.GetId() != policy.RunID("prod", 0, j.GetRunKey(), t0.Add(time.Minute)) || !j.GetScheduledFor().AsTime().Equal(t0.Add(time.Minute)) ||
			j.GetPolicy() != "prod" || j.GetBackup().GetRepositoryUri() != "file:///repo" {
			t.Errorf("job %v", j)
		}
	}
	slices.Sort(got)
	if strings.Join(got, " ") != "cluster:pg@pg-2 db1@db1 db2@db2 db3@db3" {
		t.Fatalf("runs %v", got)
	}
	// Again, and from a new leader's scheduler: nothing new.
	if res := s.Tick(context.Background()); res.Submitted != 0 {
		t.Fatalf("second tick: %+v", res)
	}
	s2 := New(Config{Clock: clock}, f, f)
	if n := s2.Recompute(); n != 4 {
		t.Fatalf("recompute found %d keys", n)
	}
	if res := s2.Tick(context.Background()); res.Submitted != 0 {
		t.Fatalf("new leader resubmitted: %+v", res)
	}
	// Busy instances hold the next run; once free it starts.
	clock.add(time.Minute)
	// (The first runs, never started by an agent, are failed once past
	// their catch-up window.)
	if res := s2.Tick(context.Background()); res.Submitted != 0 || res.Held != 4 || res.Expired != 4 {
		t.Fatalf("busy: %+v", res)
	}
	for _, j := range jobsOf(f, v1.JobKind_JOB_KIND_BACKUP) {
		if j.GetState() != v1.JobState_JOB_STATE_FAILED || !strings.HasPrefix(j.GetReason(), "not started within the catch-up window (30s) of its due time") {
			t.Fatalf("unstarted job %v", j)
		}
	}
	f.finishAll()
	if res := s2.Tick(context.Background()); res.Submitted != 4 {
		t.Fatalf("after the jobs ended: %+v", res)
	}
	f.finishAll()
	// No leader for 5 minutes: the latest run (within catch-up) starts
	// late, the 4 before it are recorded as superseded.
	clock.add(5 * time.Minute)
	s3 := New(Config{Clock: clock}, f, f)
	s3.Recompute()
	res = s3.Tick(context.Background())
	if res.Submitted != 4 || res.Skipped != 4 {
		t.Fatalf("after an outage: %+v", res)
	}
	sk := f.Read().ScheduleSkips("prod")
	if len(sk) != 4 || sk[0].GetCount() != 4 || !strings.HasPrefix(sk[0].GetReason(), "superseded") {
		t.Fatalf("skips %v", sk)
	}
	f.finishAll()
	// Beyond catch-up: a run due 40s ago is skipped, not started.
	clock.add(time.Minute + 40*time.Second)
	res = s3.Tick(context.Background())
	if res.Submitted != 0 || res.Skipped != 4 {
		t.Fatalf("beyond catch-up: %+v", res)
	}
	for _, k := range f.Read().ScheduleSkips("prod") {
		if k.GetCount() == 1 && !strings.Contains(k.GetReason(), "beyond the catch-up window of 30s") {
			t.Fatalf("skip reason %q", k.GetReason())
		}
	}
	// Every job id is unique per (policy, schedule, run key, time): the
	// catalog holds exactly one job per scheduled time and run key.
	seen := map[string]bool{}
	for _, j := range jobsOf(f, v1.JobKind_JOB_KIND_BACKUP) {
		k := fmt.Sprintf("%s/%s", j.GetRunKey(), j.GetScheduledFor().AsTime())
		if seen[k] {
			t.Fatalf("two jobs for %s", k)
		}
		seen[k] = true
	}
	if len(seen) != 12 {
		t.Fatalf("%d scheduled jobs, want 12", len(seen))
	}
}

func TestMaxConcurrentAndStreams(t *testing.T) {
	f, clock := newEnv(t)
	f.applyYAML(`name: prod
selector: env=prod
backups:
  - schedule: "@every 1m"
max_concurrent: {by: dc, limit: 1}
binlog: {enabled: true, flush: 2s}
`)
	s := New(Config{Clock: clock}, f, f)
	s.Recompute()
	res := s.Tick(context.Background())
	// Streams: db1, db2, db3 and one for the pg group (on its primary).
	if res.StreamsStarted != 4 {
		t.Fatalf("streams: %+v", res)
	}
	var st []string
	for _, j := range jobsOf(f, v1.JobKind_JOB_KIND_BINLOG_STREAM) {
		st = append(st, j.GetInstance()+":"+j.GetBinlogStream().GetCluster())
	}
	slices.Sort(st)
	if strings.Join(st, " ") != "db1: db2: db3: pg-1:pg" {
		t.Fatalf("streams %v", st)
	}
	if res := s.Tick(context.Background()); res.StreamsStarted != 0 {
		t.Fatalf("streams started twice: %+v", res)
	}
	clock.add(time.Minute + 7*time.Second)
	res = s.Tick(context.Background())
	// dc=a: db1 or db2 (one); dc=b: db3 or the pg group (one).
	if res.Submitted != 2 || res.Held != 2 {
		t.Fatalf("max_concurrent: %+v", res)
	}
	for k, why := range s.Held() {
		if !strings.Contains(why, "limit 1") {
			t.Fatalf("%s held: %s", k, why)
		}
	}
	heldRuns := 0
	for _, r := range s.Upcoming("", 2) {
		if r.GetHeld() != "" {
			heldRuns++
		}
	}
	if heldRuns != 2 {
		t.Fatalf("schedule shows %d held runs, want 2", heldRuns)
	}
	f.finishAll()
	if res := s.Tick(context.Background()); res.Submitted != 2 {
		t.Fatalf("held runs after the others ended: %+v", res)
	}
	// A stream stopped by hand stays stopped (and the status says so);
	// applying the policy again restarts it.
	var db1 *v1.Job
	for _, j := range f.Read().ActiveJobs() {
		if j.GetInstance() == "db1" && j.GetKind() == v1.JobKind_JOB_KIND_BINLOG_STREAM {
			db1 = j
		}
	}
	clock.add(time.Second)
	if err := f.Cancel(context.Background(), db1.GetId(), "binlog stream stopped"); err != nil {
		t.Fatal(err)
	}
	if res := s.Tick(context.Background()); res.StreamsStarted != 0 {
		t.Fatalf("restarted a stream stopped by hand: %+v", res)
	}
	stat := Evaluate(f.Read(), StatusParams{Now: clock.Now()})
	var why []string
	for _, in := range stat[0].GetInstances() {
		if in.GetInstance() == "db1" {
			why = in.GetReasons()
		}
	}
	if len(why) != 1 || !strings.Contains(why[0], "was stopped (binlog stream stopped)") {
		t.Fatalf("db1 status %v", why)
	}
	// Without binlog in the policy, its streams stop.
	clock.add(time.Second)
	f.applyYAML(`name: prod
selector: env=prod
backups:
  - schedule: "@every 1m"
`)
	if res := s.Tick(context.Background()); res.StreamsStopped != 3 {
		t.Fatalf("streams after binlog was disabled: %+v", res)
	}
}

func TestStatus(t *testing.T) {
	f, clock := newEnv(t)
	f.applyYAML(`name: prod
selector: env=prod,dc=a
backups:
  - schedule: "@every 1m"
binlog: {enabled: true, rpo_target: 30s}
`)
	s := New(Config{Clock: clock}, f, f)
	s.Recompute()
	s.Tick(context.Background())
	clock.add(3 * time.Minute)
	// db1 has a recent backup; db2 none.
	f.must(&v1.Command{Cmd: &v1.Command_RecordBackup{RecordBackup: &v1.RecordBackup{Backup: &v1.Backup{
		Id: "b1", Instance: "db1", Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE, StartedAt: timestamppb.New(clock.Now().Add(-time.Minute)),
		FinishedAt: timestamppb.New(clock.Now().Add(-30 * time.Second))}}}})
	view := func(rec *v1.BinlogStream, j *v1.Job) *v1.BinlogStream {
		rec.Watermark = &v1.StreamWatermark{LastEventTime: timestamppb.New(clock.Now().Add(-5 * time.Second))}
		if j.GetInstance() == "db2" {
			rec.Watermark.LastEventTime = timestamppb.New(clock.Now().Add(-2 * time.Minute))
			rec.Failures, rec.LastError = 3, "connection refused"
		}
		return rec
	}
	st := Evaluate(f.Read(), StatusParams{Now: clock.Now(), Stream: view})
	if len(st) != 1 || st[0].GetMet() != 1 || st[0].GetUnmet() != 1 {
		t.Fatalf("status %v", st)
	}
	db2 := strings.Join(st[0].GetInstances()[1].GetReasons(), "\n")
	for _, want := range []string{"no backup within 2m0s (schedule 0 \"@every 1m\"; never)", "RPO 2m0s above the target 30s", "binlog stream failing (3 failed run(s) in a row): connection refused"} {
		if !strings.Contains(db2, want) {
			t.Errorf("db2 reasons lack %q:\n%s", want, db2)
		}
	}
}

func TestFileClock(t *testing.T) {
	f := filepath.Join(t.TempDir(), "clock")
	c := NewFileClock(f)
	if d := time.Since(c.Now()); d < 0 || d > time.Minute {
		t.Fatalf("without a file: %v", c.Now())
	}
	if err := os.WriteFile(f, []byte(t0.Format(time.RFC3339Nano)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !c.Now().Equal(t0) {
		t.Fatalf("with a file: %v", c.Now())
	}
	// A rewrite in place is seen half done (empty, then partial): the
	// clock stays at its last reading instead of jumping to the wall clock.
	for _, half := range []string{"", "2026-11-0"} {
		if err := os.WriteFile(f, []byte(half), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := c.Now(); !got.Equal(t0) {
			t.Fatalf("file holding %q: %v, want the last good reading %v", half, got, t0)
		}
	}
	if err := os.Remove(f); err != nil {
		t.Fatal(err)
	}
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("file removed: %v, want the last good reading %v", got, t0)
	}
}

// TestPolicyRecreated: runs of a deleted policy's time and of a changed
// schedule's old form are not caught up nor recorded as skipped.
func TestPolicyRecreated(t *testing.T) {
	f, clock := newEnv(t)
	doc := "name: p\nselector: env=dev\nbackups:\n  - schedule: \"@every 1m\"\n    catch_up: 1h\n"
	f.applyYAML(doc)
	s := New(Config{Clock: clock}, f, f)
	s.Recompute()
	clock.add(time.Minute + 7*time.Second)
	if res := s.Tick(context.Background()); res.Submitted != 1 {
		t.Fatalf("first run: %+v", res)
	}
	f.finishAll()
	f.must(&v1.Command{Cmd: &v1.Command_DeletePolicy{DeletePolicy: &v1.DeletePolicy{Name: "p"}}})
	clock.add(10 * time.Minute)
	f.applyYAML(doc)
	s.Tick(context.Background())
	clock.add(30 * time.Second)
	if res := s.Tick(context.Background()); res.Submitted != 0 || res.Skipped != 0 {
		t.Fatalf("right after re-creation: %+v", res)
	}
	clock.add(40 * time.Second)
	if res := s.Tick(context.Background()); res.Submitted != 1 || res.Skipped != 0 {
		t.Fatalf("first run of the new policy: %+v", res)
	}
	f.finishAll()
	// The cron changes: the old form's runs are not the new one's.
	clock.add(5 * time.Minute)
	f.applyYAML(strings.Replace(doc, "@every 1m", "@every 2m", 1))
	if res := s.Tick(context.Background()); res.Submitted != 0 || res.Skipped != 0 {
		t.Fatalf("right after a cron change: %+v", res)
	}
	if n := len(f.Read().ScheduleSkips("p")); n != 0 {
		t.Fatalf("%d skip records", n)
	}
}

// TestMaxConcurrentCountsEveryBackup: a backup by hand on an instance of
// dc=a uses dc=a's slot too.
func TestMaxConcurrentCountsEveryBackup(t *testing.T) {
	f, clock := newEnv(t)
	f.applyYAML("name: p\nselector: dc=a\nbackups:\n  - schedule: \"@every 1m\"\nmax_concurrent: {by: dc, limit: 1}\n")
	f.must(&v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: &v1.Job{
		Id: "by-hand", Kind: v1.JobKind_JOB_KIND_BACKUP, Instance: "db3", State: v1.JobState_JOB_STATE_PENDING,
		Params: &v1.Job_Backup{Backup: &v1.BackupParams{}}}}}})
	// db3 is dc=b: no effect on dc=a.
	s := New(Config{Clock: clock}, f, f)
	s.Recompute()
	clock.add(time.Minute + 7*time.Second)
	if res := s.Tick(context.Background()); res.Submitted != 1 || res.Held != 1 {
		t.Fatalf("dc=a with one slot: %+v", res)
	}
	f.finishAll()
	f.must(&v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: &v1.Job{
		Id: "by-hand-2", Kind: v1.JobKind_JOB_KIND_BACKUP, Instance: "db1", State: v1.JobState_JOB_STATE_PENDING,
		Params: &v1.Job_Backup{Backup: &v1.BackupParams{}}}}}})
	res := s.Tick(context.Background())
	if res.Submitted != 0 || res.Held != 1 {
		t.Fatalf("dc=a's slot taken by a backup by hand: %+v", res)
	}
	for _, why := range s.Held() {
		if !strings.Contains(why, "1 backups already active on instances with dc=a (limit 1)") {
			t.Fatalf("held: %s", why)
		}
	}
}

// TestScheduledEngineAuto: a schedule with engine auto takes engine
// selection's first usable engine from the instance's probed capabilities,
// with its reason and fallbacks, as a backup asked for by hand does; an
// instance not probed yet leaves the choice to its agent.
func TestScheduledEngineAuto(t *testing.T) {
	f, clock := newEnv(t)
	reg := &v1.RegisterAgent{Agent: &v1.Agent{Id: "a2", Name: "a2"}, Instances: []*v1.Instance{{Name: "small", Agent: "a2",
		Labels:       map[string]string{"env": "auto"},
		Capabilities: &v1.Capabilities{Flavor: "mariadb", Version: "10.11.6", DataBytes: 64 << 20, BinlogEnabled: true}}}}
	f.must(&v1.Command{Cmd: &v1.Command_RegisterAgent{RegisterAgent: reg}})
	f.applyYAML(`name: auto
selector: env in (auto, dev)
backups:
  - schedule: "@every 1m"
    engine: auto
`)
	s := New(Config{Clock: clock, DefaultRepo: "file:///repo", LogicalBelow: 1 << 30}, f, f)
	s.Recompute()
	clock.add(time.Minute + 7*time.Second) // past the largest spread
	if res := s.Tick(context.Background()); res.Submitted != 2 || len(res.Errors) > 0 {
		t.Fatalf("tick: %+v", res)
	}
	byInstance := map[string]*v1.BackupParams{}
	for _, j := range jobsOf(f, v1.JobKind_JOB_KIND_BACKUP) {
		byInstance[j.GetInstance()] = j.GetBackup()
	}
	if p := byInstance["small"]; p.GetEngine() != "logical" || !strings.Contains(p.GetEngineReason(), "logical") {
		t.Errorf("probed small instance: engine %q, reason %q", p.GetEngine(), p.GetEngineReason())
	}
	if p, ok := byInstance["dev1"]; !ok || p.GetEngine() != "" || p.GetEngineReason() != "" {
		t.Errorf("instance without capabilities: %v %+v", ok, p)
	}
	for name, p := range byInstance {
		if p.GetHistory() {
			t.Errorf("instance %s: a policy without history: true asks for history", name)
		}
	}
}

// TestScheduledEnginePortable: a portable policy's auto schedule runs the
// logical engine with portable's reason and no physical fallback, on an
// instance whose capabilities rank snapshot first and on one not probed
// yet (whose agent would otherwise pick its default engine); its
// history: true reaches every job.
func TestScheduledEnginePortable(t *testing.T) {
	f, clock := newEnv(t)
	reg := &v1.RegisterAgent{Agent: &v1.Agent{Id: "a2", Name: "a2"}, Instances: []*v1.Instance{{Name: "big", Agent: "a2",
		Labels: map[string]string{"env": "auto"},
		Capabilities: &v1.Capabilities{Flavor: "mariadb", Version: "10.11.6", DataBytes: 12 << 30, BinlogEnabled: true,
			Datadir: "/var/lib/mysql", Filesystem: v1.Filesystem_FILESYSTEM_BTRFS, SnapshotFreeBytes: 40 << 30, StorageReachable: true}}}}
	f.must(&v1.Command{Cmd: &v1.Command_RegisterAgent{RegisterAgent: reg}})
	f.applyYAML(`name: portable
selector: env in (auto, dev)
portable: true
history: true
backups:
  - schedule: "@every 1m"
`)
	s := New(Config{Clock: clock, DefaultRepo: "file:///repo", LogicalBelow: 1 << 30}, f, f)
	s.Recompute()
	clock.add(time.Minute + 7*time.Second)
	if res := s.Tick(context.Background()); res.Submitted != 2 || len(res.Errors) > 0 {
		t.Fatalf("tick: %+v", res)
	}
	for _, j := range jobsOf(f, v1.JobKind_JOB_KIND_BACKUP) {
		p := j.GetBackup()
		if p.GetEngine() != "logical" || !strings.Contains(p.GetEngineReason(), selection.PortableReason) || len(p.GetFallbackEngines()) != 0 || !p.GetHistory() {
			t.Errorf("instance %s: engine %q, reason %q, fallbacks %v, history %v", j.GetInstance(), p.GetEngine(), p.GetEngineReason(), p.GetFallbackEngines(), p.GetHistory())
		}
	}
	// Without portable the same capabilities would run snapshot.
	d, err := selection.Decide(reg.GetInstances()[0].GetCapabilities(), selection.Preferences{SmallBytes: 1 << 30})
	if err != nil || d.Chosen() != "snapshot" {
		t.Fatalf("without portable: %v %v", d, err)
	}
}

// TestStatusEngine: a schedule naming an engine the instance's probe
// refuses makes the instance unmet with explain's reason; an instance not
// probed yet and an auto schedule are no such verdict.
func TestStatusEngine(t *testing.T) {
	f, clock := newEnv(t)
	reg := &v1.RegisterAgent{Agent: &v1.Agent{Id: "a2", Name: "a2"}, Instances: []*v1.Instance{{Name: "plain", Agent: "a2",
		Labels: map[string]string{"env": "eng"},
		Capabilities: &v1.Capabilities{Flavor: "mariadb", Version: "10.11.6", DataBytes: 12 << 30, BinlogEnabled: true,
			Datadir: "/var/lib/mysql", Filesystem: v1.Filesystem_FILESYSTEM_EXT4, StorageReachable: true}}}}
	f.must(&v1.Command{Cmd: &v1.Command_RegisterAgent{RegisterAgent: reg}})
	f.applyYAML(`name: snap
selector: env in (eng, dev)
backups:
  - schedule: "@every 1m"
    engine: snapshot
  - schedule: "@every 1h"
`)
	clock.add(time.Second)
	st := Evaluate(f.Read(), StatusParams{Now: clock.Now()})
	reasons := map[string]string{}
	for _, in := range st[0].GetInstances() {
		reasons[in.GetInstance()] = strings.Join(in.GetReasons(), "\n")
	}
	want := `engine: schedule 0 "@every 1m" names snapshot, which plain cannot run: snapshot: datadir /var/lib/mysql is on ext4, not on Btrfs, LVM or ZFS (tidemark engines explain plain --policy snap)`
	if reasons["plain"] != want {
		t.Errorf("plain:\n got %q\nwant %q", reasons["plain"], want)
	}
	if r, ok := reasons["dev1"]; !ok || r != "" {
		t.Errorf("dev1 (not probed): %q", reasons["dev1"])
	}
}

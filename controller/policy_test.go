package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/controller/policy"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// testClock is a settable clock for an in-process controller's scheduler.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *testClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// hookSink is an httptest webhook receiver that fails its first call, so
// the sender's retry is exercised.
type hookSink struct {
	mu     sync.Mutex
	calls  int
	alerts []controller.Alert
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.calls == 1 {
		http.Error(w, "not yet", http.StatusServiceUnavailable)
		return
	}
	var a controller.Alert
	if err := json.NewDecoder(r.Body).Decode(&a); err != nil || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	h.alerts = append(h.alerts, a)
}

func (h *hookSink) all() []controller.Alert {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.alerts)
}

func (h *hookSink) find(kind, instance string) *controller.Alert {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range h.alerts {
		if a.Kind == kind && a.Instance == instance {
			return &a
		}
	}
	return nil
}

// TestPolicies (in-process, fake clock): bad files are refused with the
// line and nothing is half-applied; conflicts and unusable repositories
// are refused; dry-run applies nothing; versions; the scheduler submits
// the runs of the selected instances only, with derived ids; status shows
// a failed run; a webhook gets the failure (after one retry).
func TestPolicies(t *testing.T) {
	clock := &testClock{t: time.Now().UTC().Truncate(time.Minute).Add(-time.Hour)}
	sink := &hookSink{}
	hook := httptest.NewServer(sink)
	t.Cleanup(hook.Close)
	srv, c := startInProcess(t, func(cfg *controller.Config) {
		cfg.Clock = clock
		cfg.ScheduleInterval = 50 * time.Millisecond
		cfg.StatusInterval = 100 * time.Millisecond
		cfg.Webhooks = []string{hook.URL}
	})
	ctx := context.Background()
	var agents []*fakeAgent
	for name, labels := range map[string]map[string]string{
		"db1": {"env": "prod", "dc": "a"}, "db2": {"env": "prod", "dc": "b"}, "db3": {"env": "dev"},
	} {
		a, err := connectAgentLabeled(t, []string{srv.Addr()}, name, labels)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.close)
		agents = append(agents, a)
	}
	agent := func(name string) *fakeAgent {
		for _, a := range agents {
			if a.name == name {
				return a
			}
		}
		return nil
	}
	apply := func(doc string, dry bool) (*v1.ApplyPoliciesResponse, error) {
		return c.Control.ApplyPolicies(ctx, &v1.ApplyPoliciesRequest{Yaml: doc, FileName: "p.yaml", DryRun: dry})
	}
	noPolicies := func(when string) {
		t.Helper()
		l, err := c.Control.ListPolicies(ctx, &v1.ListPoliciesRequest{})
		if err != nil || len(l.GetPolicies()) != 0 {
			t.Fatalf("%s: policies %v, %v", when, l.GetPolicies(), err)
		}
	}

	// A file of three whose third is bad: none applied, the line named.
	_, err := apply(`name: a
selector: env=prod
binlog: {enabled: true}
---
name: b
selector: env=dev
binlog: {enabled: true}
---
name: c
selector: env=prod
backups:
  - schedule: "*/5 * * *"
`, false)
	wantCode(t, err, codes.InvalidArgument, `p.yaml:12: policy c: backups.0.schedule: schedule "*/5 * * *"`)
	noPolicies("after a bad file")
	_, err = apply("name: a\nselector: env=prod\nbinlog: {enabled: true}\ncolour: blue\n", false)
	wantCode(t, err, codes.InvalidArgument, "p.yaml: document 1: line 4: unknown key colour")
	// Two policies giving db1 and db2 backups at one priority.
	_, err = apply(`name: daily
selector: env=prod
backups: [{schedule: "@daily"}]
---
name: hourly
selector: dc in (a,b)
backups: [{schedule: "@hourly"}]
`, false)
	wantCode(t, err, codes.InvalidArgument, "p.yaml:2: policy daily: selector: instance db1 is also selected by policy hourly, both with backups at priority 0")
	noPolicies("after a conflict")
	// A repository the controller cannot use.
	empty := t.TempDir()
	_, err = apply(fmt.Sprintf("name: a\nselector: env=prod\nbinlog: {enabled: true}\nrepository: file://%s\n", empty), false)
	wantCode(t, err, codes.FailedPrecondition, "p.yaml:4: policy a: repository: file://"+empty+" holds no Tidemark repository")
	noPolicies("after a bad repository")

	repo := t.TempDir()
	if err := os.WriteFile(filepath.Join(repo, "config"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := fmt.Sprintf(`name: prod
selector: env=prod
repository: file://%s
backups:
  - schedule: "@every 1m"
    catch_up: 1m
`, repo)
	dry, err := apply(good, true)
	if err != nil || dry.GetApplied() || len(dry.GetChanges()) != 1 || dry.GetChanges()[0].GetAction() != "create" ||
		!slices.Equal(dry.GetChanges()[0].GetInstances(), []string{"db1", "db2"}) || !strings.Contains(dry.GetChanges()[0].GetDiff(), "+ name: prod") {
		t.Fatalf("dry run: %v, %v", dry, err)
	}
	noPolicies("after a dry run")
	// Applied at the fake clock's time: the first run is a minute later.
	if r, err := apply(good, false); err != nil || !r.GetApplied() {
		t.Fatalf("apply: %v, %v", r, err)
	}
	if r, err := apply(good, false); err != nil || r.GetChanges()[0].GetAction() != "unchanged" || r.GetChanges()[0].GetVersion() != 1 {
		t.Fatalf("apply again: %v, %v", r, err)
	}
	upd := strings.Replace(good, "catch_up: 1m", "catch_up: 2m", 1)
	if r, err := apply(upd, true); err != nil || !strings.Contains(r.GetChanges()[0].GetDiff(), "-       catch_up: 1m\n+       catch_up: 2m") {
		t.Fatalf("dry-run diff: %v, %v", r.GetChanges(), err)
	}
	if _, err := apply(upd, false); err != nil {
		t.Fatal(err)
	}
	got, err := c.Control.GetPolicy(ctx, &v1.GetPolicyRequest{Name: "prod"})
	if err != nil || got.GetPolicy().GetVersion() != 2 || got.GetPolicy().GetPrevious().GetVersion() != 1 ||
		got.GetPolicy().GetPrevious().GetSpec().GetBackups()[0].GetCatchUp().AsDuration() != time.Minute {
		t.Fatalf("policy after an update: %v, %v", got, err)
	}
	applied := got.GetPolicy().GetCreatedAt().AsTime()
	if got.GetPolicy().GetUpdatedBy() != "user admin (admin)" || !slices.Equal(got.GetInstances(), []string{"db1", "db2"}) {
		t.Fatalf("policy record: by %q, instances %v", got.GetPolicy().GetUpdatedBy(), got.GetInstances())
	}
	// A policy that selects nothing is applied, with a warning.
	if r, err := apply("name: empty\nselector: env=nowhere\nbinlog: {enabled: true}\n", false); err != nil || !r.GetApplied() ||
		len(r.GetChanges()[0].GetWarnings()) != 1 || !strings.Contains(r.GetChanges()[0].GetWarnings()[0], `p.yaml:2: policy empty: selector "env=nowhere" selects no instance now`) {
		t.Fatalf("a policy selecting nothing: %v, %v", r, err)
	}
	if _, err := c.Control.DeletePolicy(ctx, &v1.DeletePolicyRequest{Name: "empty"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Control.DeletePolicy(ctx, &v1.DeletePolicyRequest{Name: "empty"})
	wantCode(t, err, codes.NotFound, `policy "empty" not found`)

	// Due: a minute after the apply, plus at most 6s of spread.
	clock.set(applied.Add(time.Minute + 7*time.Second))
	want := map[string]string{}
	for _, in := range []string{"db1", "db2"} {
		want[in] = policy.RunID("prod", 0, in, applied.Add(time.Minute))
	}
	for _, in := range []string{"db1", "db2"} {
		asg := agent(in).assignment(testenv.Wait(10 * time.Second))
		j := asg.GetJob()
		if j.GetId() != want[in] || j.GetPolicy() != "prod" || !j.GetScheduledFor().AsTime().Equal(applied.Add(time.Minute)) ||
			j.GetBackup().GetRepositoryUri() != "file://"+repo {
			t.Fatalf("%s assigned %v", in, j)
		}
		if in == "db1" {
			seq := agent(in).send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{
				JobId: j.GetId(), Lease: asg.GetLease(), Error: "disk full"}}})
			if ans := agent(in).answer(seq); ans.GetAck() == nil {
				t.Fatalf("failure report answered %v", ans)
			}
		} else if ans := agent(in).succeed(asg, asg.GetLease()); ans.GetAck() == nil {
			t.Fatalf("result answered %v", ans)
		}
	}
	if _, err := agent("db3").wait(300*time.Millisecond, func(m *v1.ControllerMessage) bool { return m.GetAssignJob() != nil }); err == nil {
		t.Fatal("db3 (env=dev) got a scheduled job")
	}
	// The job failed for good after its attempts: one job per run, and the
	// backup of db2 carries its policy and scheduled time.
	waitJobState(t, c, want["db1"], v1.JobState_JOB_STATE_FAILED, testenv.Wait(10*time.Second))
	bs, err := c.Control.ListBackups(ctx, &v1.ListBackupsRequest{Instance: "db2"})
	if err != nil || len(bs.GetBackups()) != 1 || bs.GetBackups()[0].GetPolicy() != "prod" ||
		!bs.GetBackups()[0].GetScheduledFor().AsTime().Equal(applied.Add(time.Minute)) {
		t.Fatalf("backups of db2: %v, %v", bs, err)
	}
	testenv.WaitFor(t, "a job_failed webhook for db1", testenv.Wait(10*time.Second), func() error {
		if a := sink.find(controller.AlertJobFailed, "db1"); a == nil || !strings.Contains(a.Message, "disk full") || a.Job != want["db1"] {
			return fmt.Errorf("alerts so far: %+v", sink.all())
		}
		return nil
	})
	st, err := c.Control.GetPolicyStatus(ctx, &v1.GetPolicyStatusRequest{})
	if err != nil || len(st.GetPolicies()) != 1 || st.GetPolicies()[0].GetUnmet() != 1 {
		t.Fatalf("status: %v, %v", st, err)
	}
	for _, in := range st.GetPolicies()[0].GetInstances() {
		if in.GetInstance() == "db1" && (in.GetMet() || !strings.Contains(strings.Join(in.GetReasons(), ";"), "last scheduled backup failed: job "+want["db1"])) {
			t.Fatalf("db1 status %v", in)
		}
	}
	sch, err := c.Control.GetSchedule(ctx, &v1.GetScheduleRequest{Instance: "db2"})
	if err != nil || len(sch.GetRuns()) != 1 || !sch.GetRuns()[0].GetScheduledFor().AsTime().Equal(applied.Add(2*time.Minute)) ||
		sch.GetRuns()[0].GetJobId() != policy.RunID("prod", 0, "db2", applied.Add(2*time.Minute)) {
		t.Fatalf("schedule of db2: %v, %v", sch, err)
	}
	// Deleted: no more runs.
	if _, err := c.Control.DeletePolicy(ctx, &v1.DeletePolicyRequest{Name: "prod"}); err != nil {
		t.Fatal(err)
	}
	clock.set(applied.Add(3 * time.Minute))
	if _, err := agent("db2").wait(500*time.Millisecond, func(m *v1.ControllerMessage) bool { return m.GetAssignJob() != nil }); err == nil {
		t.Fatal("a deleted policy scheduled a run")
	}
}

// TestPolicyStreams (in-process): a policy with binlog on starts one
// stream per instance and one per `cluster` group (on its first member);
// a stream whose RPO passes the target and whose runs fail raises
// rpo_breach, binlog_stream_failing and policy_unmet webhooks and shows in
// status; a gap the group's stream reports (with every heartbeat) raises
// one binlog_gap webhook with its range and makes the group unmet until a
// backup of a member at or after the gap's end completes (one before it
// does not count); a stream stopped by hand stays stopped and status says
// so.
func TestPolicyStreams(t *testing.T) {
	sink := &hookSink{}
	hook := httptest.NewServer(sink)
	t.Cleanup(hook.Close)
	srv, c := startInProcess(t, func(cfg *controller.Config) {
		cfg.ScheduleInterval = 50 * time.Millisecond
		cfg.StatusInterval = 100 * time.Millisecond
		cfg.Webhooks = []string{hook.URL}
	})
	ctx := context.Background()
	agents := map[string]*fakeAgent{}
	for name, labels := range map[string]map[string]string{
		"db1": {"env": "prod"}, "pg-a": {"env": "prod", "cluster": "pg"}, "pg-b": {"env": "prod", "cluster": "pg"}, "dev1": {"env": "dev"},
	} {
		a, err := connectAgentLabeled(t, []string{srv.Addr()}, name, labels)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.close)
		agents[name] = a
	}
	if _, err := c.Control.ApplyPolicies(ctx, &v1.ApplyPoliciesRequest{FileName: "wal.yaml",
		Yaml: "name: wal\nselector: env=prod\nbinlog: {enabled: true, flush: 500ms, rpo_target: 30s}\n"}); err != nil {
		t.Fatal(err)
	}
	streams := map[string]*v1.JobAssignment{}
	for _, name := range []string{"db1", "pg-a"} {
		asg := agents[name].assignment(testenv.Wait(10 * time.Second))
		if asg.GetJob().GetKind() != v1.JobKind_JOB_KIND_BINLOG_STREAM || asg.GetJob().GetPolicy() != "wal" ||
			asg.GetJob().GetBinlogStream().GetFlush().AsDuration() != 500*time.Millisecond {
			t.Fatalf("%s assigned %v", name, asg.GetJob())
		}
		streams[name] = asg
	}
	if g := streams["pg-a"].GetJob().GetBinlogStream(); g.GetCluster() != "pg" || len(g.GetSources()) != 2 {
		t.Fatalf("group stream %v", g)
	}
	for _, name := range []string{"pg-b", "dev1"} {
		if m, err := agents[name].wait(300*time.Millisecond, func(m *v1.ControllerMessage) bool { return m.GetAssignJob() != nil }); err == nil {
			t.Fatalf("%s got %v", name, m.GetAssignJob().GetJob())
		}
	}
	now := time.Now()
	agents["pg-a"].setStream(streams["pg-a"].GetJob().GetId(), &v1.StreamReport{Watermark: &v1.StreamWatermark{
		Instance: "pg-a", File: "bin.000001", Position: 100, LastEventTime: timestamppb.New(now), DurableAt: timestamppb.New(now)}})
	agents["db1"].setStream(streams["db1"].GetJob().GetId(), &v1.StreamReport{Watermark: &v1.StreamWatermark{
		Instance: "db1", File: "bin.000001", Position: 100, LastEventTime: timestamppb.New(now.Add(-2 * time.Minute)), DurableAt: timestamppb.New(now)},
		Failures: 3, LastError: "connection reset by peer", LastErrorAt: timestamppb.New(now)})
	testenv.WaitFor(t, "rpo_breach, binlog_stream_failing and policy_unmet alerts for db1", testenv.Wait(10*time.Second), func() error {
		for _, k := range []string{controller.AlertRPOBreach, controller.AlertStreamFailing, controller.AlertPolicyUnmet} {
			if sink.find(k, "db1") == nil {
				return fmt.Errorf("no %s yet; alerts %+v", k, sink.all())
			}
		}
		return nil
	})
	if a := sink.find(controller.AlertStreamFailing, "db1"); !strings.Contains(a.Message, "connection reset by peer") {
		t.Fatalf("stream failing alert %+v", a)
	}
	if a := sink.find(controller.AlertBinlogGap, "db1"); a != nil {
		t.Fatalf("a failing stream was alerted as a gap: %+v", a)
	}
	st, err := c.Control.GetPolicyStatus(ctx, &v1.GetPolicyStatusRequest{Policy: "wal"})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range st.GetPolicies()[0].GetInstances() {
		why := strings.Join(in.GetReasons(), "; ")
		switch in.GetInstance() {
		case "db1":
			if in.GetMet() || !strings.Contains(why, "RPO 2m0s above the target 30s") || !strings.Contains(why, "binlog stream failing (3 failed run(s) in a row)") {
				t.Errorf("db1: %v", in)
			}
		case "pg-a", "pg-b":
			if !in.GetMet() || in.GetRpo() == nil {
				t.Errorf("%s (covered by the group's stream): %v", in.GetInstance(), in)
			}
		default:
			t.Errorf("status lists %s", in.GetInstance())
		}
	}
	testPolicyStreamGap(t, c, sink, agents, streams["pg-a"].GetJob(), now)
	// Stopped by hand: stays stopped.
	if _, err := c.Control.StopBinlogStream(ctx, &v1.StopBinlogStreamRequest{Instance: "db1"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // ten scheduler ticks
	js, err := c.Control.ListJobs(ctx, &v1.ListJobsRequest{Instance: "db1", States: []v1.JobState{v1.JobState_JOB_STATE_PENDING, v1.JobState_JOB_STATE_ASSIGNED, v1.JobState_JOB_STATE_RUNNING}})
	if err != nil || len(js.GetJobs()) != 0 {
		t.Fatalf("db1's stream came back: %v, %v", js, err)
	}
	st, err = c.Control.GetPolicyStatus(ctx, &v1.GetPolicyStatusRequest{Policy: "wal"})
	if err != nil {
		t.Fatal(err)
	}
	if in := st.GetPolicies()[0].GetInstances()[0]; in.GetInstance() != "db1" || !strings.Contains(strings.Join(in.GetReasons(), ";"), "was stopped (binlog stream stopped)") {
		t.Fatalf("db1 after a stop: %v", in)
	}
}

func TestPolicyConfig(t *testing.T) {
	cfg := controller.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Webhooks = []string{"https://alerts.example/hook", "ftp://alerts.example/x", "http://"}
	cfg.ScheduleInterval = 0
	err := cfg.Validate()
	for _, want := range []string{"--webhook ftp://alerts.example/x: want an http:// or https:// URL", "--webhook http://: no host", "--schedule-interval 0s: must be at least 10ms"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v; want %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "alerts.example/hook") {
		t.Errorf("a good URL refused: %v", err)
	}
}

// testPolicyStreamGap is TestPolicyStreams' gap part, on the group pg
// (pg-a streams it, pg-b is the other member).
func testPolicyStreamGap(t *testing.T, c *client.Conn, sink *hookSink, agents map[string]*fakeAgent, stream *v1.Job, now time.Time) {
	t.Helper()
	ctx := context.Background()
	gap := &v1.BinlogGap{After: "GTID 0-1-20 (bin.000001:900)", Before: "GTID 0-1-30 (bin.000003:4)", AfterGtid: "0-1-20", BeforeGtid: "0-1-30",
		FromTime: timestamppb.New(now.Add(-time.Hour)), ToTime: timestamppb.New(now.Add(-50 * time.Minute)),
		DetectedAt: timestamppb.New(now), Reason: "server 10.0.0.1:3306 (server_id 1) no longer has the binlog after the archive's end (purged before it was archived)"}
	agents["pg-a"].setStream(stream.GetId(), &v1.StreamReport{Watermark: &v1.StreamWatermark{
		Instance: "pg-a", Gtid: "0-1-35", File: "bin.000003", Position: 700, LastEventTime: timestamppb.New(now), DurableAt: timestamppb.New(now)},
		Gaps: []*v1.BinlogGap{gap}})
	var alert *controller.Alert
	testenv.WaitFor(t, "a binlog_gap alert for pg-a", testenv.Wait(10*time.Second), func() error {
		if alert = sink.find(controller.AlertBinlogGap, "pg-a"); alert == nil {
			return fmt.Errorf("none yet; alerts %+v", sink.all())
		}
		return nil
	})
	if g := alert.Gap; g == nil || g.After != gap.GetAfter() || g.Before != gap.GetBefore() || g.AfterGTID != "0-1-20" || g.BeforeGTID != "0-1-30" ||
		g.FromTime == nil || !g.FromTime.Equal(gap.GetFromTime().AsTime()) || g.DetectedAt == nil || !strings.Contains(g.Reason, "purged") ||
		!strings.Contains(alert.Message, "binlog after GTID 0-1-20 (bin.000001:900) up to GTID 0-1-30 (bin.000003:4) is not archived") {
		t.Fatalf("binlog_gap alert %+v (gap %+v)", alert, alert.Gap)
	}
	unmetWhy := func(name string) (bool, string) {
		st, err := c.Control.GetPolicyStatus(ctx, &v1.GetPolicyStatusRequest{Policy: "wal"})
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range st.GetPolicies()[0].GetInstances() {
			if in.GetInstance() == name {
				return in.GetMet(), strings.Join(in.GetReasons(), "; ")
			}
		}
		t.Fatalf("status does not list %s", name)
		return false, ""
	}
	for _, name := range []string{"pg-a", "pg-b"} {
		met, why := unmetWhy(name)
		if met || !strings.Contains(why, "binlog gap in stream pg-a: binlog after GTID 0-1-20 (bin.000001:900) up to GTID 0-1-30 (bin.000003:4) is not archived") ||
			!strings.Contains(why, "until a full backup taken after it completes") {
			t.Fatalf("%s with a gap: met %v, %s", name, met, why)
		}
	}
	bs, err := c.Control.GetBinlogStatus(ctx, &v1.GetBinlogStatusRequest{Instance: "pg-b"})
	if err != nil {
		t.Fatal(err)
	}
	if gs := bs.GetStream().GetGaps(); len(gs) != 1 || gs[0].GetRecordedAt() == nil || gs[0].GetBefore() != gap.GetBefore() {
		t.Fatalf("binlog status gaps %v", gs)
	}
	testenv.WaitFor(t, "the gap marked alerted", testenv.Wait(5*time.Second), func() error {
		bs, err := c.Control.GetBinlogStatus(ctx, &v1.GetBinlogStatusRequest{Instance: "pg-a"})
		if err != nil {
			return err
		}
		if gs := bs.GetStream().GetGaps(); len(gs) != 1 || gs[0].GetAlertedAt() == nil {
			return fmt.Errorf("gaps %v", gs)
		}
		return nil
	})
	// Backups of the other member: one whose position is inside the gap's
	// history (before its end) leaves it unmet, one after the gap meets it.
	backup := func(gtidSet string) {
		job := submitBackup(t, c, "pg-b")
		asg := agents["pg-b"].assignment(testenv.Wait(5 * time.Second))
		bid := asg.GetJob().GetBackup().GetBackupId()
		seq := agents["pg-b"].send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{
			JobId: job.GetId(), Lease: asg.GetLease(), Ok: true, BackupId: bid, ManifestKey: "manifests/" + bid, RepositoryUri: "file:///backups",
			Manifest: &v1.Manifest{BackupId: bid, Instance: "pg-b", Engine: "logical", Fence: asg.GetLease(),
				Consistency: &v1.ConsistencyPoint{BinlogFile: "bin.000003", BinlogPosition: 42, GtidSet: gtidSet, Time: timestamppb.New(now)}},
		}}})
		if ans := agents["pg-b"].answer(seq); ans.GetAck() == nil {
			t.Fatalf("backup result answered %v", ans)
		}
		waitJobState(t, c, job.GetId(), v1.JobState_JOB_STATE_SUCCEEDED, testenv.Wait(5*time.Second))
	}
	backup("0-1-25")
	if met, why := unmetWhy("pg-b"); met || !strings.Contains(why, "binlog gap in stream pg-a") {
		t.Fatalf("pg-b after a backup inside the gap: met %v, %s", met, why)
	}
	backup("0-1-31")
	for _, name := range []string{"pg-a", "pg-b"} {
		if met, why := unmetWhy(name); !met {
			t.Fatalf("%s after a backup past the gap: unmet: %s", name, why)
		}
	}
	// Reported with every heartbeat, alerted once.
	time.Sleep(500 * time.Millisecond) // five status intervals
	n := 0
	for _, a := range sink.all() {
		if a.Kind == controller.AlertBinlogGap {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d binlog_gap alerts, want 1: %+v", n, sink.all())
	}
}

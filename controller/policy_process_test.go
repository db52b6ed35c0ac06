package controller_test

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

	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// answeringAgent runs a fake agent that answers every assignment at once
// with answer's report (nil: the job keeps running, listed in the
// heartbeats, until cancelled), and registers again (with whichever node
// leads) whenever its session ends, until ctx ends.
func answeringAgent(ctx context.Context, t *testing.T, wg *sync.WaitGroup, addrs []string, name string, labels map[string]string,
	answer func(*v1.JobAssignment) *v1.JobResultReport) {
	wg.Go(func() {
		for ctx.Err() == nil {
			a, err := connectAgentLabeled(t, addrs, name, labels)
			if err != nil {
				continue
			}
			for ctx.Err() == nil {
				m, err := a.wait(200*time.Millisecond, func(m *v1.ControllerMessage) bool { return m.GetAssignJob() != nil })
				if err != nil {
					if strings.Contains(err.Error(), "stream ended") {
						break
					}
					continue
				}
				asg := m.GetAssignJob()
				rep := answer(asg)
				if rep == nil {
					a.setRunning(asg.GetJob().GetId(), asg.GetLease())
					continue
				}
				a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: rep}})
			}
			a.close()
		}
	})
}

// busyAgent is an answeringAgent that completes every backup it is
// assigned and keeps every binlog stream running.
func busyAgent(ctx context.Context, t *testing.T, wg *sync.WaitGroup, addrs []string, name string, labels map[string]string) {
	answeringAgent(ctx, t, wg, addrs, name, labels, func(asg *v1.JobAssignment) *v1.JobResultReport {
		if asg.GetJob().GetKind() == v1.JobKind_JOB_KIND_BINLOG_STREAM {
			return nil // runs until cancelled
		}
		bid := asg.GetJob().GetBackup().GetBackupId()
		return &v1.JobResultReport{
			JobId: asg.GetJob().GetId(), Lease: asg.GetLease(), Ok: true, BackupId: bid, ManifestKey: "manifests/" + bid,
			RepositoryUri: "file:///backups",
			Manifest:      &v1.Manifest{BackupId: bid, Instance: name, Engine: "logical", Fence: asg.GetLease()},
		}
	})
}

// TestScheduleFailover: three controller processes, agents of several
// labels; a policy applied with the CLI selects the right instances and
// its `@every 2s` runs start on time; the leader is killed (-9) right as a
// run is due, three times: afterwards every scheduled (policy, instance,
// time) has exactly one job in the catalog, and every scheduled time from
// the first to the last has a job or a skip record.
func TestScheduleFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("three controller processes and three leader kills: not in -short")
	}
	start := time.Now()
	step := func(what string) { t.Logf("%6.2fs %s", time.Since(start).Seconds(), what) }
	c1, c2, c3 := newNode(t, "c1"), newNode(t, "c2"), newNode(t, "c3")
	fast := []string{"--schedule-interval", "100ms"}
	c1.start(true, append([]string{"--bootstrap"}, fast...)...)
	c2.start(true, append([]string{"--join", c1.grpcAddr}, fast...)...)
	c3.start(true, append([]string{"--join", c1.grpcAddr + "," + c2.grpcAddr}, fast...)...)
	all := []*node{c1, c2, c3}
	leader := leaderOf(t, all, 3, testenv.Wait(15*time.Second))
	step("leader " + leader.id)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	addrs := addrsOf(all...)
	for name, labels := range map[string]map[string]string{
		"db1": {"env": "prod", "dc": "a"}, "db2": {"env": "prod", "dc": "b"},
		"db3": {"env": "dev", "dc": "a"}, "db4": {"env": "prod", "dc": "a", "role": "scratch"},
	} {
		busyAgent(ctx, t, &wg, addrs, name, labels)
	}
	testenv.WaitFor(t, "four agents", testenv.Wait(15*time.Second), func() error {
		r, err := leader.conn.Control.ListAgents(ctx, &v1.ListAgentsRequest{})
		if err != nil || len(r.GetAgents()) != 4 {
			return fmt.Errorf("%d agents, %w", len(r.GetAgents()), err)
		}
		return nil
	})

	admin := testenv.Args(testCA(t).Files(t, testenv.Admin()))
	cli := func(args ...string) (string, string, int) {
		return run(t, 30*time.Second, append(append(args, "--controller", strings.Join(addrs, ",")), admin...)...)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: a\nselector: env=prod\nbinlog: {enabled: true}\n---\nname: b\nselector: env in (prod\nbinlog: {enabled: true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cli("policy", "apply", "-f", bad); code == 0 || !strings.Contains(errOut, "bad.yaml:6: policy b: selector:") {
		t.Fatalf("bad file: exit %d: %s", code, errOut)
	}
	good := filepath.Join(dir, "prod.yaml")
	if err := os.WriteFile(good, []byte("name: prod\nselector: env=prod, role!=scratch\nbackups:\n  - schedule: \"@every 2s\"\n    catch_up: 1m\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := cli("policy", "apply", "-f", good)
	if code != 0 || !strings.Contains(out, "policy prod created (version 1); selects 2 instance(s): db1, db2") {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	step("policy applied")

	// scheduledJobs is the catalog's jobs of the policy, read through the
	// leader.
	scheduledJobs := func() []*v1.Job {
		var js []*v1.Job
		testenv.WaitFor(t, "the jobs", testenv.Wait(15*time.Second), func() error {
			for _, n := range all {
				if n.Exited() {
					continue
				}
				r, err := n.conn.Control.ListJobs(ctx, &v1.ListJobsRequest{Consistent: true})
				if err != nil {
					continue
				}
				js = slices.DeleteFunc(r.GetJobs(), func(j *v1.Job) bool { return j.GetPolicy() != "prod" })
				return nil
			}
			return fmt.Errorf("no node answers a consistent read")
		})
		return js
	}
	// On time: the first runs start within a second of being due (spread
	// is at most 200ms for a 2s period).
	testenv.WaitFor(t, "runs on db1 and db2", testenv.Wait(10*time.Second), func() error {
		done := map[string]int{}
		for _, j := range scheduledJobs() {
			if j.GetState() == v1.JobState_JOB_STATE_SUCCEEDED {
				done[j.GetInstance()]++
			}
		}
		if done["db1"] < 2 || done["db2"] < 2 {
			return fmt.Errorf("succeeded runs %v", done)
		}
		return nil
	})
	for _, j := range scheduledJobs() {
		if lag := j.GetCreatedAt().AsTime().Sub(j.GetScheduledFor().AsTime()); lag > testenv.Wait(time.Second) && j.GetCreatedAt().AsTime().Before(time.Now().Add(-time.Second)) {
			t.Errorf("job %s submitted %s after its scheduled time", j.GetId(), lag)
		}
	}
	step("runs on time")

	for round := 1; round <= 3; round++ {
		var last time.Time
		for _, j := range scheduledJobs() {
			if t := j.GetScheduledFor().AsTime(); t.After(last) {
				last = t
			}
		}
		// Kill the leader 30ms before the next run is due.
		next := last.Add(2 * time.Second)
		for next.Before(time.Now()) {
			next = next.Add(2 * time.Second)
		}
		time.Sleep(time.Until(next.Add(-30 * time.Millisecond)))
		leader = leaderOf(t, all, 3, testenv.Wait(10*time.Second))
		leader.Kill()
		step(fmt.Sprintf("round %d: killed leader %s at the run due %s", round, leader.id, next.Format("15:04:05.000")))
		live := slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n == leader })
		nl := leaderOf(t, live, 3, testenv.Wait(15*time.Second))
		step("new leader " + nl.id)
		leader.start(false)
		leaderOf(t, all, 3, testenv.Wait(15*time.Second))
		time.Sleep(3 * time.Second) // a run or two under the new leader
	}
	step("three leader kills done")

	js := scheduledJobs()
	byRun := map[string][]string{}
	times := map[string][]time.Time{}
	for _, j := range js {
		if j.GetInstance() != "db1" && j.GetInstance() != "db2" {
			t.Errorf("job %s on %s, which the policy does not select", j.GetId(), j.GetInstance())
		}
		k := j.GetRunKey() + "@" + j.GetScheduledFor().AsTime().Format(time.RFC3339Nano)
		byRun[k] = append(byRun[k], j.GetId())
		times[j.GetRunKey()] = append(times[j.GetRunKey()], j.GetScheduledFor().AsTime())
	}
	for k, ids := range byRun {
		if len(ids) != 1 {
			t.Errorf("run %s has %d jobs: %v", k, len(ids), ids)
		}
	}
	// No hole: each 2s step from the first run to the last has a job or is
	// inside a skip record.
	sch, err := nlOrAny(all).conn.Control.GetSchedule(ctx, &v1.GetScheduleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for key, ts := range times {
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		for i := 1; i < len(ts); i++ {
			for gap := ts[i-1].Add(2 * time.Second); gap.Before(ts[i]); gap = gap.Add(2 * time.Second) {
				if !slices.ContainsFunc(sch.GetSkipped(), func(s *v1.ScheduleSkip) bool {
					return s.GetRunKey() == key && !gap.Before(s.GetFirst().AsTime()) && !gap.After(s.GetLast().AsTime())
				}) {
					t.Errorf("%s: the run at %s has neither a job nor a skip record", key, gap.Format(time.RFC3339Nano))
				}
			}
		}
		t.Logf("%s: %d runs from %s to %s", key, len(ts), ts[0].Format("15:04:05"), ts[len(ts)-1].Format("15:04:05"))
	}
	for _, s := range sch.GetSkipped() {
		t.Logf("skipped: %s %d run(s) %s..%s: %s", s.GetRunKey(), s.GetCount(), s.GetFirst().AsTime().Format("15:04:05"), s.GetLast().AsTime().Format("15:04:05"), s.GetReason())
	}
	if len(times["db1"]) < 8 || len(times["db2"]) < 8 {
		t.Fatalf("runs: db1 %d, db2 %d; want at least 8 each over the test", len(times["db1"]), len(times["db2"]))
	}
	out, errOut, code = cli("schedule", "-o", "json")
	if code != 0 || !strings.Contains(out, `"run_key":"db1"`) || !strings.Contains(out, `"scheduled_for":"`) {
		t.Fatalf("schedule -o json: exit %d: %s%s", code, out, errOut)
	}
	out, errOut, code = cli("jobs", "-o", "json")
	if code != 0 || !strings.Contains(out, `"policy":"prod"`) || !strings.Contains(out, `"scheduled_for":"`) {
		t.Fatalf("jobs -o json: exit %d: %s%s", code, out, errOut)
	}
	out, errOut, code = cli("policies", "-o", "json")
	if code != 0 || !strings.Contains(out, `"name":"prod"`) || !strings.Contains(out, `"cron":"@every 2s"`) {
		t.Fatalf("policies -o json: exit %d: %s%s", code, out, errOut)
	}
	out, errOut, code = cli("policy", "show", "prod")
	if code != 0 || !strings.Contains(out, "policy prod, version 1") || !strings.Contains(out, "selects 2 instance(s): db1, db2") {
		t.Fatalf("policy show: exit %d: %s%s", code, out, errOut)
	}
	out, _, code = cli("status")
	if code != 0 || !strings.Contains(out, "policy prod (version 1)") {
		t.Fatalf("status: exit %d: %s", code, out)
	}
}

// nlOrAny returns a live node (GetSchedule forwards to the leader).
func nlOrAny(nodes []*node) *node {
	for _, n := range nodes {
		if !n.Exited() {
			return n
		}
	}
	return nodes[0]
}

// TestScheduleClockProcess: a controller process on a test clock
// (--test-clock-file). A run falls due and is submitted; the node is
// killed -9 and the clock moved 10 minutes on; restarted, the node
// recomputes from its own Raft log and snapshot: the nine runs missed while
// it was down are one skip record (superseded) with the reason, the latest,
// within the 2-minute catch-up window, is submitted late, and nothing is
// submitted twice.
func TestScheduleClockProcess(t *testing.T) {
	clockFile := filepath.Join(t.TempDir(), "clock")
	t0 := time.Now().UTC().Truncate(time.Minute).Add(-24 * time.Hour)
	setClock := func(at time.Time) { writeClock(t, clockFile, at) }
	setClock(t0)
	n := newNode(t, "s1")
	flags := []string{"--test-clock-file", clockFile, "--schedule-interval", "100ms"}
	n.start(true, append([]string{"--bootstrap"}, flags...)...)
	leaderOf(t, []*node{n}, 1, testenv.Wait(10*time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	busyAgent(ctx, t, &wg, []string{n.grpcAddr}, "db1", map[string]string{"env": "prod"})
	testenv.WaitFor(t, "the agent", testenv.Wait(10*time.Second), func() error {
		r, err := n.conn.Control.ListInstances(ctx, &v1.ListInstancesRequest{})
		if err != nil || len(r.GetInstances()) != 1 {
			return fmt.Errorf("instances %v, %w", r.GetInstances(), err)
		}
		return nil
	})
	if _, err := n.conn.Control.ApplyPolicies(ctx, &v1.ApplyPoliciesRequest{FileName: "p.yaml",
		Yaml: "name: p\nselector: env=prod\nbackups:\n  - schedule: \"@every 1m\"\n    catch_up: 2m\n"}); err != nil {
		t.Fatal(err)
	}
	jobs := func() []*v1.Job {
		var out []*v1.Job
		testenv.WaitFor(t, "the jobs", testenv.Wait(10*time.Second), func() error {
			r, err := n.conn.Control.ListJobs(ctx, &v1.ListJobsRequest{})
			out = r.GetJobs()
			return err
		})
		return out
	}
	setClock(t0.Add(time.Minute + 7*time.Second))
	testenv.WaitFor(t, "the first run", testenv.Wait(10*time.Second), func() error {
		if js := jobs(); len(js) != 1 || js[0].GetState() != v1.JobState_JOB_STATE_SUCCEEDED {
			return fmt.Errorf("jobs %v", js)
		}
		return nil
	})
	n.Kill()
	setClock(t0.Add(11*time.Minute + 7*time.Second))
	n.start(false, flags...)
	leaderOf(t, []*node{n}, 1, testenv.Wait(10*time.Second))
	testenv.WaitFor(t, "the run due now", testenv.Wait(15*time.Second), func() error {
		if js := jobs(); len(js) != 2 {
			return fmt.Errorf("%d jobs", len(js))
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // five more ticks: nothing else
	js := jobs()
	if len(js) != 2 || !js[0].GetScheduledFor().AsTime().Equal(t0.Add(11*time.Minute)) {
		t.Fatalf("jobs after the restart: %v", js)
	}
	sch, err := n.conn.Control.GetSchedule(ctx, &v1.GetScheduleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sch.GetSkipped()) != 1 || sch.GetSkipped()[0].GetCount() != 9 || !sch.GetSkipped()[0].GetFirst().AsTime().Equal(t0.Add(2*time.Minute)) ||
		!sch.GetSkipped()[0].GetLast().AsTime().Equal(t0.Add(10*time.Minute)) || !strings.HasPrefix(sch.GetSkipped()[0].GetReason(), "superseded: 9 earlier run(s) were missed") {
		t.Fatalf("skipped %v", sch.GetSkipped())
	}
	if len(sch.GetRuns()) != 1 || !sch.GetRuns()[0].GetScheduledFor().AsTime().Equal(t0.Add(12*time.Minute)) {
		t.Fatalf("next runs %v", sch.GetRuns())
	}
}

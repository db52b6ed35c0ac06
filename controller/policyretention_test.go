package controller_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/policy"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// repoDir is a directory the controller accepts as a repository (it only
// looks for the config object).
func repoDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "config"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	return d
}

// policyAgent answers every assignment of a fake agent until stopped:
// backups complete at the test clock's time, copies succeed unless
// failCopies is set, expiries succeed.
type policyAgent struct {
	a          *fakeAgent
	clk        *testClock
	repo       string
	failCopies atomic.Bool
	mu         sync.Mutex
	copyJobs   map[string][]string // backup id → copy job ids assigned (distinct)
	expireJobs map[string]int      // expire job id → times assigned
}

func (p *policyAgent) serve(ctx context.Context) {
	for ctx.Err() == nil {
		m, err := p.a.wait(100*time.Millisecond, func(m *v1.ControllerMessage) bool { return m.GetAssignJob() != nil })
		if err != nil {
			if strings.HasPrefix(err.Error(), "nothing after") {
				continue
			}
			return
		}
		asg := m.GetAssignJob()
		j := asg.GetJob()
		p.a.setRunning(j.GetId(), asg.GetLease())
		rep := &v1.JobResultReport{JobId: j.GetId(), Lease: asg.GetLease(), Ok: true}
		switch j.GetKind() {
		case v1.JobKind_JOB_KIND_BACKUP:
			bid := j.GetBackup().GetBackupId()
			at := p.clk.Now()
			rep.BackupId, rep.ManifestKey, rep.RepositoryUri = bid, "manifests/"+bid, p.repo
			rep.Manifest = &v1.Manifest{BackupId: bid, Instance: j.GetInstance(), Engine: "logical", Fence: asg.GetLease(),
				StartedAt: timestamppb.New(at.Add(-time.Minute)), FinishedAt: timestamppb.New(at), Consistency: &v1.ConsistencyPoint{Time: timestamppb.New(at)}}
		case v1.JobKind_JOB_KIND_COPY:
			bid := j.GetCopy().GetBackupId()
			p.mu.Lock()
			if !slices.Contains(p.copyJobs[bid], j.GetId()) {
				p.copyJobs[bid] = append(p.copyJobs[bid], j.GetId())
			}
			p.mu.Unlock()
			rep.BackupId = bid
			if p.failCopies.Load() {
				rep.Ok, rep.Error = false, "dial tcp 10.0.0.9:443: connection refused"
			}
		case v1.JobKind_JOB_KIND_EXPIRE:
			p.mu.Lock()
			p.expireJobs[j.GetId()]++
			p.mu.Unlock()
		}
		p.a.send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: rep}})
	}
}

// gfsKeep is an independent statement of the GFS rules the test's policy
// uses: the newest backup of each of the newest n buckets that have one.
func gfsKeep(times []time.Time, n int, key func(time.Time) string) map[time.Time]bool {
	out := map[time.Time]bool{}
	seen := map[string]bool{}
	for _, t := range times { // newest first
		k := key(t)
		if seen[k] {
			continue
		}
		if len(seen) == n {
			break
		}
		seen[k] = true
		out[t] = true
	}
	return out
}

// TestPolicyRetentionAndCopies runs a policy with a daily `@every`
// schedule, GFS retention and a copy repository with its own retention
// over a simulated month on the test clock: the leader keeps exactly the
// GFS set (and the pinned backup, and never the last), copies every
// backup once, applies the copies' retention, and the status says "copy
// behind" while the copy destination fails, then catches up.
func TestPolicyRetentionAndCopies(t *testing.T) {
	start := time.Date(2026, 11, 1, 2, 0, 0, 0, time.UTC)
	clk := &testClock{t: start}
	srv, c := startInProcess(t, func(cfg *controller.Config) {
		cfg.Clock = clk
		cfg.ScheduleInterval = 20 * time.Millisecond
		cfg.RetentionInterval = 50 * time.Millisecond
		cfg.CopyInterval = 30 * time.Millisecond
		cfg.CopyGrace = time.Hour
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := connectAgentLabeled(t, []string{srv.Addr()}, "db1", map[string]string{"env": "prod"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	primary, second := repoDir(t), repoDir(t)
	pa := &policyAgent{a: a, clk: clk, repo: "file://" + primary, copyJobs: map[string][]string{}, expireJobs: map[string]int{}}
	go pa.serve(ctx)

	doc := fmt.Sprintf(`name: gold
selector: env=prod
repository: file://%s
backups: [{schedule: "@every 24h", catch_up: 1h}]
retention: {keep_last: 2, keep_daily: 5, keep_weekly: 3, keep_monthly: 2}
copies:
  - repository: file://%s
    retention: {keep_last: 3}
`, primary, second)
	// A copy repository the controller cannot open is refused, naming the
	// line.
	_, err = c.Control.ApplyPolicies(ctx, &v1.ApplyPoliciesRequest{Yaml: strings.Replace(doc, "file://"+second, "file://"+t.TempDir(), 1), FileName: "gold.yaml"})
	wantCode(t, err, codes.FailedPrecondition, "gold.yaml:7: policy gold: copies.0.repository: file://")
	if r, err := c.Control.ApplyPolicies(ctx, &v1.ApplyPoliciesRequest{Yaml: doc, FileName: "gold.yaml"}); err != nil || !r.GetApplied() {
		t.Fatalf("apply: %v, %v", r, err)
	}
	// A policy with retention selecting nothing is warned about, and
	// --policy with rules is refused.
	if r, err := c.Control.ApplyPolicies(ctx, &v1.ApplyPoliciesRequest{Yaml: "name: none\nselector: env=nowhere\nretention: {keep_last: 1}\n", FileName: "none.yaml"}); err != nil ||
		len(r.GetChanges()) != 1 || len(r.GetChanges()[0].GetWarnings()) != 2 || !strings.Contains(r.GetChanges()[0].GetWarnings()[0], "selects no instance") ||
		!strings.Contains(r.GetChanges()[0].GetWarnings()[1], "none.yaml:2: policy none: its retention and copies apply to no instance") {
		t.Fatalf("policy selecting nothing: %v, %v", r, err)
	}
	_, err = c.Control.PlanRetention(ctx, &v1.PlanRetentionRequest{Policy: "gold", Rules: &v1.RetentionRules{KeepLast: 1}})
	wantCode(t, err, codes.InvalidArgument, "give a policy or rules, not both")
	_, err = c.Control.PlanRetention(ctx, &v1.PlanRetentionRequest{Policy: "nope"})
	wantCode(t, err, codes.NotFound, `policy "nope" not found`)

	backupsByDay := map[int]*v1.Backup{}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(testenv.Wait(15 * time.Second))
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("day %s: timed out waiting for %s", clk.Now().Format(time.DateTime), what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	backup := func(id string) *v1.Backup {
		t.Helper()
		b, err := c.Control.GetBackup(ctx, &v1.GetBackupRequest{Id: id})
		if err != nil {
			t.Fatal(err)
		}
		return b.GetBackup()
	}
	hasCopy := func(id string) bool {
		return slices.ContainsFunc(backup(id).GetCopies(), func(cp *v1.BackupCopy) bool { return cp.GetRepositoryUri() == "file://"+second })
	}
	copyBehind := func() string {
		st, err := c.Control.GetPolicyStatus(ctx, &v1.GetPolicyStatusRequest{Policy: "gold"})
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range st.GetPolicies()[0].GetInstances() {
			for _, r := range in.GetReasons() {
				if strings.HasPrefix(r, "copy behind") {
					return r
				}
			}
		}
		return ""
	}
	const days = 30
	var pinned string
	for d := 1; d <= days; d++ {
		clk.set(start.Add(time.Duration(d)*24*time.Hour + policy.MaxSpread + time.Minute)) // past the spread
		if d == 20 {
			pa.failCopies.Store(true)
		}
		waitFor("the day's scheduled backup", func() bool {
			l, err := c.Control.ListBackups(ctx, &v1.ListBackupsRequest{Instance: "db1", Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE})
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range l.GetBackups() {
				if b.GetFinishedAt().AsTime().Equal(clk.Now()) {
					backupsByDay[d] = b
					return true
				}
			}
			return false
		})
		id := backupsByDay[d].GetId()
		if d == 3 {
			if _, err := c.Control.PinBackup(ctx, &v1.PinBackupRequest{BackupId: id, Reason: "audit"}); err != nil {
				t.Fatal(err)
			}
			pinned = id
		}
		if d < 20 || d > 22 {
			waitFor("the day's copy", func() bool { return hasCopy(id) })
		}
		if d == 21 {
			// Copies failing since day 20: within the grace all is well,
			// after it the status says why.
			if why := copyBehind(); why != "" {
				t.Fatalf("copy behind within the grace: %s", why)
			}
			clk.set(clk.Now().Add(2 * time.Hour))
			var why string
			waitFor("copy behind with the copy job's error", func() bool {
				why = copyBehind()
				return strings.Contains(why, "connection refused")
			})
			if !strings.Contains(why, "backup "+id) || !strings.Contains(why, "has no copy in file://"+second) {
				t.Fatalf("copy behind = %q", why)
			}
		}
		if d == 22 {
			pa.failCopies.Store(false)
			waitFor("the copies to catch up", func() bool { return hasCopy(id) && copyBehind() == "" })
		}
	}

	// The expected sets, from the rules stated independently.
	var times []time.Time
	for d := days; d >= 1; d-- {
		times = append(times, backupsByDay[d].GetFinishedAt().AsTime())
	}
	keep := gfsKeep(times, 2, func(t time.Time) string { return t.String() })
	for _, g := range []map[time.Time]bool{
		gfsKeep(times, 5, func(t time.Time) string { return t.Format(time.DateOnly) }),
		gfsKeep(times, 3, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprint(y, w) }),
		gfsKeep(times, 2, func(t time.Time) string { return t.Format("2006-01") }),
	} {
		for k := range g {
			keep[k] = true
		}
	}
	var wantKept, wantCopies []string
	for d := 1; d <= days; d++ {
		b := backupsByDay[d]
		if keep[b.GetFinishedAt().AsTime()] || b.GetId() == pinned {
			wantKept = append(wantKept, b.GetId())
		}
		if d > days-3 || b.GetId() == pinned {
			wantCopies = append(wantCopies, b.GetId())
		}
	}
	state := func() (kept, copied []string) {
		for d := 1; d <= days; d++ {
			b := backup(backupsByDay[d].GetId())
			if b.GetStatus() == v1.BackupStatus_BACKUP_STATUS_COMPLETE && b.GetExpiredAt() == nil {
				kept = append(kept, b.GetId())
			}
			if slices.ContainsFunc(b.GetCopies(), func(cp *v1.BackupCopy) bool { return cp.GetExpiredAt() == nil }) {
				copied = append(copied, b.GetId())
			}
		}
		return kept, copied
	}
	deadline := time.Now().Add(testenv.Wait(15 * time.Second))
	for {
		kept, copied := state()
		if slices.Equal(kept, wantKept) && slices.Equal(copied, wantCopies) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a month:\nkept   %v\nwant   %v\ncopies %v\nwant   %v", kept, wantKept, copied, wantCopies)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !slices.Contains(wantKept, backupsByDay[days].GetId()) || !slices.Contains(wantKept, pinned) || len(wantKept) >= days/2 {
		t.Fatalf("the expected set %v is not what the test means", wantKept)
	}
	// One copy job per backup, except the days the destination failed
	// (retried with new derived ids).
	pa.mu.Lock()
	for d := 1; d <= days; d++ {
		jobs := pa.copyJobs[backupsByDay[d].GetId()]
		if (d < 20 || d > 22) && len(jobs) != 1 {
			t.Errorf("day %d: copy jobs %v, want one", d, jobs)
		}
		for _, j := range jobs {
			if !strings.HasPrefix(j, "copy-pol-") {
				t.Errorf("copy job id %s is not derived", j)
			}
		}
	}
	if len(pa.expireJobs) == 0 {
		t.Error("no expire job ran")
	}
	for id := range pa.expireJobs {
		if !strings.HasPrefix(id, "expire-pol-") {
			t.Errorf("expire job id %s is not derived", id)
		}
	}
	pa.mu.Unlock()
	// A dry run of tighter rules says what they would expire at once;
	// nothing changes.
	tighter := strings.Replace(doc, "retention: {keep_last: 2, keep_daily: 5, keep_weekly: 3, keep_monthly: 2}", "retention: {keep_last: 2}", 1)
	dry, err := c.Control.ApplyPolicies(ctx, &v1.ApplyPoliciesRequest{Yaml: tighter, FileName: "gold.yaml", DryRun: true})
	wantWarn := fmt.Sprintf("gold.yaml:5: policy gold: retention expires %d backup(s) and 0 copy(ies) of 1 instance(s) as soon as applied", len(wantKept)-3)
	if err != nil || dry.GetApplied() || !slices.ContainsFunc(dry.GetChanges()[0].GetWarnings(), func(w string) bool { return strings.HasPrefix(w, wantWarn) }) {
		t.Fatalf("dry run of tighter retention: %v, %v; want %q", dry.GetChanges(), err, wantWarn)
	}
	// The plan --policy shows the same verdicts, and nothing is left to
	// expire.
	plan, err := c.Control.PlanRetention(ctx, &v1.PlanRetentionRequest{Policy: "gold", Consistent: true})
	if err != nil || len(plan.GetPlans()) != 1 || plan.GetPlans()[0].GetInstance() != "db1" {
		t.Fatalf("plan --policy: %v, %v", plan, err)
	}
	for _, v := range plan.GetPlans()[0].GetBackups() {
		if v.GetStatus() == v1.BackupStatus_BACKUP_STATUS_DELETED {
			continue
		}
		if v.GetKeep() != slices.Contains(wantKept, v.GetBackupId()) {
			t.Errorf("plan --policy: %s keep=%v %q", v.GetBackupId(), v.GetKeep(), v.GetReasons())
		}
	}
}

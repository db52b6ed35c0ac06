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

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// clockAgent is busyAgent for every job kind: backups finish at the test
// clock's time (read from the file), copies and expiries succeed.
func clockAgent(ctx context.Context, t *testing.T, wg *sync.WaitGroup, addrs []string, name string, labels map[string]string, clockFile string) {
	answeringAgent(ctx, t, wg, addrs, name, labels, func(asg *v1.JobAssignment) *v1.JobResultReport {
		j := asg.GetJob()
		rep := &v1.JobResultReport{JobId: j.GetId(), Lease: asg.GetLease(), Ok: true}
		switch j.GetKind() {
		case v1.JobKind_JOB_KIND_BACKUP:
			raw, _ := os.ReadFile(clockFile)
			at, _ := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(raw)))
			bid := j.GetBackup().GetBackupId()
			rep.BackupId, rep.ManifestKey, rep.RepositoryUri = bid, "manifests/"+bid, j.GetBackup().GetRepositoryUri()
			rep.Manifest = &v1.Manifest{BackupId: bid, Instance: name, Engine: "logical", Fence: asg.GetLease(),
				StartedAt: timestamppb.New(at), FinishedAt: timestamppb.New(at), Consistency: &v1.ConsistencyPoint{Time: timestamppb.New(at)}}
		case v1.JobKind_JOB_KIND_COPY:
			rep.BackupId = j.GetCopy().GetBackupId()
		}
		return rep
	})
}

// writeClock sets the --test-clock-file time: written aside and renamed
// into place, so neither the controllers nor the test's agents ever read a
// half-written file.
func writeClock(t *testing.T, path string, at time.Time) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(at.Format(time.RFC3339Nano)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyRetentionFailover: three controller processes on one test
// clock; a policy with an hourly schedule, retention and a copy
// repository. Each simulated hour the clock moves on and the leader is
// killed (-9) right then, while the run, its copy and the retention are
// due: in the end every backup has exactly one copy job, no backup is in
// two expire jobs, and exactly the newest backups (and copies) the rules
// keep are left.
func TestPolicyRetentionFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("three controller processes and four leader kills: not in -short")
	}
	dir := t.TempDir()
	clockFile := filepath.Join(dir, "clock")
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	setClock := func(at time.Time) { writeClock(t, clockFile, at) }
	setClock(t0)
	c1, c2, c3 := newNode(t, "c1"), newNode(t, "c2"), newNode(t, "c3")
	fast := []string{"--schedule-interval", "100ms", "--retention-interval", "200ms", "--copy-interval", "100ms", "--test-clock-file", clockFile}
	c1.start(true, append([]string{"--bootstrap"}, fast...)...)
	c2.start(true, append([]string{"--join", c1.grpcAddr}, fast...)...)
	c3.start(true, append([]string{"--join", c1.grpcAddr + "," + c2.grpcAddr}, fast...)...)
	all := []*node{c1, c2, c3}
	leader := leaderOf(t, all, 3, testenv.Wait(15*time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	clockAgent(ctx, t, &wg, addrsOf(all...), "db1", map[string]string{"env": "prod"}, clockFile)

	primary, second := repoDir(t), repoDir(t)
	doc := fmt.Sprintf("name: gold\nselector: env=prod\nrepository: file://%s\nbackups: [{schedule: \"@every 1h\", catch_up: 2h}]\nretention: {keep_last: 2}\ncopies:\n  - repository: file://%s\n    retention: {keep_last: 1}\n", primary, second)
	testenv.WaitFor(t, "the policy applied", testenv.Wait(15*time.Second), func() error {
		_, err := leader.conn.Control.ApplyPolicies(ctx, &v1.ApplyPoliciesRequest{Yaml: doc, FileName: "gold.yaml"})
		return err
	})
	consistent := func() (*v1.ListBackupsResponse, *v1.ListJobsResponse) {
		var (
			bs *v1.ListBackupsResponse
			js *v1.ListJobsResponse
		)
		testenv.WaitFor(t, "a consistent read", testenv.Wait(15*time.Second), func() error {
			for _, n := range all {
				if n.Exited() {
					continue
				}
				var err error
				if bs, err = n.conn.Control.ListBackups(ctx, &v1.ListBackupsRequest{Consistent: true}); err != nil {
					continue
				}
				if js, err = n.conn.Control.ListJobs(ctx, &v1.ListJobsRequest{Consistent: true}); err != nil {
					continue
				}
				return nil
			}
			return fmt.Errorf("no node answers")
		})
		return bs, js
	}
	const hours = 4
	for h := 1; h <= hours; h++ {
		setClock(t0.Add(time.Duration(h)*time.Hour + 7*time.Minute)) // past the spread (at most 6 min)
		time.Sleep(150 * time.Millisecond)                           // the run is submitted, the copy and retention about to be
		leader = leaderOf(t, all, 3, testenv.Wait(10*time.Second))
		leader.Kill()
		live := slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n == leader })
		leaderOf(t, live, 3, testenv.Wait(15*time.Second))
		leader.start(false, fast...)
		leaderOf(t, all, 3, testenv.Wait(15*time.Second))
		testenv.WaitFor(t, fmt.Sprintf("hour %d: its backup copied", h), testenv.Wait(20*time.Second), func() error {
			bs, _ := consistent()
			for _, b := range bs.GetBackups() {
				if b.GetFinishedAt().AsTime().Equal(t0.Add(time.Duration(h)*time.Hour+7*time.Minute)) && len(b.GetCopies()) == 1 {
					return nil
				}
			}
			return fmt.Errorf("hour %d: no copied backup yet", h)
		})
	}
	testenv.WaitFor(t, "retention settled", testenv.Wait(20*time.Second), func() error {
		bs, js := consistent()
		var kept, copies int
		for _, b := range bs.GetBackups() {
			if b.GetExpiredAt() == nil {
				kept++
			}
			for _, cp := range b.GetCopies() {
				if cp.GetExpiredAt() == nil {
					copies++
				}
			}
		}
		for _, j := range js.GetJobs() {
			if !catalogTerminal(j.GetState()) {
				return fmt.Errorf("job %s is %s", j.GetId(), j.GetState())
			}
		}
		if kept != 2 || copies != 1 {
			return fmt.Errorf("%d backups and %d copies left, want 2 and 1", kept, copies)
		}
		return nil
	})
	_, js := consistent()
	copyJobs := map[string][]string{}
	expiredIn := map[string][]string{}
	var backups int
	for _, j := range js.GetJobs() {
		switch j.GetKind() {
		case v1.JobKind_JOB_KIND_BACKUP:
			backups++
		case v1.JobKind_JOB_KIND_COPY:
			copyJobs[j.GetCopy().GetBackupId()] = append(copyJobs[j.GetCopy().GetBackupId()], j.GetId())
		case v1.JobKind_JOB_KIND_EXPIRE:
			for _, tg := range j.GetExpire().GetBackups() {
				k := tg.GetBackupId()
				if j.GetExpire().GetCopies() {
					k += " (copy)"
				}
				expiredIn[k] = append(expiredIn[k], j.GetId())
			}
		}
	}
	if backups != hours || len(copyJobs) != hours {
		t.Fatalf("%d backup jobs and copies of %d backups, want %d each", backups, len(copyJobs), hours)
	}
	for b, ids := range copyJobs {
		if len(ids) != 1 {
			t.Errorf("backup %s: copy jobs %v, want one", b, ids)
		}
	}
	// hours-2 backups and hours-1 copies expired, each by one job.
	var nb, nc int
	for k, ids := range expiredIn {
		if len(ids) != 1 {
			t.Errorf("%s: expire jobs %v, want one", k, ids)
		}
		if strings.HasSuffix(k, "(copy)") {
			nc++
		} else {
			nb++
		}
	}
	if nb != hours-2 || nc != hours-1 {
		t.Errorf("%d backups and %d copies expired, want %d and %d", nb, nc, hours-2, hours-1)
	}
	// The CLI's plan by policy: the two kept, nothing left to expire.
	admin := testenv.Args(testCA(t).Files(t, testenv.Admin()))
	out, errOut, code := run(t, 30*time.Second, append([]string{"retention", "plan", "--policy", "gold", "-o", "json", "--controller", strings.Join(addrsOf(all...), ",")}, admin...)...)
	if code != 0 || strings.Count(out, `"keep":true`) != 2 || strings.Count(out, `"keep":false`) != 0 || !strings.Contains(out, `"keep: last complete backup"`) {
		t.Fatalf("retention plan --policy gold: exit %d: %s%s", code, out, errOut)
	}
}

func catalogTerminal(s v1.JobState) bool {
	return s == v1.JobState_JOB_STATE_SUCCEEDED || s == v1.JobState_JOB_STATE_FAILED || s == v1.JobState_JOB_STATE_CANCELLED
}

package reconcile

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func lease(job string, idx uint64) *v1.LeaseToken {
	return &v1.LeaseToken{Term: 2, Index: idx, JobId: job}
}

// twoAttempts is job j1 whose first attempt lost its lease (the agent died
// after storing its manifest) and whose second wrote the catalog's backup.
func twoAttempts(state v1.JobState) *v1.Job {
	j := &v1.Job{Id: "j1", Kind: v1.JobKind_JOB_KIND_BACKUP, State: state, Attempt: 2, Lease: lease("j1", 20),
		UpdatedAt: timestamppb.New(t0.Add(-time.Hour)),
		Params:    &v1.Job_Backup{Backup: &v1.BackupParams{BackupId: "j1-a2"}},
		PreviousAttempts: []*v1.JobAttempt{{Attempt: 1, Lease: lease("j1", 10), BackupId: "j1-a1", EndedAt: timestamppb.New(t0.Add(-2 * time.Hour)),
			Error: "lease expired"}}}
	if state == v1.JobState_JOB_STATE_SUCCEEDED {
		j.Result = &v1.JobResult{BackupId: "j1-a2"}
	}
	return j
}

func TestParseAttemptID(t *testing.T) {
	for _, c := range []struct {
		id  string
		job string
		n   uint32
		ok  bool
	}{
		{"20261203-1200-abcd-a1", "20261203-1200-abcd", 1, true},
		{"p-db-a-a12", "p-db-a", 12, true},
		{"20261203T120000Z", "", 0, false}, // a standalone backup
		{"j-a0", "", 0, false},
		{"j-a01", "", 0, false},
		{"j-a", "", 0, false},
		{"-a1", "", 0, false},
		{"j-a1x", "", 0, false},
		{"j-a99999999999", "", 0, false},
	} {
		job, n, ok := ParseAttemptID(c.id)
		if job != c.job || n != c.n || ok != c.ok {
			t.Errorf("ParseAttemptID(%q) = %q, %d, %v; want %q, %d, %v", c.id, job, n, ok, c.job, c.n, c.ok)
		}
		if ok && AttemptID(job, n) != c.id {
			t.Errorf("AttemptID(%q, %d) = %q, want %q", job, n, AttemptID(job, n), c.id)
		}
	}
}

func TestDeadAttempts(t *testing.T) {
	ids := func(as []Attempt) string {
		var s []string
		for _, a := range as {
			s = append(s, a.BackupID)
		}
		return strings.Join(s, ",")
	}
	for _, c := range []struct {
		name string
		j    *v1.Job
		want string
	}{
		{"succeeded: the earlier attempt", twoAttempts(v1.JobState_JOB_STATE_SUCCEEDED), "j1-a1"},
		{"running: the earlier attempt only", twoAttempts(v1.JobState_JOB_STATE_RUNNING), "j1-a1"},
		{"failed by its agent: both", twoAttempts(v1.JobState_JOB_STATE_FAILED), "j1-a1,j1-a2"},
		{"not a backup", &v1.Job{Id: "e", Kind: v1.JobKind_JOB_KIND_EXPIRE, State: v1.JobState_JOB_STATE_FAILED}, ""},
	} {
		if got := ids(DeadAttempts(c.j)); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	// Cancelled (or failed by the leader): the last attempt moved into the
	// history and the job holds no lease.
	j := twoAttempts(v1.JobState_JOB_STATE_CANCELLED)
	j.PreviousAttempts = append(j.PreviousAttempts, &v1.JobAttempt{Attempt: 2, Lease: lease("j1", 20), BackupId: "j1-a2", EndedAt: timestamppb.New(t0)})
	j.Lease = nil
	j.GetBackup().BackupId = ""
	if got := ids(DeadAttempts(j)); got != "j1-a1,j1-a2" {
		t.Errorf("cancelled: %q", got)
	}
}

func TestJudge(t *testing.T) {
	succeeded := twoAttempts(v1.JobState_JOB_STATE_SUCCEEDED)
	running := twoAttempts(v1.JobState_JOB_STATE_RUNNING)
	for _, c := range []struct {
		name  string
		p     Params
		want  State
		inWhy string
	}{
		{"the superseded attempt", Params{Manifest: Manifest{"j1-a1", lease("j1", 10)}, Job: succeeded}, Superseded, "attempt 1 of job j1 (succeeded, backup j1-a2)"},
		{"the catalog's backup", Params{Manifest: Manifest{"j1-a2", lease("j1", 20)}, Job: succeeded, Backup: &v1.Backup{Id: "j1-a2", Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE}}, Catalog, "complete"},
		{"the recorded result without its record", Params{Manifest: Manifest{"j1-a2", lease("j1", 20)}, Job: succeeded}, Catalog, "recorded backup"},
		{"a running attempt", Params{Manifest: Manifest{"j1-a2", lease("j1", 20)}, Job: running}, Live, "running"},
		{"an attempt newer than the read", Params{Manifest: Manifest{"j1-a3", lease("j1", 30)}, Job: running}, Live, "newer"},
		{"superseded while the job runs", Params{Manifest: Manifest{"j1-a1", lease("j1", 10)}, Job: running}, Superseded, "attempt 1"},
		{"the lost attempt of a job pending again", Params{Manifest: Manifest{"j1-a1", lease("j1", 10)}, Job: pendingAgain()}, Superseded, "attempt 1 of job j1 (pending)"},
		{"a standalone backup", Params{Manifest: Manifest{"20261203T120000Z", nil}}, Unknown, "standalone"},
		{"another cluster's job", Params{Manifest: Manifest{"j9-a1", lease("j9", 10)}}, Unknown, "no job j9"},
		{"same job id, another cluster's fence", Params{Manifest: Manifest{"j1-a1", &v1.LeaseToken{Term: 7, Index: 10, JobId: "j1"}}, Job: succeeded}, Unknown, "not this catalog's attempt"},
		{"no fence at all", Params{Manifest: Manifest{"j1-a1", nil}, Job: succeeded}, Unknown, "not this catalog's attempt"},
		{"not a backup job", Params{Manifest: Manifest{"e1-a1", lease("e1", 3)}, Job: &v1.Job{Id: "e1", Kind: v1.JobKind_JOB_KIND_EXPIRE}}, Unknown, "not a backup"},
		{"in grace", Params{Manifest: Manifest{"j1-a1", lease("j1", 10)}, Job: succeeded, Grace: 3 * time.Hour}, Grace, "ended 2h0m0s ago"},
	} {
		if c.p.Now.IsZero() {
			c.p.Now = t0
		}
		v := Judge(c.p)
		if v.State != c.want || !strings.Contains(v.Reason, c.inWhy) {
			t.Errorf("%s: %s (%s); want %s with %q", c.name, v.State, v.Reason, c.want, c.inWhy)
		}
		if c.want == Grace && !v.RemovableAt.Equal(t0.Add(time.Hour)) {
			t.Errorf("%s: removable at %s, want %s", c.name, v.RemovableAt, t0.Add(time.Hour))
		}
	}
}

// pendingAgain is j1 after its first attempt lost its lease, before the
// second is assigned: attempt 1 is in the history and no lease is held.
func pendingAgain() *v1.Job {
	return &v1.Job{Id: "j1", Kind: v1.JobKind_JOB_KIND_BACKUP, State: v1.JobState_JOB_STATE_PENDING, Attempt: 1,
		Params:           &v1.Job_Backup{Backup: &v1.BackupParams{}},
		PreviousAttempts: []*v1.JobAttempt{{Attempt: 1, Lease: lease("j1", 10), BackupId: "j1-a1", EndedAt: timestamppb.New(t0.Add(-time.Hour))}}}
}

// TestUnsweptMatchesDeadAttempts: catalog.Unswept, which the finished
// store keeps per job so that pruning and the sweep need not decode the
// history, is exactly "not swept and DeadAttempts is not empty", over
// every combination of state, kind, attempts, lease, backup ids and result.
func TestUnsweptMatchesDeadAttempts(t *testing.T) {
	states := []v1.JobState{v1.JobState_JOB_STATE_PENDING, v1.JobState_JOB_STATE_RUNNING, v1.JobState_JOB_STATE_SUCCEEDED,
		v1.JobState_JOB_STATE_FAILED, v1.JobState_JOB_STATE_CANCELLED}
	n := 0
	for _, st := range states {
		for _, kind := range []v1.JobKind{v1.JobKind_JOB_KIND_BACKUP, v1.JobKind_JOB_KIND_RESTORE} {
			for mask := range 1 << 6 {
				bit := func(i int) bool { return mask&(1<<i) != 0 }
				j := twoAttempts(st)
				j.Kind = kind
				if bit(0) {
					j.PreviousAttempts = nil
				}
				if bit(1) && len(j.PreviousAttempts) > 0 {
					j.PreviousAttempts[0].Lease = nil
				}
				if bit(2) && len(j.PreviousAttempts) > 0 {
					j.PreviousAttempts[0].BackupId = "j1-a2" // the job's own result when it succeeded
				}
				if bit(3) {
					j.Lease = nil
				}
				if bit(4) {
					j.GetBackup().BackupId = ""
				}
				if bit(5) {
					j.OrphansSweptAt = timestamppb.New(t0)
				}
				want := j.GetOrphansSweptAt() == nil && len(DeadAttempts(j)) > 0
				if got := catalog.Unswept(j); got != want {
					t.Errorf("state %s, kind %s, variant %06b: Unswept %v, DeadAttempts %v", st, kind, mask, got, DeadAttempts(j))
				}
				if want {
					n++
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no combination has dead attempts: the test checks nothing")
	}
}

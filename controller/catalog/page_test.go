package catalog

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

var states = []v1.JobState{v1.JobState_JOB_STATE_PENDING, v1.JobState_JOB_STATE_RUNNING, v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_FAILED}

// job i: on db(i%3), in states[i%4], a restore when i%17 == 0, created at
// second i/2 (pairs share a time: ties are ordered by id).
func testJob(i int) *v1.Job {
	k := v1.JobKind_JOB_KIND_BACKUP
	if i%17 == 0 {
		k = v1.JobKind_JOB_KIND_RESTORE
	}
	return &v1.Job{Id: fmt.Sprintf("j%05d", i), Kind: k, Instance: fmt.Sprintf("db%d", i%3), State: states[i%4],
		CreatedAt: timestamppb.New(t0.Add(time.Duration(i/2) * time.Second))}
}

func put(t *testing.T, s *Store, js ...*v1.Job) {
	t.Helper()
	w := s.Write()
	for _, j := range js {
		if err := w.PutJob(j); err != nil {
			t.Fatal(err)
		}
	}
	w.Commit()
}

// expected is the brute-force answer: filter, sort newest first.
func expected(js []*v1.Job, f JobFilter) []string {
	var out []*v1.Job
	for _, j := range js {
		if (f.Instance == "" || j.GetInstance() == f.Instance) && (len(f.States) == 0 || slices.Contains(f.States, j.GetState())) &&
			(f.Kind == v1.JobKind_JOB_KIND_UNSPECIFIED || j.GetKind() == f.Kind) {
			out = append(out, j)
		}
	}
	slices.SortFunc(out, func(a, b *v1.Job) int {
		if c := b.GetCreatedAt().AsTime().Compare(a.GetCreatedAt().AsTime()); c != 0 {
			return c
		}
		if a.GetId() > b.GetId() {
			return -1
		}
		return 1
	})
	ids := make([]string, len(out))
	for i, j := range out {
		ids[i] = j.GetId()
	}
	return ids
}

// TestJobsPagesStableUnderInserts: every filter (instance, states, kind and
// their combinations) paged 7 at a time gives exactly the brute-force
// listing of the jobs that existed at the first page, with newer jobs
// inserted between every two pages: none repeated, none skipped.
func TestJobsPagesStableUnderInserts(t *testing.T) {
	filters := []JobFilter{
		{},
		{Instance: "db1"},
		{States: []v1.JobState{v1.JobState_JOB_STATE_PENDING, v1.JobState_JOB_STATE_FAILED}},
		{Instance: "db2", States: []v1.JobState{v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_RUNNING, v1.JobState_JOB_STATE_SUCCEEDED}},
		{Kind: v1.JobKind_JOB_KIND_RESTORE},
		{Instance: "db0", States: []v1.JobState{v1.JobState_JOB_STATE_PENDING}, Kind: v1.JobKind_JOB_KIND_RESTORE},
		{Instance: "nosuch"},
	}
	for _, f := range filters {
		t.Run(fmt.Sprintf("%+v", f), func(t *testing.T) {
			s := New()
			var js []*v1.Job
			for i := range 300 {
				js = append(js, testJob(i))
			}
			put(t, s, js...)
			want := expected(js, f)
			var got []string
			var after *Cursor
			next := 300
			for pages := 0; ; pages++ {
				if pages > 200 {
					t.Fatal("paging does not end")
				}
				p, c := s.Read().JobsPage(f, after, 7)
				for _, j := range p {
					got = append(got, j.GetId())
				}
				if c == nil {
					break
				}
				if len(p) != 7 {
					t.Fatalf("a page of %d with more to come (no scan bound is hit here)", len(p))
				}
				after = c
				// New jobs arrive between pages, newer than all.
				put(t, s, testJob(next), testJob(next+1))
				next += 2
			}
			if !slices.Equal(got, want) {
				t.Fatalf("paged listing:\n got %v\nwant %v", got, want)
			}
		})
	}
}

// TestJobsPageScanBound: a filter the indexes do not cover (a rare kind)
// walks at most maxScan entries per call: a short page with a cursor, and
// the pages together are still the whole listing.
func TestJobsPageScanBound(t *testing.T) {
	n := 2*maxScan + 2000 // three calls' walks
	s := New()
	var js []*v1.Job
	for i := range n {
		j := testJob(i)
		j.Kind = v1.JobKind_JOB_KIND_BACKUP
		// Active jobs: the walk bounded here is the jobs table's; the
		// finished store has a kind index (TestFinishedKindIndexed).
		j.State = states[i%2]
		if i == 3 || i == n-1000 {
			j.Kind = v1.JobKind_JOB_KIND_COPY
		}
		js = append(js, j)
	}
	put(t, s, js...)
	f := JobFilter{Kind: v1.JobKind_JOB_KIND_COPY}
	var got []string
	var after *Cursor
	calls := 0
	for {
		calls++
		p, c := s.Read().JobsPage(f, after, 10)
		for _, j := range p {
			got = append(got, j.GetId())
		}
		if c == nil {
			break
		}
		after = c
	}
	if want := []string{fmt.Sprintf("j%05d", n-1000), "j00003"}; !slices.Equal(got, want) || calls != 3 {
		t.Fatalf("got %v in %d calls, want %v in 3 (%d entries, %d per call)", got, calls, want, n, maxScan)
	}
}

// TestBackupsPages: newest first by start time, DELETED left out by
// default, the instance and status filters, across pages.
func TestBackupsPages(t *testing.T) {
	s := New()
	w := s.Write()
	for i := range 50 {
		st := v1.BackupStatus_BACKUP_STATUS_COMPLETE
		if i%5 == 0 {
			st = v1.BackupStatus_BACKUP_STATUS_DELETED
		}
		b := &v1.Backup{Id: fmt.Sprintf("b%02d", i), Instance: fmt.Sprintf("db%d", i%2), Status: st,
			StartedAt: timestamppb.New(t0.Add(time.Duration(i%25) * time.Minute))}
		if err := w.PutBackup(b); err != nil {
			t.Fatal(err)
		}
	}
	w.Commit()
	for _, f := range []BackupFilter{{}, {Instance: "db1"}, {Status: v1.BackupStatus_BACKUP_STATUS_DELETED}, {Instance: "db0", Status: v1.BackupStatus_BACKUP_STATUS_DELETED}} {
		var want []*v1.Backup
		for _, b := range s.Read().Backups(f.Instance) {
			if (f.Status == 0 && b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_DELETED) || (f.Status != 0 && b.GetStatus() == f.Status) {
				want = append(want, b)
			}
		}
		var got []*v1.Backup
		var after *Cursor
		for {
			p, c := s.Read().BackupsPage(f, after, 4)
			got = append(got, p...)
			if c == nil {
				break
			}
			after = c
		}
		// Records are decoded for each read: equal, not the same pointers.
		if len(got) == 0 || !slices.EqualFunc(got, want, func(a, b *v1.Backup) bool { return proto.Equal(a, b) }) {
			t.Fatalf("%+v: paged %d, want %d", f, len(got), len(want))
		}
		for i := 1; i < len(got); i++ {
			if got[i].GetStartedAt().AsTime().After(got[i-1].GetStartedAt().AsTime()) {
				t.Fatalf("%+v: not newest first at %d", f, i)
			}
		}
	}
}

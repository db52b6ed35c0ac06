package catalog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// finishedJob is testJob i made finished in state st at second i+100.
func finishedJob(i int, st v1.JobState) *v1.Job {
	j := testJob(i)
	j.State = st
	j.UpdatedAt = timestamppb.New(t0.Add(time.Duration(i+100) * time.Second))
	return j
}

// inMemdb reports whether id is a row of the go-memdb jobs table.
func inMemdb(r *Read, id string) bool {
	obj, _ := r.first(jobsTableName, id, nil)
	return obj != nil
}

// TestFinishedPlacement: a finished job leaves go-memdb for the finished
// store when it is put, a terminal job whose attempt is still stopping
// stays (indexed by its agent) until the stop is confirmed, a job made
// active again goes back, and every one reads back equal to what was put.
func TestFinishedPlacement(t *testing.T) {
	s := New()
	run := testJob(1)
	run.State = v1.JobState_JOB_STATE_RUNNING
	put(t, s, run)
	if r := s.Read(); !inMemdb(r, run.GetId()) || r.FinishedCount() != 0 {
		t.Fatalf("a running job: in go-memdb %v, finished %d", inMemdb(r, run.GetId()), r.FinishedCount())
	}

	stopping := proto.CloneOf(run)
	stopping.State, stopping.StoppingAgent = v1.JobState_JOB_STATE_CANCELLED, "agent1"
	put(t, s, stopping)
	r := s.Read()
	if !inMemdb(r, run.GetId()) || r.FinishedCount() != 0 || len(r.StoppingJobsOf("agent1")) != 1 {
		t.Fatalf("a cancelled job still stopping: in go-memdb %v, finished %d, stopping on agent1 %d",
			inMemdb(r, run.GetId()), r.FinishedCount(), len(r.StoppingJobsOf("agent1")))
	}

	done := proto.CloneOf(stopping)
	done.StoppingAgent = ""
	put(t, s, done)
	r = s.Read()
	if inMemdb(r, run.GetId()) || r.FinishedCount() != 1 || len(r.StoppingJobsOf("agent1")) != 0 {
		t.Fatalf("a cancelled job stopped: in go-memdb %v, finished %d", inMemdb(r, run.GetId()), r.FinishedCount())
	}
	got, err := r.Job(run.GetId())
	if err != nil || !proto.Equal(got, done) {
		t.Fatalf("the finished job reads back as %v (%v), want %v", got, err, done)
	}
	if all := r.Jobs(JobFilter{}); len(all) != 1 || !proto.Equal(all[0], done) {
		t.Fatalf("listing: %v", all)
	}

	again := proto.CloneOf(done)
	again.State = v1.JobState_JOB_STATE_PENDING
	put(t, s, again)
	if r := s.Read(); !inMemdb(r, run.GetId()) || r.FinishedCount() != 0 || len(r.JobsInState(v1.JobState_JOB_STATE_PENDING)) != 1 {
		t.Fatalf("a job made pending again: in go-memdb %v, finished %d", inMemdb(r, run.GetId()), r.FinishedCount())
	}

	w := s.Write()
	if err := w.PutJob(&v1.Job{State: v1.JobState_JOB_STATE_SUCCEEDED}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a finished job without an id: %v, want ErrInvalid", err)
	}
	w.Abort()
}

// TestFinishedVersions: a Read keeps the catalog it started with while
// jobs move and are deleted, an aborted Write leaves nothing behind (not
// even a new instance name), and a Snapshot is frozen.
func TestFinishedVersions(t *testing.T) {
	s := New()
	put(t, s, finishedJob(1, v1.JobState_JOB_STATE_SUCCEEDED), finishedJob(2, v1.JobState_JOB_STATE_FAILED))
	before := s.Read()
	frozen := s.Snapshot()

	w := s.Write()
	j := finishedJob(3, v1.JobState_JOB_STATE_SUCCEEDED)
	j.Instance = "aborted-instance"
	if err := w.PutJob(j); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteJob("j00001"); err != nil {
		t.Fatal(err)
	}
	if got := len(w.Jobs(JobFilter{})); got != 2 {
		t.Fatalf("the Write sees %d jobs of its own, want 2", got)
	}
	w.Abort()
	if got := ids(s.Read().Jobs(JobFilter{})); !slices.Equal(got, []string{"j00002", "j00001"}) {
		t.Fatalf("after an aborted Write: %v", got)
	}
	if got := s.Read().Jobs(JobFilter{Instance: "aborted-instance"}); len(got) != 0 {
		t.Fatalf("the aborted Write's instance lists %d jobs", len(got))
	}

	w = s.Write()
	if err := w.DeleteJob("j00001"); err != nil {
		t.Fatal(err)
	}
	k := finishedJob(4, v1.JobState_JOB_STATE_CANCELLED)
	k.Instance = "other"
	if err := w.PutJob(k); err != nil {
		t.Fatal(err)
	}
	w.Commit()
	if got := ids(s.Read().Jobs(JobFilter{})); !slices.Equal(got, []string{"j00004", "j00002"}) {
		t.Fatalf("after the commit: %v", got)
	}
	for name, r := range map[string]*Read{"a Read from before": before, "a Snapshot from before": frozen.Read()} {
		if got := ids(r.Jobs(JobFilter{})); !slices.Equal(got, []string{"j00002", "j00001"}) {
			t.Fatalf("%s sees %v", name, got)
		}
		if got := r.Jobs(JobFilter{Instance: "other"}); len(got) != 0 {
			t.Fatalf("%s sees a later instance's jobs: %v", name, ids(got))
		}
	}
}

func ids(js []*v1.Job) []string {
	out := make([]string, len(js))
	for i, j := range js {
		out[i] = j.GetId()
	}
	return out
}

// TestFinishedListings: listings over jobs in both places (active,
// finished, and terminal but still stopping) give the brute-force answer
// for every filter, paged, while jobs finish between pages (a job that
// moves keeps its place: none repeated, none skipped).
func TestFinishedListings(t *testing.T) {
	filters := []JobFilter{
		{},
		{Instance: "db1"},
		{States: []v1.JobState{v1.JobState_JOB_STATE_FAILED}},
		{States: []v1.JobState{v1.JobState_JOB_STATE_PENDING, v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_CANCELLED}},
		{Instance: "db2", States: []v1.JobState{v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_RUNNING}},
		{Kind: v1.JobKind_JOB_KIND_RESTORE},
		{Kind: v1.JobKind_JOB_KIND_RESTORE, States: []v1.JobState{v1.JobState_JOB_STATE_SUCCEEDED}},
		{Instance: "db0", Kind: v1.JobKind_JOB_KIND_BACKUP},
		{Instance: "nosuch"},
	}
	build := func() (*Store, []*v1.Job) {
		s := New()
		var js []*v1.Job
		for i := range 400 {
			j := testJob(i)
			switch i % 5 {
			case 0, 1:
				j = finishedJob(i, v1.JobState_JOB_STATE_SUCCEEDED)
			case 2:
				j = finishedJob(i, v1.JobState_JOB_STATE_FAILED)
			case 3:
				if i%3 == 0 {
					j = finishedJob(i, v1.JobState_JOB_STATE_CANCELLED)
					j.StoppingAgent = "a1" // stays in go-memdb
				}
			}
			js = append(js, j)
		}
		put(t, s, js...)
		return s, js
	}
	for _, f := range filters {
		t.Run(fmt.Sprintf("%+v", f), func(t *testing.T) {
			s, js := build()
			want := expected(js, f)
			// Static: every page size gives the same listing.
			for _, size := range []int{1, 7, 1000} {
				if got := pageAll(t, s, f, size, nil); !slices.Equal(got, want) {
					t.Fatalf("pages of %d:\n got %v\nwant %v", size, got, want)
				}
			}
			// Moving: between pages active jobs finish (when the filter
			// does not select by state, which a move changes).
			if len(f.States) > 0 {
				return
			}
			step := 0
			got := pageAll(t, s, f, 7, func() {
				w := s.Write()
				for _, j := range w.ActiveJobs() {
					if step++; step%4 == 0 { // a quarter of them, the same every run
						d := proto.CloneOf(j)
						d.State = v1.JobState_JOB_STATE_SUCCEEDED
						if err := w.PutJob(d); err != nil {
							t.Fatal(err)
						}
					}
				}
				w.Commit()
			})
			if !slices.Equal(got, want) {
				t.Fatalf("with jobs finishing between pages:\n got %v\nwant %v", got, want)
			}
		})
	}
}

// pageAll follows a listing page by page, calling between (when not nil)
// after every page.
func pageAll(t *testing.T, s *Store, f JobFilter, size int, between func()) []string {
	t.Helper()
	var got []string
	var after *Cursor
	for pages := 0; ; pages++ {
		if pages > 2000 {
			t.Fatal("paging does not end")
		}
		p, c := s.Read().JobsPage(f, after, size)
		got = append(got, ids(p)...)
		if c == nil {
			return got
		}
		after = c
		if between != nil {
			between()
		}
	}
}

// TestFinishedKindIndexed: finished jobs are walked on their kind index:
// a kind that two of 12,000 finished jobs have is listed in one call,
// where a walk by time would take three (maxScan entries a call).
func TestFinishedKindIndexed(t *testing.T) {
	n := 2*maxScan + 2000
	s := New()
	var js []*v1.Job
	for i := range n {
		j := finishedJob(i, v1.JobState_JOB_STATE_SUCCEEDED)
		j.Kind = v1.JobKind_JOB_KIND_BACKUP
		if i == 3 || i == n-1000 {
			j.Kind = v1.JobKind_JOB_KIND_COPY
		}
		js = append(js, j)
	}
	put(t, s, js...)
	p, c := s.Read().JobsPage(JobFilter{Kind: v1.JobKind_JOB_KIND_COPY}, nil, 10)
	if want := []string{fmt.Sprintf("j%05d", n-1000), "j00003"}; !slices.Equal(ids(p), want) || c != nil {
		t.Fatalf("got %v (next %v), want %v and the end", ids(p), c, want)
	}
}

// TestFinishedWatch: a watch on a running job fires when it finishes (it
// leaves go-memdb); one on a finished job fires when it is deleted; one on
// a missing job fires when it is created already finished; and a commit
// that touches no finished job does not fire the finished one.
func TestFinishedWatch(t *testing.T) {
	s := New()
	run := testJob(1)
	run.State = v1.JobState_JOB_STATE_RUNNING
	put(t, s, run, finishedJob(2, v1.JobState_JOB_STATE_FAILED))

	fires := func(what string, watchID string, change func(), want bool) {
		t.Helper()
		w := NewWatch()
		_, _ = s.Read().JobWatch(watchID, w)
		change()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if fired := w.Wait(ctx) == nil; fired != want {
			t.Fatalf("%s: the watch fired %v, want %v", what, fired, want)
		}
	}
	fires("an unrelated active job added", "j00002", func() {
		j := testJob(7)
		j.State = v1.JobState_JOB_STATE_PENDING
		put(t, s, j)
	}, false)
	fires("the running job finishing", "j00001", func() {
		d := proto.CloneOf(run)
		d.State = v1.JobState_JOB_STATE_SUCCEEDED
		put(t, s, d)
	}, true)
	fires("the finished job deleted", "j00002", func() {
		w := s.Write()
		if err := w.DeleteJob("j00002"); err != nil {
			t.Fatal(err)
		}
		w.Commit()
	}, true)
	fires("a missing job created finished", "j00009", func() {
		put(t, s, finishedJob(9, v1.JobState_JOB_STATE_SUCCEEDED))
	}, true)
	if j, err := s.Read().Job("j00009"); err != nil || j.GetState() != v1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("j00009: %v %v", j, err)
	}
}

// TestFinishedWalks: the finish-order walks pruning and the alert loop use
// merge the finished store with the terminal jobs still stopping in
// go-memdb; the scheduler's runs are found in either place.
func TestFinishedWalks(t *testing.T) {
	s := New()
	var js []*v1.Job
	for i := range 50 {
		j := finishedJob(i, v1.JobState_JOB_STATE_SUCCEEDED)
		j.UpdatedAt = timestamppb.New(t0.Add(time.Duration((i*7)%50) * time.Second)) // finish order differs from creation
		if i%6 == 0 {
			j.StoppingAgent = "a1"
		}
		j.Policy, j.RunKey, j.ScheduledFor = "nightly", j.GetInstance(), timestamppb.New(t0.Add(time.Duration(i)*time.Hour))
		js = append(js, j)
	}
	active := testJob(60)
	active.State = v1.JobState_JOB_STATE_PENDING
	active.Policy, active.RunKey, active.ScheduledFor = "nightly", "db0", timestamppb.New(t0.Add(100*time.Hour))
	put(t, s, append(js, active)...)
	r := s.Read()

	byFinish := slices.Clone(js)
	slices.SortFunc(byFinish, func(a, b *v1.Job) int {
		if FinishedPos(a).OlderThan(FinishedPos(b)) {
			return -1
		}
		return 1
	})
	var walked []string
	r.EachFinishedJob(func(f FinishedJob) bool {
		if f.Job().GetId() != f.ID || f.Policy != "nightly" || f.RunKey != f.Instance {
			t.Fatalf("%+v does not describe its job %v", f, f.Job())
		}
		walked = append(walked, f.ID)
		return true
	})
	if want := ids(byFinish); !slices.Equal(walked, want) {
		t.Fatalf("EachFinishedJob:\n got %v\nwant %v", walked, want)
	}
	var since []string
	r.EachFinishedSince(FinishedPos(byFinish[40]).At, func(j *v1.Job) bool { since = append(since, j.GetId()); return true })
	if want := ids(byFinish[40:]); !slices.Equal(since, want) {
		t.Fatalf("EachFinishedSince: got %v, want %v", since, want)
	}
	// Every rank: the seek by rank in the tree merged with the 9 jobs
	// still stopping in go-memdb, wherever they fall.
	for n := 1; n <= 50; n++ {
		if p, ok := r.NthNewestFinished(n); !ok || p != FinishedPos(byFinish[50-n]) {
			t.Fatalf("NthNewestFinished(%d) = %v %v, want %v", n, p, ok, FinishedPos(byFinish[50-n]))
		}
	}
	if _, ok := r.NthNewestFinished(51); ok {
		t.Fatal("NthNewestFinished(51) of 50")
	}
	// Resuming after each position walks exactly the jobs after it.
	for i := -1; i < 50; i++ {
		var after *Cursor
		if i >= 0 {
			p := FinishedPos(byFinish[i])
			after = &p
		}
		var got []string
		r.EachFinishedAfter(after, func(f FinishedJob) bool { got = append(got, f.ID); return true })
		if want := ids(byFinish[i+1:]); !slices.Equal(got, want) {
			t.Fatalf("EachFinishedAfter(%d): got %v, want %v", i, got, want)
		}
	}

	// Runs: db0's latest is the active one; db1's the newest finished,
	// whichever place it is in.
	if l := r.LatestRun("nightly", 0, "db0"); l.GetId() != active.GetId() || r.LatestRunID("nightly", 0, "db0") != active.GetId() {
		t.Fatalf("latest run of db0: %v", l.GetId())
	}
	for _, in := range []string{"db1", "db2"} {
		var want *v1.Job
		for _, j := range js {
			if j.GetRunKey() == in && (want == nil || j.GetScheduledFor().AsTime().After(want.GetScheduledFor().AsTime())) {
				want = j
			}
		}
		if l := r.LatestRun("nightly", 0, in); !proto.Equal(l, want) || r.LatestRunID("nightly", 0, in) != want.GetId() {
			t.Fatalf("latest run of %s: %v, want %v", in, l.GetId(), want.GetId())
		}
	}
	if r.LatestRun("nightly", 1, "db1") != nil || r.LatestRun("nosuch", 0, "db1") != nil || r.LatestRunID("nightly", 0, "db9") != "" {
		t.Fatal("a run that does not exist was found")
	}
	runs := r.JobsOfPolicy("nightly")
	if len(runs) != 51 || !slices.IsSortedFunc(runs, func(a, b *v1.Job) int {
		if a.GetRunKey() != b.GetRunKey() {
			return map[bool]int{true: -1, false: 1}[a.GetRunKey() < b.GetRunKey()]
		}
		return a.GetScheduledFor().AsTime().Compare(b.GetScheduledFor().AsTime())
	}) {
		t.Fatalf("JobsOfPolicy: %d runs, or out of order: %v", len(runs), ids(runs))
	}
	// LatestRunsOf: per key, the brute-force latest of JobsOfPolicy among
	// the jobs kept, in key order.
	for name, keep := range map[string]func(v1.JobKind, v1.JobState) bool{
		"all":      func(v1.JobKind, v1.JobState) bool { return true },
		"finished": func(_ v1.JobKind, s v1.JobState) bool { return Terminal(s) },
		"none":     func(v1.JobKind, v1.JobState) bool { return false },
	} {
		var want []*v1.Job
		for _, j := range runs { // by run key, then scheduled time
			if !keep(j.GetKind(), j.GetState()) {
				continue
			}
			if n := len(want); n > 0 && want[n-1].GetRunKey() == j.GetRunKey() {
				want[n-1] = j
			} else {
				want = append(want, j)
			}
		}
		got := r.LatestRunsOf("nightly", keep)
		if !slices.EqualFunc(got, want, func(a, b *v1.Job) bool { return proto.Equal(a, b) }) {
			t.Fatalf("LatestRunsOf(%s): %v, want %v", name, ids(got), ids(want))
		}
	}
	if got := r.LatestRunsOf("nosuch", func(v1.JobKind, v1.JobState) bool { return true }); len(got) != 0 {
		t.Fatalf("LatestRunsOf of a policy with no runs: %v", ids(got))
	}
	counts := map[v1.JobState]int{}
	r.EachJobKindState(func(_ v1.JobKind, st v1.JobState) { counts[st]++ })
	if counts[v1.JobState_JOB_STATE_SUCCEEDED] != 50 || counts[v1.JobState_JOB_STATE_PENDING] != 1 {
		t.Fatalf("EachJobKindState: %v", counts)
	}
}

// TestFinishedSnapshot: a dump loads back into an equal catalog (equal
// bytes); a snapshot written before the finished store (every job in
// jobs) loads with its finished jobs moved, and dumps as the new format
// does; and two stores given the same jobs in different orders and
// transactions dump the same bytes (every node holds the same catalog).
func TestFinishedSnapshot(t *testing.T) {
	var js []*v1.Job
	for i := range 300 {
		j := testJob(i)
		switch i % 4 {
		case 2:
			j = finishedJob(i, v1.JobState_JOB_STATE_SUCCEEDED)
			j.Result = &v1.JobResult{BackupId: fmt.Sprintf("b%d", i)}
		case 3:
			j = finishedJob(i, v1.JobState_JOB_STATE_FAILED)
			if i%8 == 7 {
				j.StoppingAgent = "a1"
			}
		}
		js = append(js, j)
	}
	a := New()
	put(t, a, js...)
	dump := a.Read().Dump()
	if len(dump.GetFinishedJobs()) != 150-37 || len(dump.GetJobs()) != 150+37 {
		t.Fatalf("dump: %d finished, %d others", len(dump.GetFinishedJobs()), len(dump.GetJobs()))
	}
	want := dumpBytes(t, a)

	b := loadDump(t, want)
	if got := dumpBytes(t, b); string(got) != string(want) {
		t.Fatal("a loaded dump dumps different bytes")
	}
	if got, w := ids(b.Read().Jobs(JobFilter{Instance: "db1"})), expected(js, JobFilter{Instance: "db1"}); !slices.Equal(got, w) {
		t.Fatalf("after loading: %v, want %v", got, w)
	}

	// The old format: every job in jobs.
	old := proto.CloneOf(dump)
	old.FinishedJobs = nil
	old.Jobs = slices.Clone(js)
	slices.SortFunc(old.Jobs, func(x, y *v1.Job) int {
		return map[bool]int{true: -1, false: 1}[x.GetId() < y.GetId()]
	})
	ob, _ := proto.MarshalOptions{Deterministic: true}.Marshal(old)
	c := loadDump(t, ob)
	if c.Read().FinishedCount() != 150-37 {
		t.Fatalf("an old snapshot: %d jobs moved to the finished store, want %d", c.Read().FinishedCount(), 150-37)
	}
	if got := dumpBytes(t, c); string(got) != string(want) {
		t.Fatal("an old snapshot, loaded, dumps differently from the catalog it was taken of")
	}

	// Another node: the same jobs, shuffled, in batches, with detours
	// (a job first put running, then finished).
	d := New()
	// A fixed shuffle (7 is prime to 300) in batches of 1 to 40.
	var perm []int
	for i := range js {
		perm = append(perm, (i*7+11)%len(js))
	}
	for b := 0; len(perm) > 0; b++ {
		k := min(len(perm), 1+(b*13)%40)
		w := d.Write()
		for _, i := range perm[:k] {
			if finished(js[i]) {
				r := proto.CloneOf(js[i])
				r.State = v1.JobState_JOB_STATE_RUNNING
				if err := w.PutJob(r); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.PutJob(js[i]); err != nil {
				t.Fatal(err)
			}
		}
		w.Commit()
		perm = perm[k:]
	}
	if got := dumpBytes(t, d); string(got) != string(want) {
		t.Fatal("the same jobs put in another order dump differently")
	}
}

// TestFinishedConcurrentReads: while a writer moves jobs back and forth
// between go-memdb and the finished store (and replaces finished ones),
// every Read and every Snapshot sees each of the N jobs exactly once: the
// two places are published together. Run with -race it also checks that
// readers of a published version never touch what the writer changes.
func TestFinishedConcurrentReads(t *testing.T) {
	const n = 200
	s := New()
	var js []*v1.Job
	for i := range n {
		js = append(js, finishedJob(i, v1.JobState_JOB_STATE_SUCCEEDED))
	}
	put(t, s, js...)
	stop := make(chan struct{})
	done := make(chan error, 3)
	for r := range 3 {
		go func() {
			for reads := 0; ; reads++ {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				var got []string
				if r == 2 {
					got = ids(s.Snapshot().Read().Jobs(JobFilter{}))
				} else {
					got = ids(s.Read().Jobs(JobFilter{}))
				}
				slices.Sort(got)
				if len(slices.Compact(got)) != n || len(got) != n {
					done <- fmt.Errorf("read %d saw %d distinct jobs of %d", reads, len(slices.Compact(got)), n)
					return
				}
			}
		}()
	}
	for step := range 400 {
		w := s.Write()
		for k := range 10 {
			j := proto.CloneOf(js[(step*10+k)%n])
			if step%2 == 0 {
				j.State = v1.JobState_JOB_STATE_RUNNING
			} else {
				j.Reason = fmt.Sprintf("step %d", step)
			}
			if err := w.PutJob(j); err != nil {
				t.Fatal(err)
			}
		}
		w.Commit()
	}
	close(stop)
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

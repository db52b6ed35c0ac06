package catalog

import (
	"bytes"
	"fmt"
	"math"
	"slices"

	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// What history pruning reads and removes. The decisions (which records
// may go) are the FSM's; these are the index walks they need.

// NthNewestFinished returns the finish time (updated_at, Unix nanoseconds)
// and id of the n-th most recently finished job (1 is the newest), and
// false when fewer than n jobs are finished. It costs a seek by rank in
// the finish tree (its nodes keep counts) and a sort of the few terminal
// jobs still in go-memdb, not n steps: every PruneCatalog entry asks.
func (r *Read) NthNewestFinished(n int) (Cursor, bool) {
	if n <= 0 {
		return Cursor{}, false
	}
	// S: the tree's entries from index start up, and the k jobs in
	// go-memdb. The n newest of all are in S, so the answer is S's n-th
	// newest, its (|S|-n)-th oldest (0-based); |S|-n <= k, so it is among
	// the k+1 oldest tree entries of S and the k jobs.
	mem := r.memFinished()
	k, size := len(mem), r.fin.byFinished.Len()
	start := max(0, size-n)
	total := size - start + k
	if total < n {
		return Cursor{}, false
	}
	cands := make([]Cursor, 0, 2*k+1)
	for _, j := range mem {
		cands = append(cands, FinishedPos(j))
	}
	if first, ok := r.fin.byFinished.GetAt(start); ok {
		r.fin.byFinished.Ascend(first, func(e *fjob) bool {
			cands = append(cands, e.finishedPos())
			return len(cands) < 2*k+1
		})
	}
	slices.SortFunc(cands, func(a, b Cursor) int {
		if a.OlderThan(b) {
			return -1
		}
		if b.OlderThan(a) {
			return 1
		}
		return 0
	})
	return cands[total-n], true
}

// FinishedPos is a finished job's position in the finished index: its
// finish time (updated_at) and id.
func FinishedPos(j *v1.Job) Cursor { return CursorOf(j.GetUpdatedAt(), j.GetId()) }

// EachFinishedJob calls fn for the finished jobs (every terminal job, its
// attempt stopped or not), oldest finish first, until fn returns false.
// fn gets the fields pruning checks first and decodes the record only if
// it asks (FinishedJob.Job). fn must not change the catalog (collect,
// then delete).
func (r *Read) EachFinishedJob(fn func(FinishedJob) bool) { r.eachFinished(nil, fn) }

// EachFinishedAfter is EachFinishedJob from strictly after the finish
// position `after` (nil: from the oldest): it seeks there in the finish
// index instead of walking the jobs before it.
func (r *Read) EachFinishedAfter(after *Cursor, fn func(FinishedJob) bool) {
	if after == nil {
		r.eachFinished(nil, fn)
		return
	}
	r.eachFinished(after, func(f FinishedJob) bool { return f.Pos == *after || fn(f) })
}

// EachFinishedSince calls fn for the jobs that finished at or after
// `since` (Unix nanoseconds of updated_at), oldest finish first, until fn
// returns false. fn must not change the catalog.
func (r *Read) EachFinishedSince(since int64, fn func(*v1.Job) bool) {
	r.eachFinished(&Cursor{At: since}, func(f FinishedJob) bool { return fn(f.Job()) })
}

// LatestRun returns the job of (policy, schedule index, run key) with the
// latest scheduled time (then the greatest id), or nil: the run the
// scheduler remembers.
func (r *Read) LatestRun(policy string, index uint32, runKey string) *v1.Job {
	mem, fin := r.latestRun(policy, index, runKey)
	if fin != nil {
		return fin.job()
	}
	return mem
}

// LatestRunID is the id of LatestRun's job ("" for none), without
// decoding a finished one.
func (r *Read) LatestRunID(policy string, index uint32, runKey string) string {
	mem, fin := r.latestRun(policy, index, runKey)
	if fin != nil {
		return fin.id
	}
	return mem.GetId()
}

// latestRun is LatestRun's job: in go-memdb (mem) or finished (fin), at
// most one of them set.
func (r *Read) latestRun(policy string, index uint32, runKey string) (mem *v1.Job, fin *fjob) {
	prefix := runPrefix(policy, index, runKey)
	it, err := r.txn.ReverseLowerBound(jobsTableName, "run", append(bytes.Clone(prefix), bytes.Repeat([]byte{0xff}, 9)...))
	if err != nil {
		panic(fmt.Sprintf("catalog: scheduled runs lookup: %v", err))
	}
	if obj := it.Next(); obj != nil {
		j := obj.(*v1.Job)
		if j.GetPolicy() == policy && j.GetScheduleIndex() == index && j.GetRunKey() == runKey {
			mem = j
		}
	}
	p, okP := r.fin.lookup(policy)
	k, okK := r.fin.lookup(runKey)
	if okP && okK && p != 0 && k != 0 {
		r.fin.byRun.Descend(&fjob{policy: p, scheduleIndex: index, runKey: k, scheduled: math.MaxInt64, id: topID}, func(e *fjob) bool {
			if e.policy == p && e.scheduleIndex == index && e.runKey == k {
				fin = e
			}
			return false
		})
	}
	switch {
	case fin == nil:
		return mem, nil
	case mem != nil && (nanos(mem.GetScheduledFor()) > fin.scheduled ||
		nanos(mem.GetScheduledFor()) == fin.scheduled && mem.GetId() > fin.id):
		return mem, nil
	}
	return nil, fin
}

// DeleteJob removes a job record; a missing one is ErrNotFound.
func (w *Write) DeleteJob(id string) error {
	n, err := w.txn.DeleteAll(jobsTableName, "id", id)
	if err != nil {
		return fmt.Errorf("deleting job %q: %w", id, err)
	}
	if n == 0 {
		if _, ok := w.fin.get(id); ok {
			w.finMut().delete(id)
			return nil
		}
		return Errorf(ErrNotFound, "job %q not found", id)
	}
	return nil
}

// Before reports whether t is earlier than the cursor's time.
func Before(t *timestamppb.Timestamp, c int64) bool { return nanos(t) < c }

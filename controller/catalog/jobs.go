package catalog

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const jobsTableName = "jobs"

// jobsTable: one row per job that is not finished (finished.go keeps
// those), keyed by job id. The ordered indexes (keys
// in order.go) serve the listings newest first and the leader's scans: by
// creation time and by instance (every job); active jobs by state and by
// instance and state (the leader assigns pending jobs, and the
// one-backup-per-instance check on every submit reads the instance's
// active jobs, not its whole history); finished jobs by the time they
// ended (history pruning, oldest first; the alert loop's new failures);
// scheduled runs by (policy, schedule, run key, scheduled time) (the
// scheduler's memory of its last runs).
//
// Every index entry costs about 450 bytes of radix tree (go-memdb), more
// than a typical job record: that is why finished jobs, the bulk of a
// catalog, move out of this table (finished.go). The terminal jobs still
// here are those whose attempt is stopping.
func jobsTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: jobsTableName,
		Indexes: map[string]*memdb.IndexSchema{
			"id":      {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}},
			"created": {Name: "created", Indexer: keyIndex{key: jobKey(func(j *v1.Job) []byte { return nil })}},
			"instance": {Name: "instance", Indexer: keyIndex{key: jobKey(func(j *v1.Job) []byte {
				return appendStr(nil, j.GetInstance())
			})}},
			"state": {Name: "state", AllowMissing: true, Indexer: keyIndex{key: activeJobKey(func(j *v1.Job) []byte {
				return appendU32(nil, uint32(j.GetState()))
			})}},
			"instance_state": {Name: "instance_state", AllowMissing: true, Indexer: keyIndex{key: activeJobKey(func(j *v1.Job) []byte {
				return appendU32(appendStr(nil, j.GetInstance()), uint32(j.GetState()))
			})}},
			"finished": {Name: "finished", AllowMissing: true, Indexer: keyIndex{key: func(obj any) ([]byte, bool) {
				j := obj.(*v1.Job)
				if !Terminal(j.GetState()) {
					return nil, false
				}
				return appendTime(nil, j.GetUpdatedAt()), true
			}}},
			"run": {Name: "run", AllowMissing: true, Indexer: keyIndex{key: func(obj any) ([]byte, bool) {
				j := obj.(*v1.Job)
				if j.GetPolicy() == "" || j.GetRunKey() == "" {
					return nil, false
				}
				return appendTime(runPrefix(j.GetPolicy(), j.GetScheduleIndex(), j.GetRunKey()), j.GetScheduledFor()), true
			}}},
			// The leader finds an agent's stopping attempts (to clear them
			// from its heartbeats, and to keep their instances busy).
			"stopping_agent": {Name: "stopping_agent", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "StoppingAgent"}},
		},
	}
}

// activeJobKey is jobKey for active jobs only.
func activeJobKey(prefix func(*v1.Job) []byte) func(any) ([]byte, bool) {
	k := jobKey(prefix)
	return func(obj any) ([]byte, bool) {
		if !Active(obj.(*v1.Job).GetState()) {
			return nil, false
		}
		return k(obj)
	}
}

// jobKey is an ordered job index: prefix(j) then the creation time. An
// empty instance is not indexed by instance.
func jobKey(prefix func(*v1.Job) []byte) func(any) ([]byte, bool) {
	return func(obj any) ([]byte, bool) {
		j := obj.(*v1.Job)
		return appendTime(prefix(j), j.GetCreatedAt()), true
	}
}

func runPrefix(policy string, index uint32, runKey string) []byte {
	return appendStr(appendU32(appendStr(nil, policy), index), runKey)
}

// Job returns the job with id, or ErrNotFound.
func (r *Read) Job(id string) (*v1.Job, error) { return r.JobWatch(id, nil) }

// JobWatch is Job that also adds the job's record to watch (when not nil),
// so that watch.Wait returns once the job changes, or is created.
//
// A job that is finished (or missing) is watched through the finished
// store's channel, which fires at every commit that changes a finished job:
// a watcher may wake for another job's change, and reads again.
func (r *Read) JobWatch(id string, watch *Watch) (*v1.Job, error) {
	ch, obj, err := r.txn.FirstWatch(jobsTableName, "id", id)
	if err != nil {
		panic(fmt.Sprintf("catalog: %s lookup: %v", jobsTableName, err))
	}
	if obj != nil {
		watch.add(ch)
		return obj.(*v1.Job), nil
	}
	if r.finCh != nil {
		watch.add(r.finCh)
	}
	if e, ok := r.fin.get(id); ok {
		// Going back to go-memdb also changes the finished store.
		return e.job(), nil
	}
	// Missing: created either way.
	watch.add(ch)
	return nil, Errorf(ErrNotFound, "job %q not found", id)
}

// JobFilter selects jobs; zero fields match everything.
type JobFilter struct {
	Instance string
	States   []v1.JobState
	Kind     v1.JobKind
	// Unswept: only the jobs Unswept reports (the reconcile sweep's
	// candidates); finished jobs are filtered without being decoded.
	Unswept bool
}

// Jobs returns every job that matches f, newest first: by creation time,
// then id. It walks the whole range (tests and small tables); listings use
// JobsPage.
func (r *Read) Jobs(f JobFilter) []*v1.Job {
	var out []*v1.Job
	var after *Cursor
	for {
		p, next := r.JobsPage(f, after, maxScan)
		out = append(out, p...)
		if next == nil {
			return out
		}
		after = next
	}
}

// JobsPage returns up to limit jobs that match f, newest first (creation
// time, then id), strictly after `after` (nil: from the newest), and the
// cursor of the next page (nil at the end). The jobs of go-memdb and of
// the finished store are merged. The instance and states are walked on
// their indexes (finished jobs also on a kind index); a filter an index
// does not cover is applied during the walk, which is bounded (maxScan):
// a page may come back short, with a cursor, when matches are rare.
func (r *Read) JobsPage(f JobFilter, after *Cursor, limit int) ([]*v1.Job, *Cursor) {
	var srcs []source
	states := slices.Clone(f.States)
	slices.Sort(states)
	states = slices.Compact(states)
	// Only active jobs are indexed by state: other states are filtered
	// while walking by time or instance.
	byState := len(states) > 0 && !slices.ContainsFunc(states, func(s v1.JobState) bool { return !Active(s) })
	switch {
	case f.Instance != "" && byState:
		for _, st := range states {
			srcs = append(srcs, source{index: "instance_state", prefix: appendU32(appendStr(nil, f.Instance), uint32(st)),
				in: func(o any) bool { j := o.(*v1.Job); return j.GetInstance() == f.Instance && j.GetState() == st }})
		}
	case f.Instance != "":
		srcs = []source{{index: "instance", prefix: appendStr(nil, f.Instance),
			in: func(o any) bool { return o.(*v1.Job).GetInstance() == f.Instance }}}
	case byState:
		for _, st := range states {
			srcs = append(srcs, source{index: "state", prefix: appendU32(nil, uint32(st)),
				in: func(o any) bool { return o.(*v1.Job).GetState() == st }})
		}
	default:
		srcs = []source{{index: "created"}}
	}
	match := func(j *v1.Job) bool {
		return (!f.Unswept || Unswept(j)) && (f.Kind == v1.JobKind_JOB_KIND_UNSPECIFIED || j.GetKind() == f.Kind) &&
			(len(states) == 0 || slices.Contains(states, j.GetState()))
	}
	lanes := memLanes(r, jobsTableName, srcs, jobPos, match)
	if !byState {
		lanes = append(lanes, r.finLanes(f.Instance, states, f.Kind, f.Unswept)...)
	}
	return pageScan(lanes, jobPos, after, limit)
}

func jobPos(j *v1.Job) Cursor { return CursorOf(j.GetCreatedAt(), j.GetId()) }

// JobsInState returns the jobs in active state, oldest first (by creation
// time, then id): the order the leader assigns pending jobs in. Finished
// jobs are not indexed by state: a finished state panics (a programming
// error; walk EachFinishedJob or JobsPage).
func (r *Read) JobsInState(state v1.JobState) []*v1.Job {
	if !Active(state) {
		panic("catalog: JobsInState(" + state.String() + "): only active states are indexed")
	}
	return all[*v1.Job](r, jobsTableName, "state", appendU32(nil, uint32(state)))
}

// ActiveJobs returns the jobs that are pending, assigned or running.
func (r *Read) ActiveJobs() []*v1.Job {
	var js []*v1.Job
	for _, s := range []v1.JobState{v1.JobState_JOB_STATE_PENDING, v1.JobState_JOB_STATE_ASSIGNED, v1.JobState_JOB_STATE_RUNNING} {
		js = append(js, r.JobsInState(s)...)
	}
	return js
}

// ActiveJobsOf returns the pending, assigned and running jobs of instance,
// in no particular order; the cost does not grow with the instance's
// finished jobs.
func (r *Read) ActiveJobsOf(instance string) []*v1.Job {
	var js []*v1.Job
	for _, s := range []v1.JobState{v1.JobState_JOB_STATE_PENDING, v1.JobState_JOB_STATE_ASSIGNED, v1.JobState_JOB_STATE_RUNNING} {
		js = append(js, all[*v1.Job](r, jobsTableName, "instance_state", appendU32(appendStr(nil, instance), uint32(s)))...)
	}
	return js
}

// StoppingJobsOf returns the jobs whose cancelled or expired attempt may
// still be stopping on agent (Job.stopping_lease), in no particular order.
func (r *Read) StoppingJobsOf(agent string) []*v1.Job {
	return all[*v1.Job](r, jobsTableName, "stopping_agent", agent)
}

// JobsOfPolicy returns the scheduled runs of policy (its jobs with a run
// key), by schedule index, run key, scheduled time and id. The finished
// ones are decoded: a policy's whole history.
func (r *Read) JobsOfPolicy(policy string) []*v1.Job {
	js := all[*v1.Job](r, jobsTableName, "run", appendStr(nil, policy))
	if p, ok := r.fin.lookup(policy); ok && policy != "" {
		r.fin.byRun.Ascend(&fjob{policy: p}, func(e *fjob) bool {
			if e.policy != p {
				return false
			}
			js = append(js, e.job())
			return true
		})
	}
	slices.SortFunc(js, func(a, b *v1.Job) int {
		return cmp.Or(cmp.Compare(a.GetScheduleIndex(), b.GetScheduleIndex()), strings.Compare(a.GetRunKey(), b.GetRunKey()),
			cmp.Compare(nanos(a.GetScheduledFor()), nanos(b.GetScheduledFor())), strings.Compare(a.GetId(), b.GetId()))
	})
	return js
}

// PutJob creates or replaces a job. j must not change afterwards. A
// finished job (finished.go) goes to the finished store, any other to the
// jobs table, leaving the other place.
func (w *Write) PutJob(j *v1.Job) error {
	if j.GetId() == "" {
		return Errorf(ErrInvalid, "%s record: a job without an id", jobsTableName)
	}
	if finished(j) {
		return w.finPut(j)
	}
	if _, ok := w.fin.get(j.GetId()); ok {
		w.finMut().delete(j.GetId())
	}
	return w.insert(jobsTableName, j)
}

// Terminal reports whether a job in state s is over.
func Terminal(s v1.JobState) bool {
	switch s {
	case v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_FAILED, v1.JobState_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

// Active reports whether a job in state s holds or waits for an agent.
func Active(s v1.JobState) bool {
	switch s {
	case v1.JobState_JOB_STATE_PENDING, v1.JobState_JOB_STATE_ASSIGNED, v1.JobState_JOB_STATE_RUNNING:
		return true
	}
	return false
}

// SameLease reports whether two lease tokens are the same grant. Two unset
// tokens are not: an unset lease never fences anything in.
func SameLease(a, b *v1.LeaseToken) bool {
	return a != nil && b != nil && a.GetTerm() == b.GetTerm() && a.GetIndex() == b.GetIndex() && a.GetJobId() == b.GetJobId()
}

// LeaseString formats a token for messages: "job@term/index".
func LeaseString(l *v1.LeaseToken) string {
	if l == nil {
		return "none"
	}
	return fmt.Sprintf("%s@%d/%d", l.GetJobId(), l.GetTerm(), l.GetIndex())
}

// AttemptBackupID is the backup id attempt n of job writes: every attempt
// has its own, so two attempts never write the same manifest.
func AttemptBackupID(jobID string, attempt uint32) string {
	return fmt.Sprintf("%s-a%d", jobID, attempt)
}

// StateName is a job state for messages: "running", "pending".
func StateName(s v1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

// KindName is a job kind for messages: "backup", "restore".
func KindName(k v1.JobKind) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k.String(), "JOB_KIND_")), "_", " ")
}

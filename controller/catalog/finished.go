package catalog

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/tidwall/btree"
	"google.golang.org/protobuf/proto"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// The finished jobs live outside go-memdb. A catalog that keeps a year of
// history holds a million of them, and in go-memdb each cost its 1.3 KB
// record plus about 450 bytes per index entry (every radix node carries
// watch channels): 4.7 KB a job, 4.5 GiB at a million (bench/README.md,
// BenchmarkCatalog). Nothing watches a finished job for long (a job watch
// ends at the terminal state) and the leader's loops only read active
// ones, so finished jobs need neither watches nor go-memdb's radix trees.
//
// Here a finished job is its deterministic marshalling (about 320 bytes)
// plus the few fields the listings and pruning order and filter by (an
// fjob of 80 bytes: the id is a substring of the record, names are
// numbers into a table of the distinct instance, policy and run key
// names), in copy-on-write B-trees of pointers (about 10 bytes an entry):
// by id, by creation (the listing's order), by instance, by state and by
// kind (the listing's filters), by finish time (pruning, oldest first; the
// alert loop's new failures) and by scheduled run (the scheduler's memory
// of its last runs). A page decodes only the jobs it returns.
//
// "Finished" is a terminal state with no attempt still stopping
// (Job.stopping_agent empty): a cancelled job whose agent has not
// confirmed the stop stays in go-memdb, indexed by that agent, until
// AttemptStopped clears it. Write.PutJob moves a job at that point, in the
// FSM's apply, so every node holds the same jobs in the same place.
//
// Versions: a Write copies the trees (O(1); the nodes it changes are
// copied on first write) and Commit publishes the copy, together with
// go-memdb's new root, under Store.mu; a Read keeps the trees it started
// with, unchanged by later commits, like a go-memdb snapshot.

// fjob is a finished job: the fields the trees order by, and the record.
type fjob struct {
	// The Job, marshalled deterministically; never changed.
	data string
	// Job.id: a substring of data (the first field) when it can be.
	id                           string
	created, finished, scheduled int64 // Unix nanoseconds
	// Numbers of names in finTrees.names; 0 is "".
	instance, policy, runKey uint32
	scheduleIndex            uint32
	// JobState and JobKind, in 16 bits (finPut refuses a kind beyond).
	state, kind int16
	// unswept: Unswept(job), kept so that the reconcile sweep and pruning
	// decode only the jobs that may need the sweep.
	unswept bool
}

// Unswept reports whether j is a backup job the reconcile sweep has not
// swept (orphans_swept_at unset) that has dead attempts: attempts that
// wrote to a backup id under a lease and did not become the job's backup
// (reconcile.DeadAttempts lists them; a test there keeps the two in
// step). Finished jobs keep it in their entry, so that the sweep and
// pruning decode only those.
func Unswept(j *v1.Job) bool {
	if j.GetKind() != v1.JobKind_JOB_KIND_BACKUP || j.GetOrphansSweptAt() != nil {
		return false
	}
	var recorded string
	if j.GetState() == v1.JobState_JOB_STATE_SUCCEEDED {
		recorded = j.GetResult().GetBackupId()
	}
	for _, a := range j.GetPreviousAttempts() {
		if a.GetBackupId() != "" && a.GetLease() != nil && a.GetBackupId() != recorded {
			return true
		}
	}
	return Terminal(j.GetState()) && j.GetState() != v1.JobState_JOB_STATE_SUCCEEDED && j.GetLease() != nil && j.GetBackup().GetBackupId() != ""
}

// finished reports whether j belongs in the finished store.
func finished(j *v1.Job) bool { return Terminal(j.GetState()) && j.GetStoppingAgent() == "" }

var marshalJob = proto.MarshalOptions{Deterministic: true}

// newFjob builds the entry of j, whose marshalling is data, naming its
// names in t (a Write's copy).
func (t *finTrees) newFjob(j *v1.Job, data string) fjob {
	e := fjob{
		data: data, id: j.GetId(),
		instance: t.intern(j.GetInstance()), policy: t.intern(j.GetPolicy()), runKey: t.intern(j.GetRunKey()),
		created: nanos(j.GetCreatedAt()), finished: nanos(j.GetUpdatedAt()), scheduled: nanos(j.GetScheduledFor()),
		scheduleIndex: j.GetScheduleIndex(), state: int16(j.GetState()), kind: int16(j.GetKind()), unswept: Unswept(j),
	}
	// Field 1 (id) comes first: tag 0x0a, a one-byte length.
	if n := len(e.id); n < 128 && len(data) >= 2+n && data[0] == 0x0a && int(data[1]) == n && data[2:2+n] == e.id {
		e.id = data[2 : 2+n]
	}
	return e
}

// bytesOf is the record as bytes for reading only (decoding, marshalling
// a snapshot), without copying it.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// job decodes the record. The bytes were marshalled by this package or
// decoded once already when a snapshot was loaded: an error is a bug.
// Unmarshal copies what it keeps, so the record's memory stays read-only.
func (e *fjob) record() *v1.Job { return e.job() }

func (e *fjob) job() *v1.Job {
	j := &v1.Job{}
	if err := proto.Unmarshal(bytesOf(e.data), j); err != nil {
		panic(fmt.Sprintf("catalog: finished job %q does not decode: %v", e.id, err))
	}
	return j
}

func (e *fjob) pos() Cursor         { return Cursor{At: e.created, ID: e.id} }
func (e *fjob) finishedPos() Cursor { return Cursor{At: e.finished, ID: e.id} }
func (e *fjob) hasRun() bool        { return e.policy != 0 && e.runKey != 0 }

// The orders. byCreated and its prefixed variants end with (created, id),
// the listing's key.
func cmpCreated(a, b *fjob) int {
	if c := cmp.Compare(a.created, b.created); c != 0 {
		return c
	}
	return cmp.Compare(a.id, b.id)
}

func lessID(a, b *fjob) bool      { return a.id < b.id }
func lessCreated(a, b *fjob) bool { return cmpCreated(a, b) < 0 }
func lessInstance(a, b *fjob) bool {
	if a.instance != b.instance {
		return a.instance < b.instance
	}
	return cmpCreated(a, b) < 0
}
func lessState(a, b *fjob) bool {
	if a.state != b.state {
		return a.state < b.state
	}
	return cmpCreated(a, b) < 0
}
func lessKind(a, b *fjob) bool {
	if a.kind != b.kind {
		return a.kind < b.kind
	}
	return cmpCreated(a, b) < 0
}
func lessFinished(a, b *fjob) bool {
	if a.finished != b.finished {
		return a.finished < b.finished
	}
	return a.id < b.id
}
func lessRun(a, b *fjob) bool {
	switch {
	case a.policy != b.policy:
		return a.policy < b.policy
	case a.scheduleIndex != b.scheduleIndex:
		return a.scheduleIndex < b.scheduleIndex
	case a.runKey != b.runKey:
		return a.runKey < b.runKey
	case a.scheduled != b.scheduled:
		return a.scheduled < b.scheduled
	}
	return a.id < b.id
}

// topID sorts after every job id: ids are proto strings, valid UTF-8,
// which never holds the byte 0xff.
const topID = "\xff"

type tree = btree.BTreeG[*fjob]

// finTrees is one version of the finished store. A published version is
// never changed; Write changes a copy.
type finTrees struct {
	byID, byCreated, byInstance, byState, byKind, byFinished, byRun *tree
	// names[i] is name number i (0 is ""); nameIDs finds the number of a
	// name. A new name is appended: a version only reads up to its own
	// length, so the versions share the array.
	names   []string
	nameIDs *btree.BTreeG[nameID]
}

type nameID struct {
	name string
	id   uint32
}

func newFinTrees() *finTrees {
	n := func(less func(a, b *fjob) bool) *tree {
		return btree.NewBTreeGOptions(less, btree.Options{NoLocks: true})
	}
	return &finTrees{byID: n(lessID), byCreated: n(lessCreated), byInstance: n(lessInstance), byState: n(lessState),
		byKind: n(lessKind), byFinished: n(lessFinished), byRun: n(lessRun), names: []string{""},
		nameIDs: btree.NewBTreeGOptions(func(a, b nameID) bool { return a.name < b.name }, btree.Options{NoLocks: true})}
}

// lookup is the number of name, false when no finished job has it.
func (t *finTrees) lookup(name string) (uint32, bool) {
	if name == "" {
		return 0, true
	}
	n, ok := t.nameIDs.Get(nameID{name: name})
	return n.id, ok
}

// intern numbers name (t is a Write's copy). Names are not forgotten when
// their last job goes: there are as many as instances and policies.
func (t *finTrees) intern(name string) uint32 {
	if id, ok := t.lookup(name); ok {
		return id
	}
	// The append writes past the end of every published version (their
	// lengths bound what they read); an aborted Write's name is
	// overwritten by the next Write's.
	t.names = append(t.names, name)
	id := uint32(len(t.names) - 1)
	t.nameIDs.Set(nameID{name: name, id: id})
	return id
}

// copy is a new version sharing every node with t until written.
func (t *finTrees) copy() *finTrees {
	return &finTrees{byID: t.byID.Copy(), byCreated: t.byCreated.Copy(), byInstance: t.byInstance.Copy(),
		byState: t.byState.Copy(), byKind: t.byKind.Copy(), byFinished: t.byFinished.Copy(), byRun: t.byRun.Copy(),
		names: t.names, nameIDs: t.nameIDs.Copy()}
}

func (t *finTrees) get(id string) (*fjob, bool) { return t.byID.Get(&fjob{id: id}) }

func (t *finTrees) set(e *fjob) {
	t.delete(e.id)
	t.byID.Set(e)
	t.index(e)
}

// load adds e, whose id sorts after every id in t (a snapshot's sorted
// list): the id tree appends instead of searching.
func (t *finTrees) load(e *fjob) {
	t.byID.Load(e)
	t.index(e)
}

func (t *finTrees) index(e *fjob) {
	t.byCreated.Set(e)
	t.byInstance.Set(e)
	t.byState.Set(e)
	t.byKind.Set(e)
	t.byFinished.Set(e)
	if e.hasRun() {
		t.byRun.Set(e)
	}
}

func (t *finTrees) delete(id string) bool {
	old, ok := t.byID.Delete(&fjob{id: id})
	if !ok {
		return false
	}
	t.byCreated.Delete(old)
	t.byInstance.Delete(old)
	t.byState.Delete(old)
	t.byKind.Delete(old)
	t.byFinished.Delete(old)
	if old.hasRun() {
		t.byRun.Delete(old)
	}
	return true
}

// finPut stores a finished job, replacing any record of its id in either
// place.
func (w *Write) finPut(j *v1.Job) error {
	if k := j.GetKind(); k != v1.JobKind(int16(k)) {
		return Errorf(ErrInvalid, "job %q: kind %d out of range", j.GetId(), k)
	}
	data, err := marshalJob.Marshal(j)
	if err != nil {
		return Errorf(ErrInvalid, "job %q: %v", j.GetId(), err)
	}
	if _, err := w.txn.DeleteAll(jobsTableName, "id", j.GetId()); err != nil {
		return fmt.Errorf("moving job %q out of the active table: %w", j.GetId(), err)
	}
	t := w.finMut()
	e := t.newFjob(j, string(data))
	t.set(&e)
	return nil
}

// finLane walks one finished tree newest first for a job listing
// (treeLane); prefix holds the fields of the tree's range.
func finLane(t *tree, prefix fjob, in, match func(*fjob) bool) lane[*v1.Job] {
	return treeLane(t, func(after *Cursor) *fjob {
		pivot := prefix
		pivot.created, pivot.id = math.MaxInt64, topID
		if after != nil {
			pivot.created, pivot.id = after.At, after.ID
		}
		return &pivot
	}, in, match)
}

// finLanes are the lanes of the finished store for a job listing: the
// instance's tree, else one state tree per finished state asked, else the
// kind's, else all by creation. states is sorted and without duplicates.
func (r *Read) finLanes(instance string, states []v1.JobState, kind v1.JobKind, unswept bool) []lane[*v1.Job] {
	t := r.fin
	match := func(e *fjob) bool {
		return (!unswept || e.unswept) && (kind == v1.JobKind_JOB_KIND_UNSPECIFIED || v1.JobKind(e.kind) == kind) &&
			(len(states) == 0 || slices.Contains(states, v1.JobState(e.state)))
	}
	switch {
	case instance != "":
		in, ok := t.lookup(instance)
		if !ok {
			return nil // no finished job of that instance
		}
		return []lane[*v1.Job]{finLane(t.byInstance, fjob{instance: in}, func(e *fjob) bool { return e.instance == in }, match)}
	case len(states) > 0:
		var lanes []lane[*v1.Job]
		for _, st := range states {
			if Terminal(st) {
				lanes = append(lanes, finLane(t.byState, fjob{state: int16(st)}, func(e *fjob) bool { return v1.JobState(e.state) == st }, match))
			}
		}
		return lanes
	case kind != v1.JobKind_JOB_KIND_UNSPECIFIED:
		if kind != v1.JobKind(int16(kind)) {
			return nil // no such kind is stored
		}
		return []lane[*v1.Job]{finLane(t.byKind, fjob{kind: int16(kind)}, func(e *fjob) bool { return v1.JobKind(e.kind) == kind }, match)}
	}
	return []lane[*v1.Job]{finLane(t.byCreated, fjob{}, nil, match)}
}

// FinishedJob is a finished job met by EachFinishedJob: where it is in the
// finish order and the fields pruning checks first, with the record
// decoded only when asked for.
type FinishedJob struct {
	// Finish time (updated_at) and id.
	Pos                          Cursor
	ID, Instance, Policy, RunKey string
	ScheduleIndex                uint32
	// Unswept(Job()).
	Unswept bool
	job     func() *v1.Job
}

// Job returns the record (decoded on each call for a job in the finished
// store); it must not be changed.
func (f FinishedJob) Job() *v1.Job { return f.job() }

func finishedJobOf(j *v1.Job) FinishedJob {
	return FinishedJob{Pos: FinishedPos(j), ID: j.GetId(), Instance: j.GetInstance(), Policy: j.GetPolicy(),
		RunKey: j.GetRunKey(), ScheduleIndex: j.GetScheduleIndex(), Unswept: Unswept(j), job: func() *v1.Job { return j }}
}

func (t *finTrees) finishedJobOf(e *fjob) FinishedJob {
	return FinishedJob{Pos: e.finishedPos(), ID: e.id, Instance: t.names[e.instance], Policy: t.names[e.policy], RunKey: t.names[e.runKey],
		ScheduleIndex: e.scheduleIndex, Unswept: e.unswept, job: e.job}
}

// memFinished returns the terminal jobs still in go-memdb (their attempt
// is stopping), by finish time and id: a handful at any time.
func (r *Read) memFinished() []*v1.Job {
	return all[*v1.Job](r, jobsTableName, "finished", []byte{})
}

// eachFinished calls fn for every finished job, in either place, from
// the finish position `from` (inclusive; nil: the oldest) up, oldest
// first, until fn returns false.
func (r *Read) eachFinished(from *Cursor, fn func(FinishedJob) bool) {
	mem := r.memFinished()
	pivot := &fjob{finished: math.MinInt64}
	if from != nil {
		pivot = &fjob{finished: from.At, id: from.ID}
		mem = slices.DeleteFunc(mem, func(j *v1.Job) bool { return FinishedPos(j).OlderThan(*from) })
	}
	stopped := false
	r.fin.byFinished.Ascend(pivot, func(e *fjob) bool {
		p := e.finishedPos()
		for len(mem) > 0 && FinishedPos(mem[0]).OlderThan(p) {
			if !fn(finishedJobOf(mem[0])) {
				stopped = true
				return false
			}
			mem = mem[1:]
		}
		if !fn(r.fin.finishedJobOf(e)) {
			stopped = true
			return false
		}
		return true
	})
	for _, j := range mem {
		if stopped || !fn(finishedJobOf(j)) {
			return
		}
	}
}

// FinishedCount is the number of jobs in the finished store (not those
// whose attempt is still stopping).
func (r *Read) FinishedCount() int { return r.fin.byID.Len() }

// EachJobKindState calls fn with the kind and state of every job, without
// decoding the finished ones (metrics count them at every scrape).
func (r *Read) EachJobKindState(fn func(v1.JobKind, v1.JobState)) {
	each(r, jobsTableName, func(j *v1.Job) { fn(j.GetKind(), j.GetState()) })
	r.fin.byID.Scan(func(e *fjob) bool {
		fn(v1.JobKind(e.kind), v1.JobState(e.state))
		return true
	})
}

// LatestRunsOf returns, for each (schedule index, run key) of policy, the
// run with the latest scheduled time among the jobs keep accepts (ties:
// the smallest id), ordered by schedule index and run key. Finished runs
// are compared on their entries and only each key's winner is decoded:
// the scheduler reads this at every leader change, and a policy's history
// may be a million jobs.
func (r *Read) LatestRunsOf(policy string, keep func(v1.JobKind, v1.JobState) bool) []*v1.Job {
	type key struct {
		index  uint32
		runKey string
	}
	type best struct {
		at  int64
		id  string
		mem *v1.Job
		fin *fjob
	}
	found := map[key]*best{}
	var keys []key
	consider := func(k key, b best) {
		o := found[k]
		switch {
		case o == nil:
			found[k] = &b
			keys = append(keys, k)
		case b.at > o.at || b.at == o.at && b.id < o.id:
			*o = b
		}
	}
	for _, j := range all[*v1.Job](r, jobsTableName, "run", appendStr(nil, policy)) {
		if keep(j.GetKind(), j.GetState()) {
			consider(key{j.GetScheduleIndex(), j.GetRunKey()}, best{at: nanos(j.GetScheduledFor()), id: j.GetId(), mem: j})
		}
	}
	if p, ok := r.fin.lookup(policy); ok && policy != "" {
		r.fin.byRun.Ascend(&fjob{policy: p}, func(e *fjob) bool {
			if e.policy != p {
				return false
			}
			if keep(v1.JobKind(e.kind), v1.JobState(e.state)) {
				consider(key{e.scheduleIndex, r.fin.names[e.runKey]}, best{at: e.scheduled, id: e.id, fin: e})
			}
			return true
		})
	}
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.index, b.index), cmp.Compare(a.runKey, b.runKey)) })
	out := make([]*v1.Job, len(keys))
	for i, k := range keys {
		if b := found[k]; b.fin != nil {
			out[i] = b.fin.job()
		} else {
			out[i] = b.mem
		}
	}
	return out
}

package catalog

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"unsafe"

	"github.com/tidwall/btree"
	"google.golang.org/protobuf/proto"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// The backups live outside go-memdb, like the finished jobs (finished.go)
// and for the same reason: in go-memdb a backup record cost about 3.4 KB
// (its message, about 1 KB decoded, plus six radix indexes whose nodes
// carry watch channels), 330 MiB of the leader's live heap at 100,000
// backups (bench/README.md). A backup is written a handful of times in its
// life (created, completed, pinned, copied, marked, deleted) and nothing
// watches it, so it needs neither watches nor radix trees.
//
// Here a backup is its deterministic marshalling plus a bent: the fields
// the listings, lookups and pruning order and filter by, whose strings are
// substrings of the record. The copy-on-write B-trees (pointers, about 10
// bytes an entry) are the indexes go-memdb had: by id; by start time (the
// listing's order), by instance and by status, each then by start time and
// id; DELETED records by deletion time (tombstone pruning); and the jobs a
// backup refers to (history pruning keeps those jobs). A read decodes only
// the backups it returns.
//
// Every backup is here, whatever its status: a backup in progress is
// written three or four times, which costs a marshalling each, and one
// place is simpler than a move at a status change.
//
// Versions work as for the finished jobs: a Write copies the trees on
// first change (bkMut) and Commit publishes them with go-memdb's root
// under Store.mu.

// bent is a backup: the fields the trees order by, and the record.
type bent struct {
	// The Backup, marshalled deterministically; never changed.
	data string
	// id, instance and refs are substrings of data when they can be.
	id, instance               string
	started, finished, deleted int64 // Unix nanoseconds; deleted only for DELETED
	status                     v1.BackupStatus
	// refs: the jobs the backup refers to (refsOf), sorted, distinct.
	refs []string
}

// refsOf lists the jobs b refers to: the job that wrote it and the expire
// jobs that marked it or its copies (JobReferenced's question), sorted
// and without duplicates.
func refsOf(b *v1.Backup) []string {
	var ids []string
	add := func(id string) {
		if id != "" {
			ids = append(ids, id)
		}
	}
	add(b.GetJobId())
	add(b.GetExpireJobId())
	for _, c := range b.GetCopies() {
		add(c.GetJobId())
		add(c.GetExpireJobId())
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// newBent builds the entry of b, whose marshalling is data.
func newBent(b *v1.Backup, data string) *bent {
	// in returns s as a substring of data (a string field's bytes are in
	// the marshalling as they are), so the entry keeps no copy.
	in := func(s string) string {
		if i := strings.Index(data, s); i >= 0 && s != "" {
			return data[i : i+len(s)]
		}
		return s
	}
	e := &bent{data: data, id: in(b.GetId()), instance: in(b.GetInstance()), started: nanos(b.GetStartedAt()),
		finished: nanos(b.GetFinishedAt()), status: b.GetStatus()}
	if e.status == v1.BackupStatus_BACKUP_STATUS_DELETED {
		e.deleted = nanos(b.GetDeletedAt())
	}
	for _, r := range refsOf(b) {
		e.refs = append(e.refs, in(r))
	}
	return e
}

// backup decodes the record. The bytes were marshalled by this package or
// decoded once already when a snapshot was loaded: an error is a bug.
func (e *bent) record() *v1.Backup { return e.backup() }

func (e *bent) backup() *v1.Backup {
	b := &v1.Backup{}
	if err := proto.Unmarshal(bytesOf(e.data), b); err != nil {
		panic(fmt.Sprintf("catalog: backup %q does not decode: %v", e.id, err))
	}
	return b
}

func (e *bent) pos() Cursor { return Cursor{At: e.started, ID: e.id} }

func cmpStarted(a, b *bent) int {
	return cmp.Or(cmp.Compare(a.started, b.started), cmp.Compare(a.id, b.id))
}

// refEntry is one (job, backup) pair of the refs tree.
type refEntry struct {
	ref string
	b   *bent
}

type bkTree = btree.BTreeG[*bent]

// backTrees is one version of the backups. A published version is never
// changed; Write changes a copy.
type backTrees struct {
	byID, byStarted, byInstance, byStatus, byDeleted *bkTree
	byRef                                            *btree.BTreeG[refEntry]
}

func newBackTrees() *backTrees {
	n := func(c func(a, b *bent) int) *bkTree {
		return btree.NewBTreeGOptions(func(a, b *bent) bool { return c(a, b) < 0 }, btree.Options{NoLocks: true})
	}
	return &backTrees{
		byID:      n(func(a, b *bent) int { return cmp.Compare(a.id, b.id) }),
		byStarted: n(cmpStarted),
		byInstance: n(func(a, b *bent) int {
			return cmp.Or(cmp.Compare(a.instance, b.instance), cmpStarted(a, b))
		}),
		byStatus: n(func(a, b *bent) int { return cmp.Or(cmp.Compare(a.status, b.status), cmpStarted(a, b)) }),
		byDeleted: n(func(a, b *bent) int {
			return cmp.Or(cmp.Compare(a.deleted, b.deleted), cmp.Compare(a.id, b.id))
		}),
		byRef: btree.NewBTreeGOptions(func(a, b refEntry) bool {
			return a.ref < b.ref || a.ref == b.ref && a.b.id < b.b.id
		}, btree.Options{NoLocks: true}),
	}
}

// copy is a new version sharing every node with t until written.
func (t *backTrees) copy() *backTrees {
	return &backTrees{byID: t.byID.Copy(), byStarted: t.byStarted.Copy(), byInstance: t.byInstance.Copy(),
		byStatus: t.byStatus.Copy(), byDeleted: t.byDeleted.Copy(), byRef: t.byRef.Copy()}
}

func (t *backTrees) get(id string) (*bent, bool) { return t.byID.Get(&bent{id: id}) }

func (t *backTrees) set(e *bent) {
	t.delete(e.id)
	t.byID.Set(e)
	t.index(e)
}

// load adds e, whose id sorts after every id in t (a snapshot's sorted
// list): the id tree appends instead of searching.
func (t *backTrees) load(e *bent) {
	t.byID.Load(e)
	t.index(e)
}

func (t *backTrees) index(e *bent) {
	t.byStarted.Set(e)
	t.byInstance.Set(e)
	t.byStatus.Set(e)
	if e.status == v1.BackupStatus_BACKUP_STATUS_DELETED {
		t.byDeleted.Set(e)
	}
	for _, r := range e.refs {
		t.byRef.Set(refEntry{ref: r, b: e})
	}
}

func (t *backTrees) delete(id string) bool {
	old, ok := t.byID.Delete(&bent{id: id})
	if !ok {
		return false
	}
	t.byStarted.Delete(old)
	t.byInstance.Delete(old)
	t.byStatus.Delete(old)
	if old.status == v1.BackupStatus_BACKUP_STATUS_DELETED {
		t.byDeleted.Delete(old)
	}
	for _, r := range old.refs {
		t.byRef.Delete(refEntry{ref: r, b: old})
	}
	return true
}

// bkMut returns the backup trees to change, copying the published ones on
// first use.
func (w *Write) bkMut() *backTrees {
	if !w.bkCopied {
		w.bk = w.bk.copy()
		w.bkCopied = true
	}
	return w.bk
}

var marshalBackup = proto.MarshalOptions{Deterministic: true}

// PutBackup creates or replaces a backup. b is marshalled at once; the
// caller may reuse it.
func (w *Write) PutBackup(b *v1.Backup) error {
	if b.GetId() == "" {
		return Errorf(ErrInvalid, "backup record without an id (instance %q, job %q)", b.GetInstance(), b.GetJobId())
	}
	data, err := marshalBackup.Marshal(b)
	if err != nil {
		return Errorf(ErrInvalid, "backup %q: %v", b.GetId(), err)
	}
	w.bkMut().set(newBent(b, string(data)))
	return nil
}

// DeleteBackup removes a backup record; a missing one is ErrNotFound.
func (w *Write) DeleteBackup(id string) error {
	if _, ok := w.bk.get(id); !ok {
		return Errorf(ErrNotFound, "backup %q not found", id)
	}
	w.bkMut().delete(id)
	return nil
}

// Backup returns the backup with id, or ErrNotFound. The record is
// decoded for the caller, who may change it.
func (r *Read) Backup(id string) (*v1.Backup, error) {
	e, ok := r.bk.get(id)
	if !ok {
		return nil, Errorf(ErrNotFound, "backup %q not found", id)
	}
	return e.backup(), nil
}

// BackupCount is the number of backup records, DELETED ones included.
func (r *Read) BackupCount() int { return r.bk.byID.Len() }

// Backups returns the backups of instance (every backup when instance is
// empty), newest first: by start time, then id. It decodes every one: the
// callers want an instance's (retention, point-in-time lookups), a few
// thousand at most.
func (r *Read) Backups(instance string) []*v1.Backup {
	var out []*v1.Backup
	visit := func(e *bent) bool {
		if instance != "" && e.instance != instance {
			return false
		}
		out = append(out, e.backup())
		return true
	}
	if instance == "" {
		r.bk.byStarted.Reverse(visit)
		return out
	}
	r.bk.byInstance.Descend(&bent{instance: instance, started: math.MaxInt64, id: topID}, visit)
	return out
}

// bkLane walks one backup tree newest first for a listing (treeLane);
// prefix holds the fields of the tree's range.
func bkLane(t *bkTree, prefix bent, in, match func(*bent) bool) lane[*v1.Backup] {
	return treeLane(t, func(after *Cursor) *bent {
		pivot := prefix
		pivot.started, pivot.id = math.MaxInt64, topID
		if after != nil {
			pivot.started, pivot.id = after.At, after.ID
		}
		return &pivot
	}, in, match)
}

// BackupFilter selects backups; zero fields match everything.
type BackupFilter struct {
	Instance string
	// Status: only backups in it; UNSPECIFIED for every status but
	// DELETED (the listings' default).
	Status v1.BackupStatus
}

// BackupsPage returns up to limit backups that match f, newest first (start
// time, then id), strictly after `after` (nil: from the newest), and the
// cursor of the next page (nil at the end). A status filter together with
// an instance is applied during the walk, which is bounded (maxScan).
func (r *Read) BackupsPage(f BackupFilter, after *Cursor, limit int) ([]*v1.Backup, *Cursor) {
	match := func(e *bent) bool {
		if f.Status == v1.BackupStatus_BACKUP_STATUS_UNSPECIFIED {
			return e.status != v1.BackupStatus_BACKUP_STATUS_DELETED
		}
		return e.status == f.Status
	}
	l := bkLane(r.bk.byStarted, bent{}, nil, match)
	switch {
	case f.Instance != "":
		l = bkLane(r.bk.byInstance, bent{instance: f.Instance}, func(e *bent) bool { return e.instance == f.Instance }, match)
	case f.Status != v1.BackupStatus_BACKUP_STATUS_UNSPECIFIED:
		l = bkLane(r.bk.byStatus, bent{status: f.Status}, func(e *bent) bool { return e.status == f.Status }, match)
	}
	return pageScan([]lane[*v1.Backup]{l}, backupPos, after, limit)
}

func backupPos(b *v1.Backup) Cursor { return CursorOf(b.GetStartedAt(), b.GetId()) }

// EachBackup calls fn for every backup, in id order, decoding each.
func (r *Read) EachBackup(fn func(*v1.Backup)) {
	r.bk.byID.Scan(func(e *bent) bool {
		fn(e.backup())
		return true
	})
}

// LastCompleteBackups returns, for each instance with a COMPLETE backup,
// the latest finish time (Unix nanoseconds) among them, without decoding
// any record: metrics read it at every scrape.
func (r *Read) LastCompleteBackups() map[string]int64 {
	last := map[string]int64{}
	r.bk.byStatus.Ascend(&bent{status: v1.BackupStatus_BACKUP_STATUS_COMPLETE, started: math.MinInt64}, func(e *bent) bool {
		if e.status != v1.BackupStatus_BACKUP_STATUS_COMPLETE {
			return false
		}
		if t, ok := last[e.instance]; e.finished != 0 && (!ok || e.finished > t) {
			last[e.instance] = e.finished
		}
		return true
	})
	return last
}

// EachDeletedBackup calls fn for the DELETED backup records, oldest
// deletion first, until fn returns false. fn must not change the catalog.
func (r *Read) EachDeletedBackup(fn func(*v1.Backup) bool) {
	r.bk.byDeleted.Scan(func(e *bent) bool { return fn(e.backup()) })
}

// JobReferenced reports whether a backup that is not DELETED refers to
// job id: it wrote the backup, or marked it or one of its copies expired
// (retention asks whether that expire job failed before marking again).
func (r *Read) JobReferenced(id string) bool {
	found := false
	r.bk.byRef.Ascend(refEntry{ref: id, b: &bent{}}, func(x refEntry) bool {
		if x.ref != id {
			return false
		}
		found = x.b.status != v1.BackupStatus_BACKUP_STATUS_DELETED
		return !found
	})
	return found
}

// loadBackups adds a snapshot's backup records, like loadFinished: each
// is decoded once, to check and index it, and kept as the bytes it came
// as; the entries are allocated after the decoding's garbage. The list is
// sorted by id (Dump's order); a repeated or unsorted id goes through
// PutBackup.
func loadBackups(w *Write, list [][]byte) error {
	t := w.bkMut()
	vals := make([]*bent, 0, len(list))
	b := &v1.Backup{}
	for i, data := range list {
		if err := proto.Unmarshal(data, b); err != nil {
			return fmt.Errorf("loading backup record %d of %d: %w", i+1, len(list), err)
		}
		if b.GetId() == "" {
			return Errorf(ErrInvalid, "loading backup record %d of %d: no id", i+1, len(list))
		}
		if _, dup := t.get(b.GetId()); dup || len(vals) > 0 && b.GetId() <= vals[len(vals)-1].id {
			if err := w.PutBackup(b); err != nil {
				return fmt.Errorf("loading backup %q: %w", b.GetId(), err)
			}
			continue
		}
		// data is Unmarshal's own copy of the snapshot's bytes, owned by
		// Load: the record keeps it without copying.
		vals = append(vals, newBent(b, unsafe.String(unsafe.SliceData(data), len(data))))
	}
	for _, e := range vals {
		t.load(e)
	}
	return nil
}

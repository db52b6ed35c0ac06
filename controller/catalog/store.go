package catalog

import (
	"context"
	"fmt"
	"sync"

	"github.com/hashicorp/go-memdb"
)

// Store holds the catalog tables. Objects in it are immutable: readers get
// the stored pointer and must clone it (proto.Clone) before changing it, and
// writers put a fresh object. That is what makes reads lock-free and Raft
// snapshots a cheap memdb snapshot.
//
// Finished jobs and backups are kept apart, in copy-on-write trees
// (finished.go, backupstore.go); a commit publishes go-memdb's new root
// and the new trees together under mu, so a Read never sees a job in both
// places or in neither, nor a backup change without the job change of
// the same entry.
type Store struct {
	db *memdb.MemDB

	mu  sync.RWMutex
	fin *finTrees
	// bk: the backups (backupstore.go), published like fin.
	bk *backTrees
	// finCh is closed when a commit changes the finished store: a watch on
	// a finished (or missing) job waits on it.
	finCh chan struct{}
}

// tables lists every table's schema; each lives in the file of its table.
var tables = []func() *memdb.TableSchema{
	agentsTable, instancesTable, jobsTable, membersTable, binlogStreamsTable,
	joinTokensTable, revocationsTable, clusterCATable, auditTable, accessTokensTableSchema,
	policiesTable, scheduleSkipsTable, idempotencyTable, idempotencyCountTable,
}

// dbSchema is built once: the key indexes' helpers read it too.
var dbSchema = schema()

func schema() *memdb.DBSchema {
	s := &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{}}
	for _, t := range tables {
		ts := t()
		s.Tables[ts.Name] = ts
	}
	return s
}

// New returns an empty catalog.
func New() *Store {
	db, err := memdb.NewMemDB(dbSchema)
	if err != nil {
		// The schema is static; an error is a programming error.
		panic(fmt.Sprintf("catalog: bad schema: %v", err))
	}
	return &Store{db: db, fin: newFinTrees(), bk: newBackTrees(), finCh: make(chan struct{})}
}

// Read opens a read transaction: a consistent snapshot of every table that
// later writes do not change. It needs no closing.
func (s *Store) Read() *Read {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &Read{txn: s.db.Txn(false), fin: s.fin, bk: s.bk, finCh: s.finCh}
}

// Write opens the write transaction. There is at most one at a time (memdb
// serialises them); the FSM is the only writer. Call Commit or Abort.
func (s *Store) Write() *Write {
	txn := s.db.Txn(true) // first: it serialises the writers
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &Write{Read: Read{txn: txn, fin: s.fin, bk: s.bk}, s: s}
}

// Snapshot returns a frozen copy of the store, for a Raft snapshot to
// persist while the FSM goes on applying.
func (s *Store) Snapshot() *Store {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &Store{db: s.db.Snapshot(), fin: s.fin, bk: s.bk, finCh: make(chan struct{})}
}

// Read is a read transaction over the catalog.
type Read struct {
	txn *memdb.Txn
	fin *finTrees
	bk  *backTrees
	// finCh is the store's at the time of the Read (nil in a Write).
	finCh <-chan struct{}
}

// Write is the write transaction.
type Write struct {
	Read
	s *Store
	// finCopied: Read.fin is this transaction's own copy of the finished
	// trees, to publish at Commit.
	finCopied bool
	// bkCopied: Read.bk is this transaction's own copy of the backup
	// trees, to publish at Commit.
	bkCopied bool
}

// finMut returns the finished trees to change, copying the published
// ones on first use.
func (w *Write) finMut() *finTrees {
	if !w.finCopied {
		w.fin = w.fin.copy()
		w.finCopied = true
	}
	return w.fin
}

// Commit publishes the changes and fires the watch channels of the records
// they touched (and, when finished jobs changed, the finished store's).
func (w *Write) Commit() {
	if !w.finCopied && !w.bkCopied {
		w.txn.Commit()
		return
	}
	s := w.s
	s.mu.Lock()
	w.txn.Commit()
	if w.bkCopied {
		s.bk = w.bk
	}
	if w.finCopied {
		// Only job watches wait on finCh: a backup change leaves it.
		s.fin = w.fin
		close(s.finCh)
		s.finCh = make(chan struct{})
	}
	s.mu.Unlock()
}

// Abort drops the changes.
func (w *Write) Abort() { w.txn.Abort() }

// Watch is a set of channels returned by the *Watch reads; Wait returns when
// any of the records read changed or ctx ends.
type Watch struct {
	ws memdb.WatchSet
}

// NewWatch returns an empty watch set.
func NewWatch() *Watch { return &Watch{ws: memdb.NewWatchSet()} }

// Wait blocks until a watched record changes (nil) or ctx ends (its error).
func (w *Watch) Wait(ctx context.Context) error { return w.ws.WatchCtx(ctx) }

func (w *Watch) add(ch <-chan struct{}) {
	if w != nil {
		w.ws.Add(ch)
	}
}

func (r *Read) first(table, key string, watch *Watch) (any, error) {
	ch, obj, err := r.txn.FirstWatch(table, "id", key)
	if err != nil {
		panic(fmt.Sprintf("catalog: %s lookup: %v", table, err))
	}
	watch.add(ch)
	return obj, nil
}

// all returns every object of a table from an index, in index order.
func all[T any](r *Read, table, index string, args ...any) []T {
	it, err := r.txn.Get(table, index, args...)
	if err != nil {
		panic(fmt.Sprintf("catalog: %s scan by %s: %v", table, index, err))
	}
	var out []T
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(T))
	}
	return out
}

// insert fails only on a record the schema cannot index (a missing id).
func (w *Write) insert(table string, obj any) error {
	if err := w.txn.Insert(table, obj); err != nil {
		return Errorf(ErrInvalid, "%s record: %v", table, err)
	}
	return nil
}

// Add adds a channel to the set: Wait also returns when it is closed.
func (w *Watch) Add(ch <-chan struct{}) { w.add(ch) }

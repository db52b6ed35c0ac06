package catalog

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const (
	idempotencyTableName      = "idempotency"
	idempotencyCountTableName = "idempotency_count"
)

// keyCount is the one row of idempotencyCountTable: how many keys the
// idempotency table holds, kept by Put and Delete in the same transaction,
// so that pruning by count does not scan the table at every keyed write.
// Not in the snapshot: Load recounts as it puts.
type keyCount struct {
	ID string
	N  int
}

// idempotencyCountTable holds the key count's one row.
func idempotencyCountTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: idempotencyCountTableName,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		},
	}
}

// idempotencyTable: clients' idempotency keys with the result of the first
// command applied under each, keyed by key and ordered by the Raft index
// that recorded them (for pruning, oldest first).
func idempotencyTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: idempotencyTableName,
		Indexes: map[string]*memdb.IndexSchema{
			"id":    {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
			"order": {Name: "order", Unique: true, Indexer: &memdb.UintFieldIndex{Field: "LogIndex"}},
		},
	}
}

// IdempotencyKey returns the record of a client's idempotency key, or
// ErrNotFound.
func (r *Read) IdempotencyKey(key string) (*v1.IdempotencyRecord, error) {
	obj, _ := r.first(idempotencyTableName, key, nil)
	if obj == nil {
		return nil, Errorf(ErrNotFound, "idempotency key %q not found", key)
	}
	return obj.(*v1.IdempotencyRecord), nil
}

// IdempotencyKeys returns every recorded key, oldest first.
func (r *Read) IdempotencyKeys() []*v1.IdempotencyRecord {
	return all[*v1.IdempotencyRecord](r, idempotencyTableName, "order")
}

// OldestIdempotencyKey returns the record with the lowest log index, or
// nil when there is none.
func (r *Read) OldestIdempotencyKey() *v1.IdempotencyRecord {
	obj, err := r.txn.First(idempotencyTableName, "order")
	if err != nil {
		panic(fmt.Sprintf("catalog: %s scan by order: %v", idempotencyTableName, err))
	}
	if obj == nil {
		return nil
	}
	return obj.(*v1.IdempotencyRecord)
}

// IdempotencyKeyCount returns how many keys are recorded.
func (r *Read) IdempotencyKeyCount() int {
	obj, _ := r.txn.First(idempotencyCountTableName, "id", "n")
	if obj == nil {
		return 0
	}
	return obj.(*keyCount).N
}

func (w *Write) addKeyCount(d int) error {
	if err := w.txn.Insert(idempotencyCountTableName, &keyCount{ID: "n", N: w.IdempotencyKeyCount() + d}); err != nil {
		return fmt.Errorf("counting idempotency keys: %w", err)
	}
	return nil
}

// PutIdempotencyKey records a key, replacing its old record. rec must not
// change afterwards.
func (w *Write) PutIdempotencyKey(rec *v1.IdempotencyRecord) error {
	if _, err := w.IdempotencyKey(rec.GetKey()); err == nil {
		// Replaced: drop the old record first, so the count stays right.
		if err := w.DeleteIdempotencyKey(rec.GetKey()); err != nil {
			return err
		}
	}
	if err := w.insert(idempotencyTableName, rec); err != nil {
		return err
	}
	return w.addKeyCount(1)
}

// DeleteIdempotencyKey removes a key's record; a missing one is not an
// error.
func (w *Write) DeleteIdempotencyKey(key string) error {
	n, err := w.txn.DeleteAll(idempotencyTableName, "id", key)
	if err != nil {
		return fmt.Errorf("deleting idempotency key %q: %w", key, err)
	}
	if n == 0 {
		return nil
	}
	return w.addKeyCount(-n)
}

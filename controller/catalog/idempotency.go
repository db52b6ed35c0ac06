package catalog

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const idempotencyTableName = "idempotency"

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

// PutIdempotencyKey records a key. rec must not change afterwards.
func (w *Write) PutIdempotencyKey(rec *v1.IdempotencyRecord) error {
	return w.insert(idempotencyTableName, rec)
}

// DeleteIdempotencyKey removes a key's record; a missing one is not an
// error.
func (w *Write) DeleteIdempotencyKey(key string) error {
	if _, err := w.txn.DeleteAll(idempotencyTableName, "id", key); err != nil {
		return fmt.Errorf("deleting idempotency key %q: %w", key, err)
	}
	return nil
}

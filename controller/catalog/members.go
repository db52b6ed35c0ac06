package catalog

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const membersTableName = "members"

// membersTable: one row per controller node, keyed by node id. Raft's own
// configuration holds ids and Raft addresses; this adds the gRPC address
// that followers need to forward to the leader and agents to follow it.
func membersTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: membersTableName,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}},
		},
	}
}

// Member returns the controller node with id, or ErrNotFound.
func (r *Read) Member(id string) (*v1.MemberRecord, error) {
	obj, _ := r.first(membersTableName, id, nil)
	if obj == nil {
		return nil, Errorf(ErrNotFound, "controller node %q not found", id)
	}
	return obj.(*v1.MemberRecord), nil
}

// Members returns every controller node record, by id.
func (r *Read) Members() []*v1.MemberRecord {
	return all[*v1.MemberRecord](r, membersTableName, "id")
}

// PutMember creates or replaces a member record. m must not change
// afterwards.
func (w *Write) PutMember(m *v1.MemberRecord) error { return w.insert(membersTableName, m) }

// DeleteMember removes a member record; a missing one is not an error.
func (w *Write) DeleteMember(id string) error {
	if _, err := w.txn.DeleteAll(membersTableName, "id", id); err != nil {
		return fmt.Errorf("deleting controller node %q: %w", id, err)
	}
	return nil
}

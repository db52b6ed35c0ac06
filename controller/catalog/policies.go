package catalog

import (
	"fmt"

	"github.com/hashicorp/go-memdb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const (
	policiesTableName      = "policies"
	scheduleSkipsTableName = "schedule_skips"
)

// policiesTable: one row per policy, keyed by name; the row holds the
// current version and the one it replaced.
func policiesTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: policiesTableName,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
		},
	}
}

// scheduleSkipsTable: one row per recorded skip of scheduled runs, keyed by
// its deterministic id, indexed by policy.
func scheduleSkipsTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: scheduleSkipsTableName,
		Indexes: map[string]*memdb.IndexSchema{
			"id":     {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}},
			"policy": {Name: "policy", Indexer: &memdb.StringFieldIndex{Field: "Policy"}},
		},
	}
}

// Policy returns the policy named name, or ErrNotFound.
func (r *Read) Policy(name string) (*v1.Policy, error) {
	obj, _ := r.first(policiesTableName, name, nil)
	if obj == nil {
		return nil, Errorf(ErrNotFound, "policy %q not found", name)
	}
	return obj.(*v1.Policy), nil
}

// Policies returns every policy, by name.
func (r *Read) Policies() []*v1.Policy { return all[*v1.Policy](r, policiesTableName, "id") }

// PutPolicy creates or replaces a policy. p must not change afterwards.
func (w *Write) PutPolicy(p *v1.Policy) error { return w.insert(policiesTableName, p) }

// DeletePolicy removes a policy; a missing one is ErrNotFound.
func (w *Write) DeletePolicy(name string) error {
	n, err := w.txn.DeleteAll(policiesTableName, "id", name)
	if err != nil {
		return fmt.Errorf("deleting policy %q: %w", name, err)
	}
	if n == 0 {
		return Errorf(ErrNotFound, "policy %q not found", name)
	}
	return nil
}

// ScheduleSkip returns the skip record id, or ErrNotFound.
func (r *Read) ScheduleSkip(id string) (*v1.ScheduleSkip, error) {
	obj, _ := r.first(scheduleSkipsTableName, id, nil)
	if obj == nil {
		return nil, Errorf(ErrNotFound, "schedule skip %q not found", id)
	}
	return obj.(*v1.ScheduleSkip), nil
}

// ScheduleSkips returns the skip records of policy (every policy's when
// empty), by id.
func (r *Read) ScheduleSkips(policy string) []*v1.ScheduleSkip {
	if policy != "" {
		return all[*v1.ScheduleSkip](r, scheduleSkipsTableName, "policy", policy)
	}
	return all[*v1.ScheduleSkip](r, scheduleSkipsTableName, "id")
}

// PutScheduleSkip creates or replaces a skip record.
func (w *Write) PutScheduleSkip(s *v1.ScheduleSkip) error {
	return w.insert(scheduleSkipsTableName, s)
}

package catalog

import (
	"github.com/hashicorp/go-memdb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const instancesTableName = "instances"

// instancesTable: one row per database server, keyed by its fleet-unique
// name, indexed by the agent that runs it.
func instancesTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: instancesTableName,
		Indexes: map[string]*memdb.IndexSchema{
			"id":    {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
			"agent": {Name: "agent", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "Agent"}},
		},
	}
}

// Instance returns the instance named name, or ErrNotFound.
func (r *Read) Instance(name string) (*v1.Instance, error) {
	obj, _ := r.first(instancesTableName, name, nil)
	if obj == nil {
		return nil, Errorf(ErrNotFound, "instance %q not found", name)
	}
	return obj.(*v1.Instance), nil
}

// Instances returns every instance, by name.
func (r *Read) Instances() []*v1.Instance { return all[*v1.Instance](r, instancesTableName, "id") }

// InstancesOf returns the instances of one agent, by name.
func (r *Read) InstancesOf(agent string) []*v1.Instance {
	return all[*v1.Instance](r, instancesTableName, "agent", agent)
}

// PutInstance creates or replaces an instance. in must not change
// afterwards.
func (w *Write) PutInstance(in *v1.Instance) error { return w.insert(instancesTableName, in) }

package catalog

import (
	"github.com/hashicorp/go-memdb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const agentsTableName = "agents"

// agentsTable: one row per agent daemon, keyed by its unique name.
func agentsTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: agentsTableName,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
		},
	}
}

// Agent returns the agent named name, or ErrNotFound.
func (r *Read) Agent(name string) (*v1.Agent, error) {
	obj, _ := r.first(agentsTableName, name, nil)
	if obj == nil {
		return nil, Errorf(ErrNotFound, "agent %q not found", name)
	}
	return obj.(*v1.Agent), nil
}

// Agents returns every agent, by name.
func (r *Read) Agents() []*v1.Agent { return all[*v1.Agent](r, agentsTableName, "id") }

// PutAgent creates or replaces an agent. a must not change afterwards.
func (w *Write) PutAgent(a *v1.Agent) error { return w.insert(agentsTableName, a) }

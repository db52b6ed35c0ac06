package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// applyRegisterAgent records an agent's (re)registration with the instances
// it reported. An instance name already owned by another agent is refused:
// two agents backing up "the same" server under one name would mix their
// backups.
func applyRegisterAgent(w *catalog.Write, c *v1.RegisterAgent) (proto.Message, error) {
	a := c.GetAgent()
	if a.GetName() == "" {
		return nil, catalog.Errorf(catalog.ErrInvalid, "RegisterAgent without an agent name")
	}
	for _, in := range c.GetInstances() {
		if in.GetName() == "" {
			return nil, catalog.Errorf(catalog.ErrInvalid, "agent %q reported an instance without a name", a.GetName())
		}
		if in.GetAgent() != a.GetName() {
			return nil, catalog.Errorf(catalog.ErrInvalid, "instance %q is reported by agent %q but names agent %q", in.GetName(), a.GetName(), in.GetAgent())
		}
		if old, err := w.Instance(in.GetName()); err == nil && old.GetAgent() != "" && old.GetAgent() != a.GetName() {
			return nil, catalog.Errorf(catalog.ErrConflict, "instance %q belongs to agent %q, not %q", in.GetName(), old.GetAgent(), a.GetName())
		}
	}
	if err := w.PutAgent(a); err != nil {
		return nil, err
	}
	for _, in := range c.GetInstances() {
		keepEngineDecision(w, in)
		if err := w.PutInstance(in); err != nil {
			return nil, err
		}
	}
	return a, nil
}

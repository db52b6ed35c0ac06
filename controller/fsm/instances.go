package fsm

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// applyUpsertInstance creates or replaces one instance record.
func applyUpsertInstance(w *catalog.Write, c *v1.UpsertInstance) (proto.Message, error) {
	in := c.GetInstance()
	if in.GetName() == "" {
		return nil, catalog.Errorf(catalog.ErrInvalid, "UpsertInstance without an instance name")
	}
	if in.GetAgent() != "" {
		if _, err := w.Agent(in.GetAgent()); err != nil {
			return nil, fmt.Errorf("instance %q: %w", in.GetName(), err)
		}
	}
	if c.GetUpdatedAt() != nil {
		in.UpdatedAt = c.GetUpdatedAt()
	}
	keepEngineDecision(w, in)
	if err := w.PutInstance(in); err != nil {
		return nil, err
	}
	return in, nil
}

// keepEngineDecision carries the stored engine decision and its history
// over to a new record of the instance: they are RecordEngineDecision's,
// and an agent's (re-)registration carries neither.
func keepEngineDecision(w *catalog.Write, in *v1.Instance) {
	old, err := w.Instance(in.GetName())
	if err != nil {
		return
	}
	if in.EngineDecision == nil {
		in.EngineDecision = old.GetEngineDecision()
	}
	if len(in.EngineChanges) == 0 {
		in.EngineChanges = old.GetEngineChanges()
	}
}

// maxEngineChanges is how many engine change events an instance keeps.
const maxEngineChanges = 20

// applyRecordEngineDecision stores an instance's engine decision and appends
// its change event, keeping the last maxEngineChanges.
func applyRecordEngineDecision(w *catalog.Write, c *v1.RecordEngineDecision) (proto.Message, error) {
	old, err := w.Instance(c.GetInstance())
	if err != nil {
		return nil, fmt.Errorf("engine decision: %w", err)
	}
	if c.GetDecision() == nil {
		return nil, catalog.Errorf(catalog.ErrInvalid, "RecordEngineDecision for %q without a decision", c.GetInstance())
	}
	in := proto.Clone(old).(*v1.Instance)
	in.EngineDecision = c.GetDecision()
	if ch := c.GetChange(); ch != nil {
		in.EngineChanges = append(in.EngineChanges, ch)
		if n := len(in.EngineChanges); n > maxEngineChanges {
			in.EngineChanges = in.EngineChanges[n-maxEngineChanges:]
		}
	}
	if err := w.PutInstance(in); err != nil {
		return nil, err
	}
	return in, nil
}

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
	if err := w.PutInstance(in); err != nil {
		return nil, err
	}
	return in, nil
}

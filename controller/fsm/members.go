package fsm

import (
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// applyUpsertMember records a controller node's addresses.
func applyUpsertMember(w *catalog.Write, c *v1.UpsertMember) (proto.Message, error) {
	m := c.GetMember()
	if m.GetId() == "" || m.GetAddress() == "" || m.GetRaftAddress() == "" {
		return nil, catalog.Errorf(catalog.ErrInvalid, "a member record needs an id, a gRPC address and a Raft address")
	}
	if err := w.PutMember(m); err != nil {
		return nil, err
	}
	return m, nil
}

// applyRemoveMember forgets a controller node; removing an unknown one is
// not an error (the Raft configuration change already happened).
func applyRemoveMember(w *catalog.Write, c *v1.RemoveMember) (proto.Message, error) {
	if c.GetId() == "" {
		return nil, catalog.Errorf(catalog.ErrInvalid, "RemoveMember without an id")
	}
	return nil, w.DeleteMember(c.GetId())
}

package controller

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestAccessTable fails when an RPC of a service the controller serves has
// no entry in the access table (it would be refused to everyone), or when
// an entry names no RPC.
func TestAccessTable(t *testing.T) {
	seen := map[string]bool{}
	for _, fd := range []protoreflect.FileDescriptor{
		v1.File_tidemark_v1_control_proto, v1.File_tidemark_v1_cluster_proto, v1.File_tidemark_v1_agent_proto, v1.File_tidemark_v1_relay_proto,
	} {
		for i := range fd.Services().Len() {
			svc := fd.Services().Get(i)
			for j := range svc.Methods().Len() {
				name := "/" + string(svc.FullName()) + "/" + string(svc.Methods().Get(j).Name())
				seen[name] = true
				a, ok := accessTable[name]
				if !ok {
					t.Errorf("%s has no entry in accessTable", name)
					continue
				}
				if a.user == "" && !a.agent && !a.controller && !a.anonymous {
					t.Errorf("%s: its entry lets no one call it", name)
				}
			}
		}
	}
	for name := range accessTable {
		if !seen[name] {
			t.Errorf("accessTable names %s, which no service has", name)
		}
	}
	if len(seen) < 25 {
		t.Fatalf("only %d RPCs found: are the descriptors right?", len(seen))
	}
}

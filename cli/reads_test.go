package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestNoteRead: a consistent read prints nothing; a stale one prints one
// line on stderr (a JSON object with -o json) saying which node answered
// and how far behind it was.
func TestNoteRead(t *testing.T) {
	contact := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		info *v1.ReadInfo
		want string // in the text line; "" for no output
	}{
		{"consistent", &v1.ReadInfo{NodeId: "c1", LeaderId: "c1", AppliedIndex: 10, CommitIndex: 10}, ""},
		{"nil", nil, ""},
		{"leader", &v1.ReadInfo{NodeId: "c1", Stale: true, LeaderId: "c1", AppliedIndex: 10, CommitIndex: 12},
			"stale read from node c1 (the leader): applied index 10, 2 committed entries behind"},
		{"follower", &v1.ReadInfo{NodeId: "c2", Stale: true, LeaderId: "c1", AppliedIndex: 7, CommitIndex: 9,
			LastLeaderContact: timestamppb.New(contact), SinceLeaderContact: durationpb.New(1500 * time.Millisecond)},
			"stale read from node c2 (leader c1, last heard from 1.5s ago): applied index 7, 2 committed entries behind"},
		{"cut off", &v1.ReadInfo{NodeId: "c3", Stale: true, AppliedIndex: 7, CommitIndex: 7,
			LastLeaderContact: timestamppb.New(contact), SinceLeaderContact: durationpb.New(42 * time.Second)},
			"stale read from node c3 (no leader known; last heard from one 42s ago): applied index 7, 0 committed entries behind"},
		{"never", &v1.ReadInfo{NodeId: "c3", Stale: true, AppliedIndex: 3, CommitIndex: 0},
			"stale read from node c3 (no leader known, never heard from one): applied index 3, 0 committed entries behind"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var errb bytes.Buffer
			f := fleetFlags{s: &streams{err: &errb}, output: "text"}
			f.noteRead(tc.info)
			if tc.want == "" {
				if errb.Len() != 0 {
					t.Fatalf("printed %q", errb.String())
				}
				return
			}
			if !strings.HasPrefix(errb.String(), tc.want) || strings.Count(errb.String(), "\n") != 1 {
				t.Fatalf("printed %q, want a line starting %q", errb.String(), tc.want)
			}
			errb.Reset()
			f.output = "json"
			f.noteRead(tc.info)
			var got struct {
				Read map[string]any `json:"read"`
			}
			if err := json.Unmarshal(errb.Bytes(), &got); err != nil {
				t.Fatalf("%v: %s", err, errb.String())
			}
			r := got.Read
			if r["node_id"] != tc.info.GetNodeId() || r["stale"] != true || r["applied_index"] != float64(tc.info.GetAppliedIndex()) ||
				r["entries_behind"] != float64(entriesBehind(tc.info)) {
				t.Fatalf("JSON note %s for %v", errb.String(), tc.info)
			}
			if d := tc.info.GetSinceLeaderContact(); (d == nil) != (r["since_leader_contact_seconds"] == nil) ||
				(d != nil && r["since_leader_contact_seconds"] != d.AsDuration().Seconds()) {
				t.Fatalf("JSON note %s: since_leader_contact_seconds", errb.String())
			}
		})
	}
}

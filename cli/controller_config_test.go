package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestControllerConfigBadInput: each mistake in a controller config file
// (or its environment) is refused before anything starts, naming the line
// and key (or the variable), with exit code 2.
func TestControllerConfigBadInput(t *testing.T) {
	for _, tc := range []struct {
		file, env, want string
	}{
		{"node_id: c1\ndata_dirr: /tmp/x\n", "", `line 2: unknown key "data_dirr" (the keys are the controller's flags with _ for -: agent_cert_validity,`},
		{"node-id: c1\n", "", `line 1: unknown key "node-id"`},
		{"node_id: c1\nconfig: other.yaml\n", "", `line 2: unknown key "config"`},
		{"node_id: c1\nmax_attempts: many\n", "", `line 2: key max_attempts: "many": expected a whole number`},
		{"node_id: c1\njob_history_max: lots\n", "", `line 2: key job_history_max: "lots": expected a whole number`},
		{"job_history_age: 90\n", "", `line 1: key job_history_age: "90": expected a duration`},
		{"\n\nheartbeat_interval: 5\n", "", `line 3: key heartbeat_interval: "5": expected a duration such as 500ms, 5s or 1m`},
		{"bootstrap: yes please\n", "", `line 1: key bootstrap: "yes please": expected true or false`},
		{"node_id: [c1, c2]\n", "", "line 1: key node_id: expected one value, got a list"},
		{"raft:\n  election_timeout: 1s\n", "", `line 1: unknown key "raft"`},
		{"raft_election_timeout:\n  value: 1s\n", "", "line 1: key raft_election_timeout: expected one value, got a mapping"},
		{"node_id:\n  a: [b]\n", "", "line 2: key node_id: expected name: value pairs of plain values"},
		{"node_id: c1\nnode_id: c2\n", "", "line 2: key node_id: given twice (first on line 1)"},
		{"- node_id\n", "", "line 1: expected keys and values"},
		{"node_id: c1\n", "TIDEMARK_LEASE_DURATION=long", `TIDEMARK_LEASE_DURATION="long": expected a duration such as 500ms, 5s or 1m (it sets --lease-duration)`},
	} {
		p := writeFile(t, "controller.yaml", tc.file)
		if k, v, ok := strings.Cut(tc.env, "="); ok {
			t.Setenv(k, v)
		}
		code, _, errs := run(t, "controller", "--config", p)
		if code != ExitUsage || !strings.Contains(errs, tc.want) || !strings.Contains(errs, "config file "+p) && tc.env == "" {
			t.Errorf("config %q (env %q): exit %d, stderr %q; want exit 2 and %q", tc.file, tc.env, code, errs, tc.want)
		}
		if k, _, ok := strings.Cut(tc.env, "="); ok {
			t.Setenv(k, "")
		}
	}
	code, _, errs := run(t, "controller", "--config", "/nonexistent/controller.yaml")
	if code == 0 || !strings.Contains(errs, "/nonexistent/controller.yaml") {
		t.Errorf("missing config file: exit %d, %q", code, errs)
	}
}

// TestControllerConfigPrecedence starts a controller from a config file
// with one key overridden by the environment and one by a flag, and checks
// the running node: flag over environment over file over defaults.
func TestControllerConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	fileAddr, envAddr, raftAddr := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	// The advertised addresses: Raft's from the file (a one-node cluster
	// never dials it), gRPC's from the environment (another name for
	// envAddr).
	raftAdvertised := testenv.FreeAddr(t)
	grpcAdvertised := "localhost:" + envAddr[strings.LastIndexByte(envAddr, ':')+1:]
	cfgPath := writeFile(t, "controller.yaml", fmt.Sprintf(`# a controller node
node_id: from-file
data_dir: %s
grpc_addr: %s
raft_addr: %s
raft_advertise_addr: %s
bootstrap: true
ca_key_file: %s
raft_heartbeat_timeout: 200ms
raft_election_timeout: 200ms
raft_leader_lease_timeout: 100ms
max_attempts: 7
log_level: warn
`, filepath.Join(dir, "data"), fileAddr, raftAddr, raftAdvertised, filepath.Join(dir, "ca.key")))
	t.Setenv("TIDEMARK_GRPC_ADDR", envAddr)  // environment over file
	t.Setenv("TIDEMARK_NODE_ID", "from-env") // flag over environment
	t.Setenv("TIDEMARK_GRPC_ADVERTISE_ADDR", grpcAdvertised)
	t.Setenv("TIDEMARK_MAX_ATTEMPTS", "") // empty: not set
	t.Setenv("TIDEMARK_CONTROLLER", "")
	t.Setenv("TIDEMARK_CREDENTIALS", "")
	var out, errb syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	root := NewRoot(strings.NewReader(""), &out, &errb)
	root.SetArgs([]string{"controller", "--config", cfgPath, "--node-id", "from-flag"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("controller: %v", err)
			}
		case <-time.After(testenv.Wait(20 * time.Second)):
			t.Errorf("controller did not stop")
		}
		if t.Failed() {
			t.Logf("controller stderr:\n%s", errb.String())
		}
	}()
	creds := controller.AdminCredentials(filepath.Join(dir, "data"))
	var st map[string]any
	testenv.WaitFor(t, "the controller to lead at the environment's address", 20*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("controller ended: %v\n%s", err, errb.String())
		default:
		}
		code, o, e := run(t, "cluster", "status", "--controller", envAddr, "--credentials", creds, "-o", "json")
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, e)
		}
		if err := json.Unmarshal([]byte(o), &st); err != nil || st["leader"] == "" {
			return fmt.Errorf("status %q: %w", o, err)
		}
		return nil
	})
	members, _ := st["members"].([]any)
	if st["leader"] != "from-flag" || len(members) != 1 {
		t.Fatalf("cluster status: %v", st)
	}
	m := members[0].(map[string]any)
	if m["address"] != grpcAdvertised || m["raft_address"] != raftAdvertised {
		t.Errorf("member %v: want address %s (advertised, environment) and raft address %s (advertised, file)", m, grpcAdvertised, raftAdvertised)
	}
}

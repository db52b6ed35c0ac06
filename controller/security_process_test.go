package controller_test

import (
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

// TestJoinRevokeAuditProcesses drives items 2 and 5 with real processes
// and the CLI: a controller makes its own CA; the admin credential it
// writes makes a join token; an agent joins with it (its key made on its
// host), is revoked, exits saying so, and the trail shows both calls.
func TestJoinRevokeAuditProcesses(t *testing.T) {
	dir := t.TempDir()
	n := &node{Child: testenv.NewChild(t, "s1", tidemarkBin), t: t, id: "s1", dataDir: filepath.Join(dir, "data"),
		grpcAddr: testenv.FreeAddr(t), raftAddr: testenv.FreeAddr(t), tls: []string{"--ca-key-file", filepath.Join(dir, "ca.key")}}
	n.start(true, "--bootstrap")
	leaderOf(t, []*node{n}, 1, 10*time.Second)
	admin := []string{"--controller", n.grpcAddr, "--credentials", controller.AdminCredentials(n.dataDir)}

	out, errOut, code := run(t, 20*time.Second, append([]string{"token", "create", "--role", "agent", "--ttl", "10m"}, admin...)...)
	if code != 0 {
		t.Fatalf("token create: %s", errOut)
	}
	tokenFile := filepath.Join(dir, "agent.token")
	if err := os.WriteFile(tokenFile, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(dir, "agent-creds")
	agent := testenv.NewChild(t, "agent", tidemarkBin, "agent", "--controller", n.grpcAddr, "--name", "a1",
		"--mysql", "tidemark@tcp(127.0.0.1:1)/", "--join-token", tokenFile, "--credentials", creds, "--log-level", "debug")
	agent.Start()
	testenv.WaitFor(t, "the joined agent to connect", 20*time.Second, func() error {
		if agent.Exited() {
			t.Fatalf("agent exited:\n%s", agent.LogTail())
		}
		out, errOut, _ := run(t, 10*time.Second, append([]string{"agents", "-o", "json"}, admin...)...)
		if !strings.Contains(out, `"connected":true`) {
			return fmt.Errorf("agents: %s %s", out, errOut)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(creds, "key.pem")); err != nil {
		t.Fatalf("the agent's key is not on its host: %v", err)
	}
	// The token was for one use.
	_, errOut, code = run(t, 20*time.Second, "agent", "--controller", n.grpcAddr, "--name", "a2", "--mysql", "tidemark@tcp(127.0.0.1:1)/",
		"--join-token", tokenFile, "--credentials", filepath.Join(dir, "a2"))
	if code != 1 || !strings.Contains(errOut, "refused the join token: join token") || !strings.Contains(errOut, "is not valid: it was used up") {
		t.Fatalf("reused token: exit %d: %s", code, errOut)
	}

	if out, errOut, code := run(t, 20*time.Second, append([]string{"agent", "revoke", "a1"}, admin...)...); code != 0 || !strings.Contains(out, "its stream was cut") {
		t.Fatalf("revoke: %s %s", out, errOut)
	}
	testenv.WaitFor(t, "the revoked agent to exit", 20*time.Second, func() error {
		if !agent.Exited() {
			return fmt.Errorf("still running")
		}
		return nil
	})
	if !strings.Contains(agent.Log(), "agent a1 is revoked") {
		t.Fatalf("the agent's last words do not say it is revoked:\n%s", agent.LogTail())
	}

	// A viewer's access token: tidemark login saves it; it reads, and may
	// not revoke.
	out, errOut, code = run(t, 20*time.Second, append([]string{"token", "create", "--role", "viewer", "--user", "vera", "--ttl", "1h"}, admin...)...)
	if code != 0 {
		t.Fatalf("token create for a user: %s", errOut)
	}
	userTok := filepath.Join(dir, "vera.token")
	if err := os.WriteFile(userTok, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "home"))
	t.Setenv("TIDEMARK_CREDENTIALS", "")
	t.Setenv("TIDEMARK_TOKEN_FILE", "")
	if out, errOut, code := run(t, 20*time.Second, "login", "--token-file", userTok, "--controller", n.grpcAddr); code != 0 || !strings.Contains(out, "saved in") {
		t.Fatalf("login: %s %s", out, errOut)
	}
	if out, errOut, code := run(t, 20*time.Second, "agents", "--controller", n.grpcAddr); code != 0 || !strings.Contains(out, "a1") {
		t.Fatalf("agents as vera: %s %s", out, errOut)
	}
	if _, errOut, code := run(t, 20*time.Second, "agent", "revoke", "a1", "--controller", n.grpcAddr); code != 4 || !strings.Contains(errOut, "user vera (viewer) may not call /tidemark.v1.ControlService/RevokeAgent: it needs the admin role") {
		t.Fatalf("revoke as vera: exit %d %s", code, errOut)
	}

	out, errOut, code = run(t, 20*time.Second, append([]string{"audit", "-o", "json"}, admin...)...)
	if code != 0 {
		t.Fatalf("audit: %s", errOut)
	}
	var trail []struct{ Who, RPC, Target, Outcome string }
	if err := json.Unmarshal([]byte(out), &trail); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var got []string
	for _, a := range trail {
		got = append(got, a.Who+" "+a.RPC[strings.LastIndex(a.RPC, "/")+1:]+" "+a.Target+" "+strings.SplitN(a.Outcome, ":", 2)[0])
	}
	want := []string{
		"user admin (admin) CreateJoinToken  ok",
		"anonymous (no certificate) Join a1 ok",
		"anonymous (no certificate) Join a2 error",
		"user admin (admin) RevokeAgent a1 started",
		"user admin (admin) RevokeAgent a1 ok",
		"user admin (admin) CreateJoinToken  ok",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit trail:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

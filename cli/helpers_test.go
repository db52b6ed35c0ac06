package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// freeClosedPort returns a loopback port nothing listens on.
func freeClosedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// testController is a single-node controller run in the test process,
// bootstrapped with its own CA; creds is its admin credential directory.
type testController struct {
	srv   *controller.Server
	addr  string
	creds string
}

// startTestController starts a bootstrapped controller node in-process and
// waits until it leads.
func startTestController(t *testing.T) *testController {
	t.Helper()
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := controller.DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.Bootstrap = "c1", filepath.Join(dir, "data"), true
	cfg.GRPCAddr, cfg.RaftAddr = testenv.FreeAddr(t), testenv.FreeAddr(t)
	cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	cfg.Raft.CommitTimeout = 5 * time.Millisecond
	cfg.TLS.CAKeyFile = filepath.Join(dir, "ca.key")
	cfg.Logger = slog.New(slog.NewTextHandler(logf, nil))
	cfg.RaftLogOutput, cfg.RaftLogLevel = logf, "warn"
	srv, err := controller.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		_ = logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("controller log:\n%s", b)
		}
	})
	tc := &testController{srv: srv, addr: srv.Addr(), creds: controller.AdminCredentials(cfg.DataDir)}
	testenv.WaitFor(t, "the controller to lead", 10*time.Second, func() error {
		code, out, errs := run(t, "cluster", "status", "--controller", tc.addr, "--credentials", tc.creds, "-o", "json")
		if code != 0 || !strings.Contains(out, `"leader":"c1"`) {
			return fmt.Errorf("exit %d: %s %s", code, out, errs)
		}
		return nil
	})
	return tc
}

package controller_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// tidemarkBin is the tidemark binary TestMain builds once for the tests
// that run controller processes.
var tidemarkBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tidemark-controller-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tidemarkBin = filepath.Join(dir, "tidemark")
	build := exec.Command("go", "build", "-o", tidemarkBin, "github.com/tidemark-backup/tidemark/cmd/tidemark")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building tidemark: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// timing is the flags every test node gets: loopback-fast Raft, leases of
// two seconds, and small snapshots so that restarts exercise them.
var timing = []string{
	"--raft-heartbeat-timeout", "300ms", "--raft-election-timeout", "300ms", "--raft-leader-lease-timeout", "150ms",
	"--raft-commit-timeout", "10ms", "--raft-snapshot-threshold", "16", "--raft-snapshot-interval", "250ms",
	"--raft-trailing-logs", "8", "--heartbeat-interval", "200ms", "--lease-duration", "2s", "--apply-timeout", "3s",
	"--join-timeout", "10s", "--raft-log-level", "info", "--log-level", "debug",
}

// node is one `tidemark controller` process.
type node struct {
	t        *testing.T
	id       string
	dataDir  string
	grpcAddr string
	raftAddr string
	logPath  string
	cmd      *exec.Cmd
	done     chan struct{}
	conn     *client.Conn
	cleanup  bool
}

func newNode(t *testing.T, id string) *node {
	dir := t.TempDir()
	return &node{t: t, id: id, dataDir: filepath.Join(dir, "data"), grpcAddr: freeAddr(t), raftAddr: freeAddr(t),
		logPath: filepath.Join(dir, "controller.log")}
}

// start runs the controller with args after the identity flags (or with
// only --data-dir and the timing flags when args is nil: a restart).
func (n *node) start(first bool, args ...string) {
	n.t.Helper()
	full := []string{"controller", "--data-dir", n.dataDir}
	if first {
		full = append(full, "--node-id", n.id, "--grpc-addr", n.grpcAddr, "--raft-addr", n.raftAddr)
	}
	full = append(append(full, args...), timing...)
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.t.Fatal(err)
	}
	defer func() { _ = logf.Close() }()
	cmd := exec.Command(tidemarkBin, full...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, and SIGKILL if the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	n.cmd, n.done = cmd, make(chan struct{})
	started := make(chan error, 1)
	go func() {
		// Pdeathsig follows the forking thread: keep it until Wait returns.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(n.done)
	}()
	if err := <-started; err != nil {
		n.t.Fatal(err)
	}
	if n.conn == nil {
		// grpc connections redial on their own, across restarts.
		waitFor(n.t, n.id+" to serve gRPC", 10*time.Second, func() error {
			if n.exited() {
				return fmt.Errorf("%s exited:\n%s", n.id, n.logTail())
			}
			c, err := client.DialAny(n.t.Context(), []string{n.grpcAddr}, client.Options{ProbeTimeout: time.Second})
			if err == nil {
				n.conn = c
			}
			return err
		})
	}
	if !n.cleanup {
		n.cleanup = true
		n.t.Cleanup(func() {
			n.kill()
			if n.t.Failed() {
				n.t.Logf("log of %s:\n%s", n.id, n.logTail())
			}
		})
	}
}

func (n *node) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

func (n *node) kill() {
	if n.cmd == nil || n.exited() {
		return
	}
	_ = syscall.Kill(n.cmd.Process.Pid, syscall.SIGCONT) // a stopped process dies only once continued
	_ = n.cmd.Process.Kill()
	<-n.done
}

func (n *node) signal(sig syscall.Signal) {
	n.t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatalf("%s: %v", n.id, err)
	}
}

func (n *node) logTail() string {
	b, _ := os.ReadFile(n.logPath)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// run runs the tidemark binary to completion and returns its stdout,
// stderr and exit code.
func run(t *testing.T, timeout time.Duration, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(tidemarkBin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		_ = err // the exit code is read below
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		err := <-done
		t.Fatalf("tidemark %v did not finish in %s (%v); stderr:\n%s", args, timeout, err, errb.String())
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

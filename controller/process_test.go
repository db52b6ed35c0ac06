package controller_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
)

// tidemarkBin is the tidemark binary TestMain builds once for the tests
// that run controller processes.
var tidemarkBin string

func TestMain(m *testing.M) { testenv.MainWithTidemark(m, &tidemarkBin) }

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
	*testenv.Child
	t        *testing.T
	id       string
	dataDir  string
	grpcAddr string
	raftAddr string
	conn     *client.Conn
	// tls are the node's --tls-* flags (given at every start).
	tls []string
}

func newNode(t *testing.T, id string) *node {
	return &node{Child: testenv.NewChild(t, id, tidemarkBin), t: t, id: id, dataDir: filepath.Join(t.TempDir(), "data"),
		grpcAddr: testenv.FreeAddr(t), raftAddr: testenv.FreeAddr(t), tls: testenv.Args(testCA(t).Files(t, testenv.Controller(id)))}
}

// start runs the controller with args after the identity flags (or with
// only --data-dir and the timing flags when args is nil: a restart).
func (n *node) start(first bool, args ...string) {
	n.t.Helper()
	full := []string{"controller", "--data-dir", n.dataDir}
	if first {
		full = append(full, "--node-id", n.id, "--grpc-addr", n.grpcAddr, "--raft-addr", n.raftAddr)
	}
	n.Args = append(append(append(full, args...), timing...), n.tls...)
	n.Start()
	if n.conn == nil {
		// grpc connections redial on their own, across restarts.
		testenv.WaitFor(n.t, n.id+" to serve gRPC", 10*time.Second, func() error {
			if n.Exited() {
				return fmt.Errorf("%s exited:\n%s", n.id, n.LogTail())
			}
			c, err := client.DialAny(n.t.Context(), []string{n.grpcAddr}, withProbe(n.clientOpts(), time.Second))
			if err == nil {
				n.conn = c
			}
			return err
		})
	}
}

// clientOpts dials the node as an admin: with the test CA's credential,
// or with the one its bootstrap wrote when it made its own CA.
func (n *node) clientOpts() client.Options {
	if len(n.tls) == 0 || n.tls[0] != "--ca-key-file" {
		return adminOpts(n.t)
	}
	dir := controller.AdminCredentials(n.dataDir)
	src, err := tlsx.FromFiles(tlsx.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")})
	if err != nil {
		return client.Options{} // not written yet: the dial fails and is retried
	}
	return client.Options{TLS: src.ClientConfig()}
}

func withProbe(o client.Options, d time.Duration) client.Options {
	o.ProbeTimeout = d
	return o
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

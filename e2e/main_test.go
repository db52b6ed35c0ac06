package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
)

// tidemarkBin is the binary TestMain builds once.
var tidemarkBin string

func TestMain(m *testing.M) { testenv.MainWithTidemark(m, &tidemarkBin) }

// startProc runs tidemark with args as a child of the test, its output in
// a log file that the test prints when it fails. A cleanup kills it.
func startProc(t *testing.T, name string, args ...string) *testenv.Child {
	t.Helper()
	p := newProc(t, name, args...)
	p.Start()
	return p
}

// newProc prepares a tidemark child, with the controller and repository
// environment variables of the test's own shell cleared.
func newProc(t *testing.T, name string, args ...string) *testenv.Child {
	p := testenv.NewChild(t, name, tidemarkBin, args...)
	p.Env = []string{"TIDEMARK_CONTROLLER=", "TIDEMARK_REPO="}
	return p
}

// credentials maps a test's name to the --credentials directory its CLI
// runs use (set by startDev and startCluster; subtests inherit it).
var credentials sync.Map

func setCredentials(t *testing.T, dir string) {
	credentials.Store(t.Name(), dir)
	t.Cleanup(func() { credentials.Delete(t.Name()) })
}

func credentialsOf(t *testing.T) string {
	for name := t.Name(); name != ""; {
		if d, ok := credentials.Load(name); ok {
			return d.(string)
		}
		i := strings.LastIndex(name, "/")
		if i < 0 {
			break
		}
		name = name[:i]
	}
	return ""
}

// devAgentCreds issues a credential for another agent from the CA of the
// tidemark dev under dir (as an operator holding the CA key file could),
// and returns its --tls-* flags.
func devAgentCreds(t *testing.T, dir, name string) []string {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(dir, "controller", "tls", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := os.ReadFile(filepath.Join(dir, "controller", "tls", "ca-key.sealed"))
	if err != nil {
		t.Fatal(err)
	}
	kf, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := tlsx.Unseal(sealed, kf)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tlsx.ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return testenv.Args(testenv.TestCAOf(ca).Files(t, testenv.Agent(name)))
}

// result is how one CLI run ended.
type result struct {
	out, err string
	code     int
}

// tm runs the tidemark CLI to completion (killed after timeout).
func tm(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	cmd := exec.Command(tidemarkBin, args...)
	cmd.Env = append(os.Environ(), "TIDEMARK_CONTROLLER=", "TIDEMARK_REPO=", "TIDEMARK_CREDENTIALS="+credentialsOf(t))
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
	case <-time.After(testenv.Wait(timeout)):
		_ = cmd.Process.Kill()
		err := <-done
		t.Fatalf("tidemark %v did not finish in %s (%v); stderr:\n%s", args, timeout, err, errb.String())
	}
	return result{out: out.String(), err: errb.String(), code: cmd.ProcessState.ExitCode()}
}

// must runs the CLI and fails the test unless it exits 0.
func must(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	r := tm(t, timeout, args...)
	if r.code != 0 {
		t.Fatalf("tidemark %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.out, r.err)
	}
	return r
}

// decode parses a CLI's JSON output.
func decode[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.out), &v); err != nil {
		t.Fatalf("decoding %q: %v", r.out, err)
	}
	return v
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// startDev starts `tidemark dev` serving mysqlDSN with its data under dir and
// its controller on addr, and waits until it prints that address.
func startDev(t *testing.T, dir, mysqlDSN, addr string, extra ...string) *testenv.Child {
	t.Helper()
	return startDevEnv(t, dir, mysqlDSN, addr, nil, extra...)
}

// startDevEnv is startDev with env added to the child's environment.
func startDevEnv(t *testing.T, dir, mysqlDSN, addr string, env []string, extra ...string) *testenv.Child {
	t.Helper()
	dev := newProc(t, "dev", append([]string{"dev", "--data-dir", dir, "--mysql", mysqlDSN, "--grpc-addr", addr}, extra...)...)
	dev.Env = append(dev.Env, env...)
	dev.Start()
	setCredentials(t, filepath.Join(dir, "controller", "tls", "admin"))
	testenv.WaitFor(t, "tidemark dev to print its address", 20*time.Second, func() error {
		if dev.Exited() {
			t.Fatalf("tidemark dev exited:\n%s", dev.LogTail())
		}
		if !strings.Contains(dev.Log(), "controller "+addr+"\n") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	return dev
}

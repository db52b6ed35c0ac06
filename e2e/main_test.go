package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// tidemarkBin is the binary TestMain builds once.
var tidemarkBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tidemark-e2e-")
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

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// proc is one long-running tidemark process (controller, agent, dev).
type proc struct {
	t       *testing.T
	name    string
	args    []string
	logPath string
	env     []string // added to the environment, after the test's own
	cmd     *exec.Cmd
	done    chan struct{}
}

// startProc runs tidemark with args, its output in a log file that the
// test prints when it fails. A cleanup kills it.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, args: args, logPath: filepath.Join(t.TempDir(), name+".log")}
	p.start()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("log of %s:\n%s", p.name, p.logTail())
		}
	})
	return p
}

func (p *proc) start() {
	p.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	defer func() { _ = logf.Close() }()
	cmd := exec.Command(tidemarkBin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(append(os.Environ(), "TIDEMARK_CONTROLLER=", "TIDEMARK_REPO="), p.env...)
	// Own process group, and SIGKILL if the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd, p.done = cmd, make(chan struct{})
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
		close(p.done)
	}()
	if err := <-started; err != nil {
		p.t.Fatal(err)
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL (kill -9) and waits for the process to go.
func (p *proc) kill() {
	if p.cmd == nil || p.exited() {
		return
	}
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGCONT) // a stopped process dies only once continued
	_ = p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
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
	cmd.Env = append(os.Environ(), "TIDEMARK_CONTROLLER=", "TIDEMARK_REPO=")
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

// waitFor polls f until it returns nil, failing the test after d (scaled
// for CI).
func waitFor(t testing.TB, what string, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(testenv.Wait(d))
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

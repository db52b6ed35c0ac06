package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BuildTidemark builds the tidemark binary into dir and returns its path:
// what process tests run, built once in their TestMain.
func BuildTidemark(dir string) (string, error) {
	bin := filepath.Join(dir, "tidemark")
	build := exec.Command("go", "build", "-o", bin, "github.com/tidemark-backup/tidemark/cmd/tidemark")
	build.Dir = RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building tidemark: %w\n%s", err, out)
	}
	return bin, nil
}

// The tidemark binary of TidemarkBinary, built on first use.
var (
	lazyOnce sync.Once
	lazyDir  string
	lazyBin  string
	lazyErr  error
)

// TidemarkBinary returns the tidemark binary, built at most once per test
// process and only when a test asks for it: a package whose process tests
// are few does not pay the build for the rest. Its TestMain runs
// MainWithLazyTidemark, which removes it afterwards.
func TidemarkBinary(t testing.TB) string {
	t.Helper()
	lazyOnce.Do(func() {
		if lazyDir, lazyErr = os.MkdirTemp("", "tidemark-bin-"); lazyErr == nil {
			lazyBin, lazyErr = BuildTidemark(lazyDir)
		}
	})
	if lazyErr != nil {
		t.Fatal(lazyErr)
	}
	return lazyBin
}

// MainWithLazyTidemark runs the tests, then removes the binary
// TidemarkBinary built, if any.
func MainWithLazyTidemark(m *testing.M) {
	code := m.Run()
	if lazyDir != "" {
		_ = os.RemoveAll(lazyDir)
	}
	os.Exit(code)
}

// Child is a long-running program a test runs (a tidemark controller or
// agent), started so that it dies with the test binary, its output appended
// to a log file that is printed when the test fails. Kill it and Start it
// again for a restart; a cleanup kills it at the end of the test.
type Child struct {
	Name    string
	Path    string   // the program
	Args    []string // for the next Start
	Env     []string // added to the test's environment, overriding it
	LogPath string

	t testing.TB
	// p is the process as last started. Atomic because tests read it from
	// other goroutines (a proxy asking which child owns a connection)
	// while the test restarts the child.
	p       atomic.Pointer[process]
	cleanup bool
}

// NewChild prepares a child; Start runs it.
func NewChild(t testing.TB, name, path string, args ...string) *Child {
	return &Child{Name: name, Path: path, Args: args, LogPath: filepath.Join(t.TempDir(), name+".log"), t: t}
}

// StartChild runs a new child.
func StartChild(t testing.TB, name, path string, args ...string) *Child {
	t.Helper()
	c := NewChild(t, name, path, args...)
	c.Start()
	return c
}

// Start runs the program with the current Args and Env.
func (c *Child) Start() {
	c.t.Helper()
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Env = append(os.Environ(), c.Env...)
	p, err := startProcess(cmd, c.LogPath)
	if err != nil {
		c.t.Fatalf("starting %s: %v", c.Name, err)
	}
	c.p.Store(p)
	if !c.cleanup {
		c.cleanup = true
		c.t.Cleanup(func() {
			c.Kill()
			if c.t.Failed() {
				c.t.Logf("log of %s:\n%s", c.Name, c.LogTail())
			}
		})
	}
}

// Exited reports whether the child (as last started) has exited.
func (c *Child) Exited() bool {
	p := c.p.Load()
	return p == nil || p.exited()
}

// Done is closed when the child (as last started) has exited.
func (c *Child) Done() <-chan struct{} { return c.p.Load().done }

// Pid is the child's process id.
func (c *Child) Pid() int { return c.p.Load().pid() }

// Kill sends SIGKILL (kill -9) to the child's process group, continuing it
// first in case it is stopped, and waits for it to go.
func (c *Child) Kill() {
	if c.Exited() {
		return
	}
	p := c.p.Load()
	_ = syscall.Kill(-p.pid(), syscall.SIGCONT)
	p.kill()
}

// Signal sends sig to the child.
func (c *Child) Signal(sig syscall.Signal) {
	c.t.Helper()
	if err := c.p.Load().cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("%s: %v", c.Name, err)
	}
}

// Stop sends SIGSTOP and returns once the kernel shows the process stopped:
// the signal is delivered asynchronously, and a process still running for
// a moment after kill(2) returns can answer one more request.
func (c *Child) Stop() {
	c.t.Helper()
	c.Signal(syscall.SIGSTOP)
	tasks := fmt.Sprintf("/proc/%d/task/*/stat", c.Pid())
	deadline := time.Now().Add(Wait(10 * time.Second))
	for {
		running := ""
		paths, _ := filepath.Glob(tasks)
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				continue // a thread that exited
			}
			// The state follows the parenthesized command name.
			if i := bytes.LastIndexByte(b, ')'); i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
				running = p
				break
			}
		}
		if len(paths) > 0 && running == "" {
			return // every thread stopped
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not stopped 10 s after SIGSTOP (%s)", c.Name, running)
		}
		time.Sleep(time.Millisecond)
	}
}

// Log is everything the child has written, across restarts.
func (c *Child) Log() string {
	b, _ := os.ReadFile(c.LogPath)
	return string(b)
}

// LogTail is the last 8 KiB of the log.
func (c *Child) LogTail() string {
	s := c.Log()
	if len(s) > 8<<10 {
		s = s[len(s)-8<<10:]
	}
	return s
}

// MainWithTidemark is a TestMain for packages whose tests run the tidemark
// binary: it builds it once into *bin, runs the tests and removes it.
func MainWithTidemark(m *testing.M, bin *string) {
	dir, err := os.MkdirTemp("", "tidemark-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *bin, err = BuildTidemark(dir); err != nil {
		_ = os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// FreeAddr returns a loopback HOST:PORT free a moment ago, for a server a
// test starts itself.
func FreeAddr(t testing.TB) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// WaitFor polls f every 50 ms until it returns nil, failing the test with
// f's last error after d (scaled by Wait).
func WaitFor(t testing.TB, what string, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(Wait(d))
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

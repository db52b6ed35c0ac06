package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// process is a child server started so that it dies with the test binary.
type process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the child has exited and been reaped
	err     error         // Wait's result; read only after done is closed
}

// startProcess starts cmd with its stdout and stderr appended to logPath.
func startProcess(cmd *exec.Cmd, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer func() { _ = logf.Close() }() // the child holds its own descriptor
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	p := &process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the OS thread that forked the child exits, not
		// the process; Go may retire threads. Keeping the forking goroutine on
		// its thread until Wait returns (Wait blocks a thread anyway) ties the
		// signal to the test binary's death only.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// exitStatus describes how the child ended; call after done is closed.
func (p *process) exitStatus() string {
	if p.err == nil {
		return "exit status 0"
	}
	return p.err.Error()
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// attemptContext bounds one readiness probe: it ends after timeout or as soon
// as the child exits, so that a probe hanging on a port someone else holds
// does not delay reporting the child's death.
func (p *process) attemptContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// kill sends SIGKILL to the child's process group and waits for the exit.
func (p *process) kill() {
	if !p.exited() {
		// The group catches helpers the server may have spawned; checking
		// exited first avoids signaling a recycled pid.
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// stop asks the child to shut down with SIGTERM and kills it after grace.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// logTail returns the end of the child's log for error messages.
func (p *process) logTail() string { return logTail(p.logPath) }

func logTail(path string) string {
	const max = 4096
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer func() { _ = f.Close() }()
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(-max, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return fmt.Sprintf("--- tail of %s ---\n%s", path, strings.Join(lines, "\n"))
}

// logContainsFrom reports whether the log, from offset on (what the latest
// start wrote), contains any of needles.
func logContainsFrom(path string, offset int64, needles ...string) bool {
	b, err := os.ReadFile(path)
	if err != nil || offset > int64(len(b)) {
		return false
	}
	b = b[offset:]
	for _, n := range needles {
		if bytes.Contains(b, []byte(n)) {
			return true
		}
	}
	return false
}

// freePort returns a loopback port that was free a moment ago. Another process
// may take it before the server binds it; callers retry once on a collision.
// A variable so that a test can force that collision.
var freePort = func() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("testenv: listener has no TCP address")
	}
	return addr.Port, nil
}

// childEnv is the test's environment without variables that start with any of
// prefixes, plus extra.
func childEnv(prefixes []string, extra ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

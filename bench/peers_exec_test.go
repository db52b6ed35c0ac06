package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// Install hints for the peers BenchmarkLogical measures Tidemark against.
const (
	mydumperHint = "apt-get install -y mydumper"
	sysbenchHint = "apt-get install -y sysbench"
	zstdHint     = "apt-get install -y zstd"
	mbackupHint  = "apt-get install -y mariadb-backup"
)

// requirePeer returns the path of a peer tool and fails the benchmark, with
// the install hint, when it is missing: a comparison with a peer left out is
// no comparison (testenv.RequireBinary would skip outside CI).
func requirePeer(b *testing.B, name, hint string) string {
	b.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	var dirs []string
	if root := testenv.RepoRoot(); root != "" {
		dirs = append(dirs, filepath.Join(root, ".bin"))
	}
	dirs = append(dirs, "/usr/sbin", "/usr/local/bin")
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	b.Fatalf("bench: %s not found in PATH or %s; install it with: %s", name, strings.Join(dirs, ", "), hint)
	return ""
}

// usage is what one measured command cost on the tool's side.
type usage struct {
	cpu time.Duration // user + system of every process of the command
	// maxRSS is the sum of the processes' peak RSS in bytes: an upper bound
	// of the command's simultaneous peak (a pipeline's stages all live at
	// once), sampled from /proc (see hwmSampler).
	maxRSS int64
}

func (u usage) add(v usage) usage { return usage{cpu: u.cpu + v.cpu, maxRSS: u.maxRSS + v.maxRSS} }

// tailBuffer keeps the last max bytes written to it, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}

// runPipeline runs stages connected stdout to stdin, as a shell pipeline
// would, with the first stage reading inPath ("" for no input) and the last
// writing outPath ("" to discard). The stages are started directly rather
// than under sh so that each one's CPU time and peak RSS can be read.
func runPipeline(ctx context.Context, inPath, outPath string, stages ...[]string) (usage, error) {
	cmds := make([]*exec.Cmd, len(stages))
	tails := make([]*tailBuffer, len(stages))
	for i, s := range stages {
		cmds[i] = exec.CommandContext(ctx, s[0], s[1:]...)
		tails[i] = &tailBuffer{max: 4 << 10}
		cmds[i].Stderr = tails[i]
	}
	var parentEnds []*os.File // closed once the children hold them
	defer func() {
		for _, f := range parentEnds {
			_ = f.Close()
		}
	}()
	if inPath != "" {
		f, err := os.Open(inPath)
		if err != nil {
			return usage{}, err
		}
		parentEnds = append(parentEnds, f)
		cmds[0].Stdin = f
	}
	last := cmds[len(cmds)-1]
	if outPath != "" {
		f, err := os.Create(outPath)
		if err != nil {
			return usage{}, err
		}
		parentEnds = append(parentEnds, f)
		last.Stdout = f
	} else {
		last.Stdout = tails[len(cmds)-1]
	}
	for i := 0; i+1 < len(cmds); i++ {
		r, w, err := os.Pipe()
		if err != nil {
			return usage{}, err
		}
		parentEnds = append(parentEnds, r, w)
		cmds[i].Stdout, cmds[i+1].Stdin = w, r
	}
	for i, c := range cmds {
		if err := c.Start(); err != nil {
			for _, started := range cmds[:i] {
				_ = started.Process.Kill()
				_ = started.Wait()
			}
			return usage{}, fmt.Errorf("%s: %w", stages[i][0], err)
		}
	}
	// The children hold their own descriptors; ours must go, or a reader
	// never sees EOF.
	for _, f := range parentEnds {
		_ = f.Close()
	}
	parentEnds = nil
	hwm := sampleHWM(cmds)
	var u usage
	var errs []error
	for i, c := range cmds {
		err := c.Wait()
		hwm.reaped(i)
		if c.ProcessState != nil {
			if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
				u.cpu += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w\n%s", strings.Join(stages[i], " "), err, tails[i]))
		}
	}
	u.maxRSS = hwm.stop()
	return u, errors.Join(errs...)
}

// hwmSampler polls the VmHWM (peak RSS) of running children. The rusage
// ru_maxrss that wait4 returns cannot be used: Go starts children with
// vfork semantics, and the kernel folds the parent's peak RSS into the
// child's at exec, so every peer would be charged this test process's
// memory. VmHWM is itself a high-water mark, so polling misses only what a
// child adds in its last interval.
type hwmSampler struct {
	pids  []int
	peak  []atomic.Int64 // bytes
	gone  []atomic.Bool  // reaped: the pid may be reused
	quit  chan struct{}
	ended chan struct{}
}

const hwmInterval = 20 * time.Millisecond

func sampleHWM(cmds []*exec.Cmd) *hwmSampler {
	s := &hwmSampler{pids: make([]int, len(cmds)), peak: make([]atomic.Int64, len(cmds)), gone: make([]atomic.Bool, len(cmds)),
		quit: make(chan struct{}), ended: make(chan struct{})}
	for i, c := range cmds {
		s.pids[i] = c.Process.Pid
	}
	go func() {
		defer close(s.ended)
		t := time.NewTicker(hwmInterval)
		defer t.Stop()
		for {
			for i, pid := range s.pids {
				if s.gone[i].Load() {
					continue
				}
				if v := vmHWM(pid); v > s.peak[i].Load() {
					s.peak[i].Store(v)
				}
			}
			select {
			case <-s.quit:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *hwmSampler) reaped(i int) { s.gone[i].Store(true) }

// stop ends the sampling and returns the sum of the children's peaks.
func (s *hwmSampler) stop() int64 {
	close(s.quit)
	<-s.ended
	var sum int64
	for i := range s.peak {
		sum += s.peak[i].Load()
	}
	return sum
}

// vmHWM is a process's peak RSS in bytes, 0 once it has exited.
func vmHWM(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	_, rest, ok := strings.Cut(string(data), "VmHWM:")
	if !ok {
		return 0
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return 0
	}
	kb, _ := strconv.ParseInt(f[0], 10, 64)
	return kb << 10
}

// cpuSnapshot is the machine's and this benchmark's CPU time at one moment,
// to tell how much of the machine other engineers' work took during a run.
type cpuSnapshot struct {
	busy   time.Duration // all CPUs: user+nice+system+irq+softirq
	steal  time.Duration // taken by the hypervisor
	self   time.Duration // this test process, every thread
	server time.Duration // the mariadbd the run talks to
}

const clkTck = 100 // USER_HZ; fixed at 100 on Linux for /proc

func ticks(s string) time.Duration {
	n, _ := strconv.ParseInt(s, 10, 64)
	return time.Duration(n) * time.Second / clkTck
}

func takeCPUSnapshot(serverPid int) cpuSnapshot {
	var s cpuSnapshot
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
		if len(f) > 8 && f[0] == "cpu" {
			for _, i := range []int{1, 2, 3, 6, 7} {
				s.busy += ticks(f[i])
			}
			s.steal = ticks(f[8])
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if serverPid > 0 {
		s.server = procCPU(serverPid)
	}
	return s
}

// procCPU is a running process's user+system time from /proc/PID/stat.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may hold spaces: count fields
	// after the last ')'; utime and stime are fields 14 and 15 of the line.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	return ticks(f[11]) + ticks(f[12])
}

func load1() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// pathSize is the total size of the regular files under path (or of path).
func pathSize(path string) int64 {
	var n int64
	_ = filepath.Walk(path, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

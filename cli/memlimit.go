package cli

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
)

// The controller's soft memory limit (runtime/debug.SetMemoryLimit). A
// controller's heap is mostly its catalog, and it runs with GOGC 200
// (controllerGCPercent): between two collections the heap may reach three
// times the live catalog, 2.5 GiB for a 900 MiB catalog (bench/README.md,
// BenchmarkCatalog), which a container's limit kills. A soft limit makes
// the collector run more often as the heap nears it instead; it never
// makes an allocation fail, so a catalog larger than the limit costs CPU
// (collections back to back) and is reported, not killed by the runtime.
//
// --memory-limit auto (the default) does what Prometheus 3 does with
// --auto-gomemlimit: GOMEMLIMIT when the environment sets it (the runtime
// applied it already), else 90 % of the cgroup's memory limit when there
// is one (a container, a systemd unit with MemoryMax=), else no limit, as
// Consul and Nomad, which leave it to GOMEMLIMIT. An explicit value (a
// size, or 0 for none) overrides GOMEMLIMIT, like every flag overrides the
// environment.

// memoryLimitAutoRatio is the share of a cgroup's limit the soft limit
// takes: the rest is for what the Go runtime does not count (goroutine
// stacks are counted; cgo, the binary's pages and the kernel's page cache
// charged to the cgroup are not).
const memoryLimitAutoRatio = 0.9

// memoryLimit is a resolved --memory-limit: the limit to set (none when
// set is false) and where it came from, for the start-up log.
type memoryLimit struct {
	set   bool
	bytes int64
	from  string
}

// resolveMemoryLimit reads --memory-limit's value. getenv is os.Getenv
// and root "/" outside tests (the cgroup files are read under it).
func resolveMemoryLimit(value string, getenv func(string) string, root string) (memoryLimit, error) {
	switch v := strings.TrimSpace(value); v {
	case "auto", "":
		if e := getenv("GOMEMLIMIT"); e != "" {
			return memoryLimit{from: "GOMEMLIMIT=" + e + " (applied by the Go runtime)"}, nil
		}
		if l, path, ok := cgroupMemoryLimit(root); ok {
			return memoryLimit{set: true, bytes: int64(float64(l) * memoryLimitAutoRatio),
				from: fmt.Sprintf("90%% of the cgroup's memory limit (%s in %s)", bytesFlagText(uint64(l)), path)}, nil
		}
		return memoryLimit{from: "none: no GOMEMLIMIT and no cgroup memory limit"}, nil
	case "0", "none":
		return memoryLimit{set: true, bytes: math.MaxInt64, from: "none (--memory-limit " + v + ")"}, nil
	default:
		n, err := parseSize(v)
		if err != nil || n > math.MaxInt64 {
			return memoryLimit{}, fmt.Errorf("--memory-limit %q: give auto, 0 (none) or a size such as 1536MiB or 2GiB", value)
		}
		if n < 64<<20 {
			return memoryLimit{}, fmt.Errorf("--memory-limit %q: under 64MiB a controller would collect garbage without end; give at least 64MiB, or 0 for no limit", value)
		}
		return memoryLimit{set: true, bytes: int64(n), from: "--memory-limit"}, nil
	}
}

// apply sets the limit (nothing when the runtime keeps its own).
func (m memoryLimit) apply() {
	if m.set {
		debug.SetMemoryLimit(m.bytes)
	}
}

// cgroupMemoryLimit is the memory limit of this process's cgroup, the
// smallest along its path to the root (cgroup v2: memory.max), or of its
// v1 memory cgroup (memory.limit_in_bytes, where "no limit" is a number
// near 2^63); false when there is none or it cannot be read.
func cgroupMemoryLimit(root string) (int64, string, bool) {
	v2, v1 := "/", ""
	if f, err := os.Open(filepath.Join(root, "proc/self/cgroup")); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// "0::/system.slice/x.service" (v2), "4:memory:/docker/…" (v1).
			parts := strings.SplitN(sc.Text(), ":", 3)
			if len(parts) != 3 {
				continue
			}
			switch {
			case parts[0] == "0" && parts[1] == "":
				v2 = parts[2]
			case slices.Contains(strings.Split(parts[1], ","), "memory"):
				v1 = parts[2]
			}
		}
		_ = f.Close()
	}
	best, where := int64(0), ""
	// v2: every ancestor's memory.max bounds the process.
	for dir := filepath.Clean("/" + v2); ; dir = filepath.Dir(dir) {
		p := filepath.Join(root, "sys/fs/cgroup", dir, "memory.max")
		if n, ok := readLimit(p); ok && (best == 0 || n < best) {
			best, where = n, p
		}
		if dir == "/" {
			break
		}
	}
	if best > 0 {
		return best, where, true
	}
	for _, dir := range []string{filepath.Clean("/" + v1), "/"} {
		p := filepath.Join(root, "sys/fs/cgroup/memory", dir, "memory.limit_in_bytes")
		if n, ok := readLimit(p); ok && n < 1<<60 {
			return n, p, true
		}
	}
	return 0, "", false
}

// readLimit reads a cgroup limit file: a byte count; "max" is none.
func readLimit(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil && n > 0
}

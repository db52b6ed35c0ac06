package cli

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// TestResolveMemoryLimit: auto defers to GOMEMLIMIT, else takes 90 % of
// the smallest cgroup limit on the process's path (v2, then v1), else
// none; an explicit size or 0 wins over GOMEMLIMIT; bad values are
// refused with what to give.
func TestResolveMemoryLimit(t *testing.T) {
	files := func(t *testing.T, fs map[string]string) string {
		root := t.TempDir()
		for p, data := range fs {
			full := filepath.Join(root, p)
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return root
	}
	v2 := map[string]string{
		"proc/self/cgroup": "0::/system.slice/tidemark.service\n",
		"sys/fs/cgroup/system.slice/tidemark.service/memory.max": "max\n",
		"sys/fs/cgroup/system.slice/memory.max":                  "2147483648\n",
	}
	v1 := map[string]string{
		"proc/self/cgroup": "12:cpu,cpuacct:/docker/x\n4:memory:/docker/x\n",
		"sys/fs/cgroup/memory/docker/x/memory.limit_in_bytes": "1073741824\n",
	}
	v1None := map[string]string{
		"proc/self/cgroup":                           "4:memory:/\n",
		"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
	}
	ratio, gib1, gib2 := memoryLimitAutoRatio, float64(1<<30), float64(2<<30) // not constants: truncated at run time, as the code does
	noEnv := func(string) string { return "" }
	withEnv := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "3GiB"
		}
		return ""
	}
	for _, c := range []struct {
		name, value string
		env         func(string) string
		fs          map[string]string
		set         bool
		bytes       int64
		from        string
	}{
		{"auto under cgroup v2", "auto", noEnv, v2, true, int64(gib2 * ratio), "system.slice/memory.max"},
		{"auto under cgroup v1", "auto", noEnv, v1, true, int64(gib1 * ratio), "memory.limit_in_bytes"},
		{"auto, v1 without a limit", "auto", noEnv, v1None, false, 0, "none"},
		{"auto, no cgroup files", "auto", noEnv, nil, false, 0, "none"},
		{"auto defers to GOMEMLIMIT", "auto", withEnv, v2, false, 0, "GOMEMLIMIT=3GiB"},
		{"a size wins over GOMEMLIMIT", "1536MiB", withEnv, v2, true, 1536 << 20, "--memory-limit"},
		{"0 is none, over GOMEMLIMIT", "0", withEnv, v2, true, math.MaxInt64, "none"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := resolveMemoryLimit(c.value, c.env, files(t, c.fs))
			if err != nil || m.set != c.set || m.bytes != c.bytes || !strings.Contains(m.from, c.from) {
				t.Fatalf("got %+v, %v; want set %v, %d bytes, from %q", m, err, c.set, c.bytes, c.from)
			}
		})
	}
	for _, bad := range []string{"lots", "12MiB", "-1", "1.5GiB"} {
		if _, err := resolveMemoryLimit(bad, noEnv, t.TempDir()); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
			t.Errorf("--memory-limit %q: %v, want an error naming the flag", bad, err)
		}
	}

	// apply sets the runtime's limit.
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	memoryLimit{set: true, bytes: 5 << 30}.apply()
	if got := debug.SetMemoryLimit(-1); got != 5<<30 {
		t.Fatalf("after apply the runtime's limit is %d", got)
	}
}

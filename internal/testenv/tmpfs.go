package testenv

import (
	"fmt"
	"os/exec"
	"testing"
)

// Tmpfs mounts a tmpfs of size (mount's syntax: "12m") on a new temporary
// directory and unmounts it when the test ends: a small filesystem for
// disk-full tests. It needs root; without it the test is skipped, or fails
// in CI.
func Tmpfs(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		msg := fmt.Sprintf("mounting a %s tmpfs: %v: %s", size, err, out)
		if CI() {
			t.Fatal(msg + " (CI runs as root)")
		}
		t.Skip(msg + " (needs root)")
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

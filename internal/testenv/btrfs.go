package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BtrfsInstallHint is quoted when mkfs.btrfs or btrfs is missing.
const BtrfsInstallHint = "apt-get install -y btrfs-progs"

// Btrfs is a Btrfs filesystem on a loop device, mounted for one test.
type Btrfs struct {
	Mount string // where it is mounted
	Dev   string // the loop device, e.g. /dev/loop3
	Image string // the sparse file behind it
}

// StartBtrfs creates a sparse image file of size (truncate's syntax:
// "512M"), attaches it to a free loop device, formats it with mkfs.btrfs
// and mounts it on a new temporary directory. Cleanups unmount it, detach
// the loop device and remove the image, also when the test fails half way.
// It needs root and loop devices: without them the test is skipped, or
// fails in CI (which runs as root).
func StartBtrfs(t testing.TB, size string) *Btrfs {
	t.Helper()
	need := func(msg string) {
		t.Helper()
		if CI() {
			t.Fatal("testenv: Btrfs volume: " + msg + " (CI runs as root with loop devices)")
		}
		t.Skip("testenv: Btrfs volume: " + msg + " (needs root and loop devices)")
	}
	if os.Geteuid() != 0 {
		need("not root")
	}
	mkfs := RequireBinary(t, "mkfs.btrfs", BtrfsInstallHint)
	RequireBinary(t, "btrfs", BtrfsInstallHint)
	losetup := RequireBinary(t, "losetup", "apt-get install -y mount")

	// The image lives outside t.TempDir: the mount point must be
	// unmounted before the image's directory is removed, and t.TempDir's
	// removal runs after our cleanups only in reverse registration order.
	dir, err := os.MkdirTemp("", "tidemark-btrfs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	img := filepath.Join(dir, "image")
	if out, err := exec.Command("truncate", "-s", size, img).CombinedOutput(); err != nil {
		t.Fatalf("testenv: truncate %s: %v: %s", img, err, out)
	}
	out, err := exec.Command(losetup, "--find", "--show", img).CombinedOutput()
	if err != nil {
		need(fmt.Sprintf("losetup --find --show: %v: %s", err, strings.TrimSpace(string(out))))
	}
	b := &Btrfs{Dev: strings.TrimSpace(string(out)), Mount: filepath.Join(dir, "mnt"), Image: img}
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "-d", b.Dev).CombinedOutput(); err != nil {
			t.Logf("testenv: losetup -d %s: %v: %s", b.Dev, err, out)
		}
	})
	if out, err := exec.Command(mkfs, "-q", "-f", b.Dev).CombinedOutput(); err != nil {
		t.Fatalf("testenv: mkfs.btrfs %s: %v: %s", b.Dev, err, out)
	}
	if err := os.Mkdir(b.Mount, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "btrfs", b.Dev, b.Mount).CombinedOutput(); err != nil {
		need(fmt.Sprintf("mount -t btrfs %s: %v: %s", b.Dev, err, out))
	}
	t.Cleanup(func() {
		// Lazy: a server the test started may still be going down.
		if out, err := exec.Command("umount", "-l", b.Mount).CombinedOutput(); err != nil {
			t.Logf("testenv: umount %s: %v: %s", b.Mount, err, out)
		}
	})
	return b
}

// Subvolume creates a Btrfs subvolume named name at the top of the volume
// and returns its path.
func (b *Btrfs) Subvolume(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(b.Mount, name)
	if out, err := exec.Command("btrfs", "subvolume", "create", p).CombinedOutput(); err != nil {
		t.Fatalf("testenv: btrfs subvolume create %s: %v: %s", p, err, out)
	}
	return p
}

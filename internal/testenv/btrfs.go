package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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

// Free is the space the filesystem has left for new data (statfs
// f_bavail), as df's "Available" and the agent's probe see it.
func (b *Btrfs) Free(t testing.TB) uint64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(b.Mount, &st); err != nil {
		t.Fatalf("testenv: statfs %s: %v", b.Mount, err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// Fill leaves about leave bytes free on the filesystem: it preallocates a
// ballast file at the top of the volume (outside every subvolume) for the
// rest. A server with its datadir on the volume keeps the space left for
// its own writes. release removes the ballast and commits the filesystem,
// so that the space is free when it returns (a removed file's extents are
// freed only when Btrfs commits its transaction, up to 30 s later).
func (b *Btrfs) Fill(t testing.TB, leave uint64) (release func()) {
	t.Helper()
	free := b.Free(t)
	if free <= leave {
		t.Fatalf("testenv: %s has %d bytes free, not more than the %d to leave", b.Mount, free, leave)
	}
	p := filepath.Join(b.Mount, fmt.Sprintf("ballast-%d", free))
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, int64(free-leave)); err != nil {
		t.Fatalf("testenv: fallocate %d bytes in %s: %v", free-leave, p, err)
	}
	b.sync(t)
	return func() {
		t.Helper()
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		b.sync(t)
	}
}

// sync commits the filesystem's transaction (btrfs filesystem sync).
func (b *Btrfs) sync(t testing.TB) {
	t.Helper()
	if out, err := exec.Command("btrfs", "filesystem", "sync", b.Mount).CombinedOutput(); err != nil {
		t.Fatalf("testenv: btrfs filesystem sync %s: %v: %s", b.Mount, err, out)
	}
}

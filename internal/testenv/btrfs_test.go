package testenv

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// TestStartBtrfs: the volume is Btrfs, a subvolume is one (inode 256), and
// when the test ends the filesystem is unmounted and the loop device
// detached.
func TestStartBtrfs(t *testing.T) {
	var b *Btrfs
	t.Run("volume", func(t *testing.T) {
		b = StartBtrfs(t, "256M")
		var sfs syscall.Statfs_t
		if err := syscall.Statfs(b.Mount, &sfs); err != nil {
			t.Fatal(err)
		}
		if sfs.Type != 0x9123683e {
			t.Errorf("%s: filesystem type 0x%x, want Btrfs", b.Mount, sfs.Type)
		}
		sub := b.Subvolume(t, "sub")
		var st syscall.Stat_t
		if err := syscall.Stat(sub, &st); err != nil || st.Ino != 256 {
			t.Errorf("%s: inode %d (%v), want a subvolume (256)", sub, st.Ino, err)
		}
	})
	if b == nil {
		return // skipped
	}
	if _, err := os.Stat(b.Mount); !os.IsNotExist(err) {
		t.Errorf("%s still there after the test: %v", b.Mount, err)
	}
	out, _ := exec.Command("losetup", "-a").CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, b.Image) { // the device itself may already serve another test

			t.Errorf("loop device still attached: %s", l)
		}
	}
}

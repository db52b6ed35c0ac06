package snapshot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Filesystem magic numbers (statfs f_type).
const (
	magicBtrfs = 0x9123683e
	magicZFS   = 0x2fc12fc1
	magicExt4  = 0xef53
	magicXFS   = 0x58465342
	magicTmpfs = 0x01021994
)

func fsName(magic int64) string {
	switch magic {
	case magicBtrfs:
		return "btrfs"
	case magicZFS:
		return "zfs"
	case magicExt4:
		return "ext2/ext3/ext4"
	case magicXFS:
		return "xfs"
	case magicTmpfs:
		return "tmpfs"
	case 0x794c7630:
		return "overlayfs"
	}
	return fmt.Sprintf("filesystem 0x%x", magic)
}

func devOf(p string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, fmt.Errorf("snapshot: stat %s: %w", p, err)
	}
	return st.Dev, nil
}

// isBtrfsSubvolume: the top directory of every Btrfs subvolume has inode
// number 256 (BTRFS_FIRST_FREE_OBJECTID).
func isBtrfsSubvolume(p string) bool {
	var st unix.Stat_t
	return unix.Stat(p, &st) == nil && st.Ino == 256
}

// topOfDevice walks up from p while the parent is on the same device: the
// mount point of p's filesystem, or on Btrfs the top of p's subvolume
// (every subvolume has a device number of its own).
func topOfDevice(p string) (string, uint64, error) {
	dev, err := devOf(p)
	if err != nil {
		return "", 0, err
	}
	for {
		parent := filepath.Dir(p)
		if parent == p {
			return p, dev, nil
		}
		pd, err := devOf(parent)
		if err != nil || pd != dev {
			return p, dev, nil //nolint:nilerr // an unreadable parent ends the walk: p is the top we can see
		}
		p = parent
	}
}

// locateFunc finds the volume holding dir; lvmSize is the snapshot size
// for LVM and mountBase where LVM snapshots are mounted.
type locateFunc func(ctx context.Context, run Runner, dir, lvmSize, mountBase string) (volume, uint64, error)

// locate finds the snapshot-capable volume holding dir, or says why there
// is none. The device number identifies the volume: two directories on one
// device are snapshotted together.
func locate(ctx context.Context, run Runner, dir, lvmSize, mountBase string) (volume, uint64, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		return nil, 0, fmt.Errorf("snapshot: statfs %s: %w", dir, err)
	}
	top, dev, err := topOfDevice(dir)
	if err != nil {
		return nil, 0, err
	}
	magic := int64(sfs.Type) //nolint:unconvert // int64 on amd64, int32 elsewhere
	switch magic {
	case magicBtrfs:
		if !isBtrfsSubvolume(top) {
			return nil, 0, fmt.Errorf("%s is on Btrfs but %s is not the top of a subvolume (inode is not 256)", dir, top)
		}
		v := &btrfsVolume{run: run, root: top, snapDir: filepath.Join(top, SnapshotDirName)}
		if filepath.Clean(dir) == top {
			if parent := filepath.Dir(top); parent != top && sameMount(parent, top) {
				v.snapDir = filepath.Join(parent, SnapshotDirName)
			}
		}
		return v, dev, nil
	case magicZFS:
		out, err := run.Run(ctx, "zfs", "list", "-H", "-o", "name", dir)
		if err != nil {
			return nil, 0, fmt.Errorf("finding the ZFS dataset of %s: %w", dir, err)
		}
		f := fields(out)
		if len(f) != 1 {
			return nil, 0, fmt.Errorf("finding the ZFS dataset of %s: zfs list printed %q", dir, out)
		}
		return &zfsVolume{run: run, dataset: f[0], root: top}, dev, nil
	case magicExt4, magicXFS:
		maj, mnr := unix.Major(dev), unix.Minor(dev)
		uuid, _ := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/dm/uuid", maj, mnr))
		if !strings.HasPrefix(string(uuid), "LVM-") {
			return nil, 0, notSnapshottable(dir, fsName(magic)+" without LVM")
		}
		dmName, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/dm/name", maj, mnr))
		if err != nil {
			return nil, 0, fmt.Errorf("finding the logical volume of %s: %w", dir, err)
		}
		// Untested against a real LVM (none here): the path from the
		// device-mapper name is one lvs accepts.
		out, err := run.Run(ctx, "lvs", "--noheadings", "--separator", "/", "-o", "vg_name,lv_name", "/dev/mapper/"+strings.TrimSpace(string(dmName)))
		if err != nil {
			return nil, 0, fmt.Errorf("finding the logical volume of %s: %w", dir, err)
		}
		vg, lv, ok := strings.Cut(strings.TrimSpace(string(out)), "/")
		if !ok {
			return nil, 0, fmt.Errorf("finding the logical volume of %s: lvs printed %q", dir, out)
		}
		return &lvmVolume{run: run, vg: vg, lv: lv, root: top, fstype: fsName(magic), size: lvmSize, mountBase: mountBase}, dev, nil
	}
	return nil, 0, notSnapshottable(dir, fsName(magic))
}

// ErrNotSnapshottable is wrapped by the refusal of a layout the engine
// cannot snapshot.
var ErrNotSnapshottable = fmt.Errorf("cannot take a filesystem snapshot")

func notSnapshottable(dir, what string) error {
	return fmt.Errorf("%w of %s: it is on %s; the snapshot engine needs Btrfs, LVM or ZFS: back this server up with --engine mariabackup (physical, streamed) or --engine logical", ErrNotSnapshottable, dir, what)
}

// sameMount says whether a and b are in one mount, hence on one
// filesystem, where a Btrfs snapshot of one can be made in the other.
// statfs cannot tell: Btrfs mixes each subvolume's id into its f_fsid.
func sameMount(a, b string) bool {
	var sa, sb unix.Statx_t
	if unix.Statx(unix.AT_FDCWD, a, 0, unix.STATX_MNT_ID, &sa) != nil || unix.Statx(unix.AT_FDCWD, b, 0, unix.STATX_MNT_ID, &sb) != nil {
		return false
	}
	return sa.Mask&sb.Mask&unix.STATX_MNT_ID != 0 && sa.Mnt_id == sb.Mnt_id
}

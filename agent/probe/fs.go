package probe

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Filesystem magic numbers (statfs f_type, linux/magic.h).
const (
	magicBtrfs = 0x9123683E
	magicXFS   = 0x58465342
	magicExt4  = 0xEF53 // ext2, ext3 and ext4 share it
	magicZFS   = 0x2FC12FC1
	magicTmpfs = 0x01021994
)

// fsName names a magic number for messages.
func fsName(m uint32) string {
	switch m {
	case magicBtrfs:
		return "btrfs"
	case magicXFS:
		return "xfs"
	case magicExt4:
		return "ext4"
	case magicZFS:
		return "zfs"
	case magicTmpfs:
		return "tmpfs"
	}
	return fmt.Sprintf("filesystem type %#x", m)
}

// probeFilesystem classifies the filesystem under the datadir. Btrfs and ZFS
// snapshot natively and win; any other filesystem on an LVM logical volume
// is reported as LVM, since LVM is then what takes the snapshot.
func probeFilesystem(ctx context.Context, s *state, c *v1.Capabilities) error {
	if s.Host == nil {
		return skipped("no host access")
	}
	if c.Datadir == "" {
		return skipped("datadir unknown")
	}
	st, err := s.Host.Statfs(c.Datadir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("datadir %s does not exist on this host (does the agent run on the server's host?): %w", c.Datadir, err)
		}
		return fmt.Errorf("statfs %s: %w", c.Datadir, err)
	}
	s.fs, s.fsOK = st, true
	switch st.Magic {
	case magicBtrfs:
		c.Filesystem = v1.Filesystem_FILESYSTEM_BTRFS
		return nil
	case magicZFS:
		c.Filesystem = v1.Filesystem_FILESYSTEM_ZFS
		return nil
	case magicXFS:
		c.Filesystem = v1.Filesystem_FILESYSTEM_XFS
	case magicExt4:
		c.Filesystem = v1.Filesystem_FILESYSTEM_EXT4
	default:
		c.Filesystem = v1.Filesystem_FILESYSTEM_OTHER
	}
	name, err := lvmVolume(ctx, s.Host, c.Datadir)
	if err != nil {
		// The filesystem is known; only the LVM question is open.
		return fmt.Errorf("%s on %s, LVM unknown: %w", c.Datadir, fsName(st.Magic), err)
	}
	if name != "" {
		s.lvmName = name
		c.Filesystem = v1.Filesystem_FILESYSTEM_LVM
	}
	return nil
}

// lvmVolume returns the device-mapper name of the LVM logical volume holding
// path, or "" when it is on something else. sysfs answers directly
// (/sys/dev/block/MAJ:MIN/dm/uuid starts with "LVM-" for a logical volume);
// where sysfs is not mounted (some containers), lsblk does.
func lvmVolume(ctx context.Context, h Host, path string) (string, error) {
	major, minor, err := h.Device(path)
	if err != nil {
		return "", err
	}
	if major == 0 {
		return "", nil // anonymous device: tmpfs, overlay, a btrfs subvolume
	}
	dev := fmt.Sprintf("%d:%d", major, minor)
	sys := "/sys/dev/block/" + dev
	uuid, err := h.ReadFile(sys + "/dm/uuid")
	if err == nil {
		if !strings.HasPrefix(strings.TrimSpace(string(uuid)), "LVM-") {
			return "", nil // device-mapper, but crypt or multipath
		}
		name, err := h.ReadFile(sys + "/dm/name")
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(name)), nil
	}
	if _, derr := h.ReadFile(sys + "/dev"); derr == nil {
		return "", nil // sysfs knows the device and it is not device-mapper
	}
	out, lerr := h.Run(ctx, "lsblk", "-rno", "MAJ:MIN,TYPE,NAME")
	if lerr != nil {
		return "", fmt.Errorf("device %s: sysfs: %w; lsblk: %w", dev, err, lerr)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == dev {
			if f[1] == "lvm" {
				return f[2], nil
			}
			return "", nil
		}
	}
	return "", fmt.Errorf("device %s: not in sysfs and not listed by lsblk", dev)
}

// vgOfDMName splits a device-mapper LVM name "vg-lv" into its volume group:
// dm doubles every '-' inside the VG and LV names, so the separator is the
// first single '-'.
func vgOfDMName(name string) (string, bool) {
	for i := 0; i < len(name); i++ {
		if name[i] != '-' {
			continue
		}
		if i+1 < len(name) && name[i+1] == '-' {
			i++ // an escaped '-'
			continue
		}
		return strings.ReplaceAll(name[:i], "--", "-"), true
	}
	return "", false
}

// probeFree records the space a snapshot could use: the free extents of the
// volume group for LVM, else what the filesystem has free (for Btrfs and ZFS
// the space their snapshots grow into; elsewhere just free space, which
// selection reads with the filesystem).
func probeFree(ctx context.Context, s *state, c *v1.Capabilities) error {
	if !s.fsOK {
		return skipped("filesystem unknown")
	}
	if s.lvmName == "" {
		c.SnapshotFreeBytes = s.fs.AvailBytes
		return nil
	}
	vg, ok := vgOfDMName(s.lvmName)
	if !ok {
		return fmt.Errorf("cannot tell the volume group from device-mapper name %q", s.lvmName)
	}
	out, err := s.Host.Run(ctx, "vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_free", vg)
	if err != nil {
		return fmt.Errorf("free extents of volume group %s: %w", vg, err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return fmt.Errorf("free extents of volume group %s: vgs printed %q", vg, strings.TrimSpace(string(out)))
	}
	c.SnapshotFreeBytes = n
	return nil
}

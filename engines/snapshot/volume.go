package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tidemark-backup/tidemark/engines"
)

// Runner runs the volume managers' commands (btrfs, lvcreate, mount, zfs,
// ...). Run returns the command's standard output; a command that fails
// returns an error that includes its standard error, so a message like
// "insufficient free space" reaches the user. Implementations must be safe
// for one goroutine at a time (the engine runs commands in sequence).
type Runner interface {
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// ExecRunner runs commands on this host.
type ExecRunner struct{}

// Run implements Runner with os/exec.
func (ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// volume is one snapshot-capable volume holding the server's files.
//
// Contract: create takes the snapshot name (atomic, while the server is
// locked: it must be fast); open makes it readable and returns the
// directory where the volume's Root() appears inside the snapshot (after
// the lock is released); drop undoes create and open, whichever happened,
// and is safe to call for a snapshot half made; leftovers lists the names
// of this volume's snapshots that start with prefix.
type volume interface {
	String() string
	Root() string
	create(ctx context.Context, name string) error
	open(ctx context.Context, name string) (string, error)
	drop(ctx context.Context, name string) error
	leftovers(ctx context.Context, prefix string) ([]string, error)
}

// SnapshotDirName is the directory at the top of a Btrfs subvolume that
// holds our read-only snapshots of it. It is never backed up.
const SnapshotDirName = ".tidemark-snapshots"

// btrfsVolume is a Btrfs subvolume; snapshots are read-only subvolumes in
// <root>/.tidemark-snapshots/<name>, or, when the datadir is the
// subvolume's top (where a directory would show as a database), in
// .tidemark-snapshots beside it on the same filesystem. A snapshot does
// not contain the subvolumes nested in its origin (they show as empty
// directories), so our own snapshots never appear inside the next one.
type btrfsVolume struct {
	run     Runner
	root    string // the subvolume's top directory
	snapDir string // where our snapshots go
}

func (v *btrfsVolume) String() string { return "Btrfs subvolume " + v.root }
func (v *btrfsVolume) Root() string   { return v.root }
func (v *btrfsVolume) dir() string    { return v.snapDir }

func (v *btrfsVolume) create(ctx context.Context, name string) error {
	err := os.MkdirAll(v.dir(), 0o700)
	if err != nil && !noSpace(err) {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err == nil {
		_, err = v.run.Run(ctx, "btrfs", "subvolume", "snapshot", "-r", v.root, filepath.Join(v.dir(), name))
	}
	if err != nil && noSpace(err) {
		// ENOSPC: the filesystem is full; EDQUOT: the subvolume holding
		// the snapshot directory is at its qgroup limit (the snapshot's
		// metadata is charged to it, not to the server's subvolume).
		return fmt.Errorf("%w: snapshot space exhausted: no room for a snapshot of %s in %s (%w); free space on the filesystem (or raise the qgroup limit of the subvolume holding %s), or use --engine mariabackup", engines.ErrCapability, v.root, v.dir(), err, v.dir())
	}
	return err
}

// noSpace tells a volume manager's "out of space" from its other failures:
// that one is a capability failure (engines.ErrCapability), which lets a
// backup with engine auto fall back to the next engine.
func noSpace(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	m := strings.ToLower(err.Error())
	for _, s := range []string{"no space left", "insufficient free space", "out of space", "no space", "quota exceeded"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// freeBytes is the space left on the Btrfs filesystem for new data (statfs
// f_bavail: unallocated space plus what data chunks have free), which is
// where the copy-on-write of every write made while a snapshot is held goes.
func (v *btrfsVolume) freeBytes() (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(v.root, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", v.root, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func (v *btrfsVolume) open(_ context.Context, name string) (string, error) {
	return filepath.Join(v.dir(), name), nil
}

func (v *btrfsVolume) drop(ctx context.Context, name string) error {
	p := filepath.Join(v.dir(), name)
	if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
		return nil // create failed before making it
	}
	_, err := v.run.Run(ctx, "btrfs", "subvolume", "delete", p)
	return err
}

func (v *btrfsVolume) leftovers(_ context.Context, prefix string) ([]string, error) {
	ents, err := os.ReadDir(v.dir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), prefix) && isBtrfsSubvolume(filepath.Join(v.dir(), e.Name())) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// lvmVolume is an LVM logical volume with a mounted filesystem. A
// snapshot is a copy-on-write LV (lvcreate --snapshot: LVM freezes the
// filesystem for it), mounted read-only under mountBase to be read.
type lvmVolume struct {
	run       Runner
	vg, lv    string
	root      string // where the origin LV is mounted
	fstype    string // xfs needs nouuid to mount a snapshot beside its origin
	size      string // the snapshot's copy-on-write space (lvcreate --size)
	mountBase string
}

func (v *lvmVolume) String() string {
	return fmt.Sprintf("LVM volume %s/%s (%s on %s)", v.vg, v.lv, v.fstype, v.root)
}
func (v *lvmVolume) Root() string { return v.root }

func (v *lvmVolume) create(ctx context.Context, name string) error {
	_, err := v.run.Run(ctx, "lvcreate", "--snapshot", "--size", v.size, "-n", name, v.vg+"/"+v.lv)
	if err != nil && noSpace(err) {
		return fmt.Errorf("%w: %w: the volume group %s has no room for a %s snapshot of %s; free space in it (vgextend, lvreduce of another volume) or use --engine mariabackup", engines.ErrCapability, err, v.vg, v.size, v.lv)
	}
	return err
}

func (v *lvmVolume) open(ctx context.Context, name string) (string, error) {
	dir := filepath.Join(v.mountBase, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("snapshot: %w", err)
	}
	opts := "ro"
	if v.fstype == "xfs" {
		opts += ",nouuid"
	}
	if _, err := v.run.Run(ctx, "mount", "-o", opts, "/dev/"+v.vg+"/"+name, dir); err != nil {
		return "", err
	}
	return dir, nil
}

func (v *lvmVolume) drop(ctx context.Context, name string) error {
	dir := filepath.Join(v.mountBase, name)
	var errs []error
	if _, err := os.Stat(dir); err == nil {
		if _, err := v.run.Run(ctx, "umount", dir); err != nil && !strings.Contains(err.Error(), "not mounted") {
			return err // lvremove of a mounted LV fails anyway; keep the LV for the next cleanup
		}
		if err := os.Remove(dir); err != nil {
			errs = append(errs, fmt.Errorf("snapshot: %w", err))
		}
	}
	out, err := v.run.Run(ctx, "lvs", "--noheadings", "-o", "lv_name", v.vg)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if hasField(out, name) {
		if _, err := v.run.Run(ctx, "lvremove", "-f", v.vg+"/"+name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (v *lvmVolume) leftovers(ctx context.Context, prefix string) ([]string, error) {
	out, err := v.run.Run(ctx, "lvs", "--noheadings", "-o", "lv_name", v.vg)
	if err != nil {
		return nil, err
	}
	return withPrefix(out, prefix), nil
}

// zfsVolume is a ZFS dataset; a snapshot DATASET@NAME is read through the
// dataset's .zfs/snapshot/NAME directory (mounted by ZFS on access).
type zfsVolume struct {
	run     Runner
	dataset string
	root    string // the dataset's mountpoint
}

func (v *zfsVolume) String() string { return "ZFS dataset " + v.dataset + " on " + v.root }
func (v *zfsVolume) Root() string   { return v.root }

func (v *zfsVolume) create(ctx context.Context, name string) error {
	_, err := v.run.Run(ctx, "zfs", "snapshot", v.dataset+"@"+name)
	if err != nil && noSpace(err) {
		return fmt.Errorf("%w: %w: the pool holding %s has no room for a snapshot; free space in it or use --engine mariabackup", engines.ErrCapability, err, v.dataset)
	}
	return err
}

func (v *zfsVolume) open(_ context.Context, name string) (string, error) {
	return filepath.Join(v.root, ".zfs", "snapshot", name), nil
}

func (v *zfsVolume) drop(ctx context.Context, name string) error {
	out, err := v.run.Run(ctx, "zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-d", "1", v.dataset)
	if err != nil {
		return err
	}
	if !hasField(out, v.dataset+"@"+name) {
		return nil
	}
	_, err = v.run.Run(ctx, "zfs", "destroy", v.dataset+"@"+name)
	return err
}

func (v *zfsVolume) leftovers(ctx context.Context, prefix string) ([]string, error) {
	out, err := v.run.Run(ctx, "zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-d", "1", v.dataset)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range withPrefix(out, v.dataset+"@"+prefix) {
		names = append(names, strings.TrimPrefix(n, v.dataset+"@"))
	}
	return names, nil
}

func fields(out []byte) []string { return strings.Fields(string(out)) }

func hasField(out []byte, s string) bool {
	for _, f := range fields(out) {
		if f == s {
			return true
		}
	}
	return false
}

func withPrefix(out []byte, prefix string) []string {
	var names []string
	for _, f := range fields(out) {
		if strings.HasPrefix(f, prefix) {
			names = append(names, f)
		}
	}
	return names
}

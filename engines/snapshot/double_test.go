package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// commandDouble is a test DOUBLE of the LVM, mount and ZFS commands: this
// machine has no volume group or pool to spare. It records every call
// (Calls) and emulates the effect the engine relies on: lvcreate adds a
// snapshot LV and takes its --size from the VG's free space (refusing, in
// LVM's words, when it does not fit); mount of a snapshot LV fills the
// mount point with a copy of the origin's files as they are at mount time
// (a real snapshot would show them as they were at lvcreate); umount
// empties it; lvremove refuses a mounted LV; zfs snapshot copies the
// dataset into <mountpoint>/.zfs/snapshot/NAME (refusing with "out of
// space" when the pool is full); zfs destroy removes it. Fail makes the
// next call whose command line starts with a prefix fail.
//
// What it cannot show: real LVM/ZFS semantics (copy-on-write, the
// filesystem freeze lvcreate does, snapshot overflow while it is read,
// mount options a real kernel refuses).
type commandDouble struct {
	mu      sync.Mutex
	calls   []string
	vgFree  int64             // bytes
	lvs     map[string]int64  // "vg/name" → size (origins 0)
	origins map[string]string // "vg/lv" → directory the origin is mounted on
	mounts  map[string]string // mount dir → "vg/name"
	pool    int64             // ZFS pool free bytes
	zsnaps  map[string]bool   // "ds@name"
	zroots  map[string]string // dataset → mountpoint
	fail    map[string]string // command-line prefix → stderr
}

func newDouble() *commandDouble {
	return &commandDouble{vgFree: 4 << 30, lvs: map[string]int64{}, origins: map[string]string{}, mounts: map[string]string{},
		pool: 1 << 30, zsnaps: map[string]bool{}, zroots: map[string]string{}, fail: map[string]string{}}
}

// Fail makes the next command whose line starts with prefix fail with msg.
func (d *commandDouble) Fail(prefix, msg string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail[prefix] = msg
}

// Calls returns the command lines run so far, with args joined by spaces.
func (d *commandDouble) Calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.calls...)
}

func (d *commandDouble) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	line := strings.Join(append([]string{name}, args...), " ")
	d.calls = append(d.calls, line)
	for p, msg := range d.fail {
		if strings.HasPrefix(line, p) {
			delete(d.fail, p)
			return nil, fmt.Errorf("%s: exit status 5: %s", line, msg)
		}
	}
	fail := func(msg string) ([]byte, error) { return nil, fmt.Errorf("%s: exit status 5: %s", line, msg) }
	switch name {
	case "lvcreate": // --snapshot --size S -n NAME VG/LV
		if len(args) != 6 || args[0] != "--snapshot" || args[1] != "--size" || args[3] != "-n" {
			return fail("double: unexpected lvcreate arguments")
		}
		size, err := parseSize(args[2])
		if err != nil {
			return fail(err.Error())
		}
		vg, _, _ := strings.Cut(args[5], "/")
		if _, ok := d.origins[args[5]]; !ok {
			return fail(fmt.Sprintf("Failed to find logical volume %q", args[5]))
		}
		if size > d.vgFree {
			return fail(fmt.Sprintf("Volume group %q has insufficient free space (%d extents): %d required.", vg, d.vgFree>>22, size>>22))
		}
		d.vgFree -= size
		d.lvs[vg+"/"+args[4]] = size
		return nil, nil
	case "lvs": // --noheadings -o lv_name VG
		vg := args[len(args)-1]
		var b strings.Builder
		for k := range d.origins {
			if v, lv, _ := strings.Cut(k, "/"); v == vg {
				fmt.Fprintf(&b, "  %s\n", lv)
			}
		}
		for k := range d.lvs {
			if v, lv, _ := strings.Cut(k, "/"); v == vg {
				fmt.Fprintf(&b, "  %s\n", lv)
			}
		}
		return []byte(b.String()), nil
	case "lvremove": // -f VG/NAME
		k := args[len(args)-1]
		if _, ok := d.lvs[k]; !ok {
			return fail(fmt.Sprintf("Failed to find logical volume %q", k))
		}
		for _, m := range d.mounts {
			if m == k {
				return fail(fmt.Sprintf("Logical volume %s contains a filesystem in use.", k))
			}
		}
		d.vgFree += d.lvs[k]
		delete(d.lvs, k)
		return nil, nil
	case "mount": // -o OPTS /dev/VG/NAME DIR
		if len(args) != 4 || args[0] != "-o" || !strings.HasPrefix(args[1], "ro") {
			return fail("double: mount must be read-only: " + line)
		}
		k := strings.TrimPrefix(args[2], "/dev/")
		if _, ok := d.lvs[k]; !ok {
			return fail("special device " + args[2] + " does not exist")
		}
		origin := ""
		for o, dir := range d.origins {
			if strings.HasPrefix(k, strings.Split(o, "/")[0]+"/") {
				origin = dir
			}
		}
		if err := copyDir(origin, args[3], ""); err != nil {
			return fail(err.Error())
		}
		d.mounts[args[3]] = k
		return nil, nil
	case "umount":
		dir := args[len(args)-1]
		if _, ok := d.mounts[dir]; !ok {
			return fail("umount: " + dir + ": not mounted.")
		}
		if err := emptyDir(dir); err != nil {
			return fail(err.Error())
		}
		delete(d.mounts, dir)
		return nil, nil
	case "zfs":
		switch args[0] {
		case "snapshot": // DS@NAME
			ds, _, _ := strings.Cut(args[1], "@")
			root, ok := d.zroots[ds]
			if !ok {
				return fail(fmt.Sprintf("cannot open '%s': dataset does not exist", ds))
			}
			if d.pool <= 0 {
				return fail(fmt.Sprintf("cannot create snapshot '%s': out of space", args[1]))
			}
			_, snap, _ := strings.Cut(args[1], "@")
			if err := copyDir(root, filepath.Join(root, ".zfs", "snapshot", snap), ".zfs"); err != nil {
				return fail(err.Error())
			}
			d.zsnaps[args[1]] = true
			return nil, nil
		case "list": // -H -t snapshot -o name -d 1 DS
			ds := args[len(args)-1]
			var b strings.Builder
			for s := range d.zsnaps {
				if strings.HasPrefix(s, ds+"@") {
					fmt.Fprintln(&b, s)
				}
			}
			return []byte(b.String()), nil
		case "destroy": // DS@NAME
			if !d.zsnaps[args[1]] {
				return fail(fmt.Sprintf("could not find any snapshots to destroy; check snapshot names: %s", args[1]))
			}
			ds, snap, _ := strings.Cut(args[1], "@")
			_ = os.RemoveAll(filepath.Join(d.zroots[ds], ".zfs", "snapshot", snap))
			delete(d.zsnaps, args[1])
			return nil, nil
		}
	}
	return fail("double: command not emulated")
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("double: size %q", s)
	}
	return n * mult, nil
}

// copyDir copies src into dst (cp -a), leaving out the top-level entry
// named except.
func copyDir(src, dst, except string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name() == except || e.Type()&os.ModeSocket != 0 {
			continue
		}
		if out, err := exec.Command("cp", "-a", filepath.Join(src, e.Name()), dst+"/").CombinedOutput(); err != nil {
			return fmt.Errorf("cp: %w: %s", err, out)
		}
	}
	return nil
}

func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}

package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// withVolume makes e find v (behind the double) under every directory.
func withVolume(e *Engine, v volume) {
	e.locate = func(context.Context, Runner, string, string, string) (volume, uint64, error) { return v, 1, nil }
}

// lvmCalls keeps the lines of the commands that change something (lvs
// only reads).
func changing(calls []string) []string {
	var out []string
	for _, c := range calls {
		if !strings.HasPrefix(c, "lvs ") && !strings.HasPrefix(c, "zfs list") {
			out = append(out, c)
		}
	}
	return out
}

// TestLVMAndZFSThroughDouble drives the LVM and ZFS paths of a real backup
// (real MariaDB, real lock, real copy) through the command double: the
// commands run in order, a failure at every step leaves no snapshot, no
// mount and no mount directory behind, a full volume group or pool is a
// clear error, and leftovers are removed only when they carry our tag.
func TestLVMAndZFSThroughDouble(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "snap-double"})
	src.Exec(t, "CREATE DATABASE d", "USE d", "CREATE TABLE d.t (id INT PRIMARY KEY, v INT)", "INSERT INTO d.t SELECT seq, seq FROM test.seq_1_to_1000")
	r, _ := newRepo(t)

	lvm := func(t *testing.T) (*Engine, *commandDouble, *lvmVolume) {
		d := newDouble()
		d.origins["vg0/mysql"] = src.DataDir
		state := t.TempDir()
		e := &Engine{Runner: d, StateDir: state, Owner: "inst1"}
		v := &lvmVolume{run: d, vg: "vg0", lv: "mysql", root: src.DataDir, fstype: "xfs", size: "1G", mountBase: filepath.Join(state, "mnt")}
		withVolume(e, v)
		return e, d, v
	}
	nothingLeft := func(t *testing.T, d *commandDouble, v *lvmVolume) {
		t.Helper()
		if len(d.lvs) != 0 || len(d.mounts) != 0 {
			t.Errorf("left behind: LVs %v, mounts %v", d.lvs, d.mounts)
		}
		if ents, _ := os.ReadDir(v.mountBase); len(ents) != 0 {
			t.Errorf("mount directories left: %d", len(ents))
		}
	}

	t.Run("lvm order", func(t *testing.T) {
		e, d, v := lvm(t)
		m, _, err := backup(t, r, e, src.DSN)
		if err != nil {
			t.Fatal(err)
		}
		got := changing(d.Calls())
		if len(got) != 4 {
			t.Fatalf("commands %q", got)
		}
		name := strings.Fields(got[0])[5]
		dir := filepath.Join(v.mountBase, name)
		want := []string{
			"lvcreate --snapshot --size 1G -n " + name + " vg0/mysql",
			"mount -o ro,nouuid /dev/vg0/" + name + " " + dir, // xfs: nouuid
			"umount " + dir,
			"lvremove -f vg0/" + name,
		}
		if !slices.Equal(got, want) || !strings.HasPrefix(name, "tidemark-inst1-") {
			t.Errorf("commands\n%q\nwant\n%q", got, want)
		}
		found := false
		for _, s := range m.Streams {
			found = found || strings.HasSuffix(s.Name, "/d/t.ibd")
		}
		if !found {
			t.Error("the table's file is not in the backup")
		}
		nothingLeft(t, d, v)
	})

	t.Run("lvm failures", func(t *testing.T) {
		for _, step := range []string{"lvcreate", "mount", "umount"} {
			e, d, v := lvm(t)
			d.Fail(step, "injected failure of "+step)
			_, res, err := backup(t, r, e, src.DSN)
			switch {
			case step == "umount":
				// The backup is complete; dropping its snapshot is not
				// part of it: a warning.
				if err != nil || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "injected failure of umount") {
					t.Errorf("umount failing: %v, warnings %v", err, res)
				}
			case err == nil || !strings.Contains(err.Error(), "injected failure of "+step):
				t.Errorf("%s failing: %v", step, err)
			}
			if step == "umount" {
				// The snapshot stays mounted; the next backup removes it.
				if len(d.lvs) != 1 {
					t.Errorf("umount failing: LVs %v", d.lvs)
				}
				if _, res, err := backup(t, r, e, src.DSN); err != nil || len(res.Warnings) == 0 || !strings.Contains(res.Warnings[0], "interrupted") {
					t.Errorf("the next backup: %v, warnings %v", err, res)
				}
			}
			nothingLeft(t, d, v)
		}
	})

	t.Run("lvm no space", func(t *testing.T) {
		e, d, v := lvm(t)
		d.vgFree = 100 << 20
		_, _, err := backup(t, r, e, src.DSN)
		if !errors.Is(err, engines.ErrCapability) || !strings.Contains(err.Error(), "insufficient free space") || !strings.Contains(err.Error(), "volume group vg0") || !strings.Contains(err.Error(), "mariabackup") {
			t.Errorf("full VG: %v", err)
		}
		nothingLeft(t, d, v)
	})

	t.Run("lvm leftovers", func(t *testing.T) {
		e, d, v := lvm(t)
		d.lvs["vg0/tidemark-inst1-20200101T000000_000Z"] = 1 << 30 // a killed run's
		d.lvs["vg0/tidemark-other-20200101T000000_000Z"] = 1 << 30 // another instance's
		d.lvs["vg0/nightly"] = 1 << 30                             // not ours at all
		res, err := e.Cleanup(context.Background(), src.DSN)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Removed, []string{"tidemark-inst1-20200101T000000_000Z"}) {
			t.Errorf("removed %v", res.Removed)
		}
		if len(d.lvs) != 2 {
			t.Errorf("LVs after cleanup %v: only ours may go", d.lvs)
		}
		_ = v
		// While a backup holds the instance, Cleanup touches nothing.
		lk, err := e.instanceLock(&layout{tag: "inst1"})
		if err != nil {
			t.Fatal(err)
		}
		d.lvs["vg0/tidemark-inst1-20200101T000001_000Z"] = 1 << 30
		res, err = e.Cleanup(context.Background(), src.DSN)
		if err != nil || !res.Busy || len(res.Removed) != 0 || len(d.lvs) != 3 {
			t.Errorf("cleanup during a backup: %+v %v, LVs %v", res, err, d.lvs)
		}
		_ = lk.Close()
	})

	t.Run("no snapshots under the datadir", func(t *testing.T) {
		var sfs unix.Statfs_t
		if err := unix.Statfs(src.DataDir, &sfs); err != nil {
			t.Fatal(err)
		}
		if m := int64(sfs.Type); m == magicBtrfs || m == magicZFS { //nolint:unconvert // int32 on some platforms
			t.Skipf("the test datadir is on %s", fsName(m))
		}
		_, _, err := backup(t, r, &Engine{StateDir: t.TempDir()}, src.DSN)
		if !errors.Is(err, ErrNotSnapshottable) || !strings.Contains(err.Error(), "--engine mariabackup") {
			t.Errorf("datadir on %s: %v", fsName(int64(sfs.Type)), err) //nolint:unconvert // as above
		}
	})

	zfs := func(t *testing.T) (*Engine, *commandDouble) {
		d := newDouble()
		d.zroots["tank/mysql"] = src.DataDir
		e := &Engine{Runner: d, StateDir: t.TempDir(), Owner: "inst1"}
		withVolume(e, &zfsVolume{run: d, dataset: "tank/mysql", root: src.DataDir})
		t.Cleanup(func() { _ = os.RemoveAll(filepath.Join(src.DataDir, ".zfs")) })
		return e, d
	}
	t.Run("zfs order", func(t *testing.T) {
		e, d := zfs(t)
		m, _, err := backup(t, r, e, src.DSN)
		if err != nil {
			t.Fatal(err)
		}
		got := changing(d.Calls())
		if len(got) != 2 || !strings.HasPrefix(got[0], "zfs snapshot tank/mysql@tidemark-inst1-") || got[1] != "zfs destroy "+strings.Fields(got[0])[2] {
			t.Errorf("commands %q", got)
		}
		for _, s := range m.Streams {
			if strings.Contains(s.Name, ".zfs") {
				t.Errorf("stored ZFS's snapshot directory: %s", s.Name)
			}
		}
		if len(d.zsnaps) != 0 {
			t.Errorf("snapshots left: %v", d.zsnaps)
		}
	})
	t.Run("zfs no space", func(t *testing.T) {
		e, d := zfs(t)
		d.pool = 0
		_, _, err := backup(t, r, e, src.DSN)
		if !errors.Is(err, engines.ErrCapability) || !strings.Contains(err.Error(), "out of space") || !strings.Contains(err.Error(), "pool holding tank/mysql") {
			t.Errorf("full pool: %v", err)
		}
		if len(d.zsnaps) != 0 {
			t.Errorf("snapshots left: %v", d.zsnaps)
		}
	})
}

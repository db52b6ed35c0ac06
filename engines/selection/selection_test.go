package selection

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const (
	mib = uint64(1) << 20
	gib = uint64(1) << 30
)

// mariadbBtrfs is a MariaDB 10.11 on a Btrfs subvolume with room to spare
// and a matching mariabackup: every engine but clone can run.
func mariadbBtrfs() *v1.Capabilities {
	return &v1.Capabilities{
		Flavor: "mariadb", Version: "10.11.6", Edition: "community", BinlogEnabled: true, BinlogFormat: "ROW", GtidMode: "ON",
		Datadir: "/var/lib/mysql", Filesystem: v1.Filesystem_FILESYSTEM_BTRFS, SnapshotFreeBytes: 41 * gib, DataBytes: 12 * gib,
		StorageReachable: true, SelectionProbed: true, BackupTool: "mariabackup", BackupToolVersion: "10.11.19",
	}
}

// mysql8 is a MySQL 8.0.36 on ext4 with clone ready and xtrabackup 8.0.
func mysql8() *v1.Capabilities {
	return &v1.Capabilities{
		Flavor: "mysql", Version: "8.0.36", Edition: "community", Plugins: []string{"clone"}, BinlogEnabled: true, BinlogFormat: "ROW", GtidMode: "ON",
		Datadir: "/var/lib/mysql", Filesystem: v1.Filesystem_FILESYSTEM_EXT4, SnapshotFreeBytes: 100 * gib, DataBytes: 500 * gib,
		StorageReachable: true, SelectionProbed: true, BackupAdmin: true, BackupTool: "xtrabackup", BackupToolVersion: "8.0.35-30",
	}
}

func with(c *v1.Capabilities, f func(*v1.Capabilities)) *v1.Capabilities {
	c = proto.Clone(c).(*v1.Capabilities)
	f(c)
	return c
}

type want struct {
	engine string
	ok     bool
	reason string // substring of the verdict's reason
}

func TestDecide(t *testing.T) {
	cases := []struct {
		name string
		caps *v1.Capabilities
		pref Preferences
		want []want // in order; engines not listed are not checked
		note string // substring of one note
	}{
		{"mariadb on btrfs: snapshot first", mariadbBtrfs(), Preferences{}, []want{
			{Snapshot, true, "snapshot: datadir on a btrfs subvolume /var/lib/mysql, 41 GiB free for a 12 GiB instance"},
			{MariaBackup, true, "mariabackup 10.11.19 matches MariaDB 10.11.6"},
			{Logical, true, "restores onto any version or flavor"},
			{Clone, false, "clone: server is MariaDB 10.11, clone needs MySQL ≥ 8.0.17"},
		}, ""},
		{"mariadb on ext4: mariabackup", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.Filesystem = v1.Filesystem_FILESYSTEM_EXT4 }), Preferences{}, []want{
			{MariaBackup, true, "mariabackup"}, {Logical, true, ""},
			{Snapshot, false, "datadir /var/lib/mysql is on ext4, not on Btrfs, LVM or ZFS"},
			{Clone, false, "MariaDB 10.11"},
		}, ""},
		{"mariadb on xfs", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.Filesystem = v1.Filesystem_FILESYSTEM_XFS }), Preferences{}, []want{
			{MariaBackup, true, ""}, {Logical, true, ""}, {Snapshot, false, "is on xfs"},
		}, ""},
		{"mariadb on tmpfs", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.Filesystem = v1.Filesystem_FILESYSTEM_OTHER }), Preferences{}, []want{
			{MariaBackup, true, ""}, {Logical, true, ""}, {Snapshot, false, "no snapshots (tmpfs"},
		}, ""},
		{"filesystem unknown", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.Filesystem = v1.Filesystem_FILESYSTEM_UNSPECIFIED }), Preferences{}, []want{
			{MariaBackup, true, ""}, {Logical, true, ""}, {Snapshot, false, "filesystem is unknown"},
		}, ""},
		{"mariadb on lvm", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.Filesystem = v1.Filesystem_FILESYSTEM_LVM }), Preferences{}, []want{
			{Snapshot, true, "datadir on an LVM logical volume /var/lib/mysql"},
		}, ""},
		{"mysql on zfs: snapshot before clone", with(mysql8(), func(c *v1.Capabilities) { c.Filesystem = v1.Filesystem_FILESYSTEM_ZFS }), Preferences{}, []want{
			{Snapshot, true, "a ZFS dataset"}, {Clone, true, "clone plugin ACTIVE"}, {MariaBackup, true, "xtrabackup 8.0.35-30 matches MySQL 8.0.36"}, {Logical, true, ""},
		}, ""},
		{"snapshot space short", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.SnapshotFreeBytes = 100 * mib }), Preferences{}, []want{
			{MariaBackup, true, ""}, {Logical, true, ""},
			{Snapshot, false, "100 MiB free for a 12 GiB instance (needs 1.2 GiB"},
		}, ""},
		{"snapshot space small instance needs the floor", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.SnapshotFreeBytes = 10 * mib; c.DataBytes = 50 * mib }), Preferences{}, []want{
			{MariaBackup, true, ""}, {Logical, true, ""}, {Snapshot, false, "needs 64 MiB"},
		}, ""},
		{"redo on another filesystem", with(mariadbBtrfs(), func(c *v1.Capabilities) {
			c.Volumes = []*v1.EngineVolume{{Role: "redo", Path: "/redo", Filesystem: v1.Filesystem_FILESYSTEM_EXT4}}
		}), Preferences{}, []want{{MariaBackup, true, ""}, {Logical, true, ""}, {Snapshot, false, "the redo directory /redo is on ext4, apart from the datadir"}}, ""},
		{"binlog on another btrfs volume", with(mariadbBtrfs(), func(c *v1.Capabilities) {
			c.Volumes = []*v1.EngineVolume{{Role: "binlog", Path: "/binlog", Filesystem: v1.Filesystem_FILESYSTEM_BTRFS}}
		}), Preferences{}, []want{{MariaBackup, true, ""}, {Logical, true, ""}, {Snapshot, false, "binlog directory /binlog is on another volume"}}, ""},
		{"binlog beside datadir", with(mariadbBtrfs(), func(c *v1.Capabilities) {
			c.Volumes = []*v1.EngineVolume{{Role: "binlog", Path: "/var/lib/mysql", Filesystem: v1.Filesystem_FILESYSTEM_BTRFS, SameAsDatadir: true}}
		}), Preferences{}, []want{{Snapshot, true, ""}}, ""},
		{"mariabackup missing", with(mariadbBtrfs(), func(c *v1.Capabilities) {
			c.Filesystem = v1.Filesystem_FILESYSTEM_EXT4
			c.BackupTool, c.BackupToolVersion, c.BackupToolError = "", "", "mariabackup not found in PATH; install mariadb-backup"
		}), Preferences{}, []want{{Logical, true, ""}, {Snapshot, false, ""}, {Clone, false, ""}, {MariaBackup, false, "mariabackup is not installed on the agent's host: mariabackup not found in PATH; install mariadb-backup"}}, ""},
		{"mariabackup wrong series", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.Filesystem = v1.Filesystem_FILESYSTEM_EXT4; c.BackupToolVersion = "11.4.2" }), Preferences{}, []want{
			{Logical, true, ""}, {MariaBackup, false, "mariabackup 11.4.2 cannot back up MariaDB 10.11.6: the tool must be of the server's series 10.11"},
		}, ""},
		{"mariabackup broken", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.BackupToolError = "--version failed: exit status 1" }), Preferences{}, []want{
			{Snapshot, true, ""}, {Logical, true, ""}, {MariaBackup, false, "is unusable: --version failed"},
		}, ""},
		{"mariabackup version unreadable", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.BackupToolVersion = "weird" }), Preferences{}, []want{
			{Snapshot, true, ""}, {Logical, true, ""}, {MariaBackup, false, `version of mariabackup ("weird") is unknown`},
		}, ""},
		{"old agent: tools not reported", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.SelectionProbed = false }), Preferences{}, []want{
			{Snapshot, true, ""}, {Logical, true, ""}, {MariaBackup, false, "did not report whether mariabackup is installed"},
		}, ""},
		{"mysql on ext4: clone first", mysql8(), Preferences{}, []want{
			{Clone, true, "clone: MySQL 8.0.36 with the clone plugin ACTIVE and BACKUP_ADMIN granted"}, {MariaBackup, true, ""}, {Logical, true, ""}, {Snapshot, false, "ext4"},
		}, ""},
		{"mysql 8.0.16 too old for clone", with(mysql8(), func(c *v1.Capabilities) { c.Version = "8.0.16"; c.BackupToolVersion = "8.0.16-7" }), Preferences{}, []want{
			{MariaBackup, true, ""}, {Logical, true, ""}, {Clone, false, "clone: server is MySQL 8.0.16, clone needs MySQL ≥ 8.0.17"},
		}, ""},
		{"mysql 5.7", with(mysql8(), func(c *v1.Capabilities) { c.Version = "5.7.44"; c.Plugins = nil; c.BackupToolVersion = "2.4.29" }), Preferences{}, []want{
			{Logical, true, ""}, {Clone, false, "server is MySQL 5.7.44"}, {MariaBackup, false, "xtrabackup 2.4.29 cannot back up MySQL 5.7.44"},
		}, ""},
		{"mysql 8.4 with xtrabackup 8.0", with(mysql8(), func(c *v1.Capabilities) { c.Version = "8.4.3" }), Preferences{}, []want{
			{Clone, true, "8.4.3"}, {Logical, true, ""}, {MariaBackup, false, "series 8.4"},
		}, ""},
		{"clone plugin not active", with(mysql8(), func(c *v1.Capabilities) { c.Plugins = []string{"rocksdb"} }), Preferences{}, []want{
			{MariaBackup, true, ""}, {Logical, true, ""}, {Clone, false, "clone plugin is not ACTIVE on MySQL 8.0.36; install it with INSTALL PLUGIN clone"},
		}, ""},
		{"no BACKUP_ADMIN", with(mysql8(), func(c *v1.Capabilities) { c.BackupAdmin = false }), Preferences{}, []want{
			{MariaBackup, true, ""}, {Logical, true, ""}, {Clone, false, "lacks BACKUP_ADMIN; GRANT BACKUP_ADMIN"},
		}, ""},
		{"percona 8.0 clone", with(mysql8(), func(c *v1.Capabilities) { c.Flavor = "percona" }), Preferences{}, []want{
			{Clone, true, "Percona Server 8.0.36"},
		}, ""},
		{"xtrabackup missing on mysql", with(mysql8(), func(c *v1.Capabilities) { c.BackupTool, c.BackupToolVersion = "", "" }), Preferences{}, []want{
			{Clone, true, ""}, {Logical, true, ""}, {MariaBackup, false, "xtrabackup is not installed on the agent's host: install it next to the server"},
		}, ""},
		{"portable: logical first, physical refused", mariadbBtrfs(), Preferences{Portable: true}, []want{
			{Logical, true, "restores onto any version or flavor; dumps 12 GiB row by row with a brief global lock to read the coordinates; ranked first: portable: only a logical backup restores onto another version or flavor"},
			{Snapshot, false, "snapshot: portable: only a logical backup restores onto another version or flavor (a physical copy restores only onto MariaDB 10.11)"},
			{Clone, false, "clone needs MySQL"},
			{MariaBackup, false, "portable"},
		}, ""},
		{"portable mysql", mysql8(), Preferences{Portable: true}, []want{{Logical, true, ""}, {Snapshot, false, ""}, {Clone, false, "portable"}, {MariaBackup, false, "portable"}}, ""},
		{"small instance: logical first", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.DataBytes = 200 * mib }), Preferences{SmallBytes: gib}, []want{
			{Logical, true, "ranked first: 200 MiB of data is under the 1 GiB small-instance threshold"}, {Snapshot, true, ""}, {MariaBackup, true, ""},
		}, ""},
		{"large instance: threshold does not apply", mariadbBtrfs(), Preferences{SmallBytes: gib}, []want{{Snapshot, true, ""}, {MariaBackup, true, ""}, {Logical, true, ""}}, ""},
		{"preference list order", mariadbBtrfs(), Preferences{Engines: []string{"logical", "snapshot"}}, []want{
			{Logical, true, ""}, {Snapshot, true, ""}, {Clone, false, "not in the preferred engines (logical, snapshot)"}, {MariaBackup, false, "not in the preferred engines"},
		}, ""},
		{"forced clone on mariadb", mariadbBtrfs(), Preferences{Engines: []string{"clone"}}, []want{
			{Clone, false, "server is MariaDB 10.11"}, {Snapshot, false, "not in the preferred"},
		}, ""},
		{"auto in a list is all", mariadbBtrfs(), Preferences{Engines: []string{"auto"}}, []want{{Snapshot, true, ""}, {MariaBackup, true, ""}}, ""},
		{"not built in", mariadbBtrfs(), Preferences{Available: []string{"logical", "mariabackup"}}, []want{
			{MariaBackup, true, ""}, {Logical, true, ""}, {Snapshot, false, "snapshot: not built into this tidemark (it has logical, mariabackup)"},
		}, ""},
		{"never probed", &v1.Capabilities{}, Preferences{}, []want{
			{Snapshot, false, "has not reported this server's capabilities"}, {Clone, false, ""}, {MariaBackup, false, ""}, {Logical, false, "logical: the agent has not reported"},
		}, ""},
		{"replica: logical reason says so", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.IsReplica = true; c.Filesystem = v1.Filesystem_FILESYSTEM_EXT4 }), Preferences{}, []want{
			{MariaBackup, true, ""}, {Logical, true, "a brief global lock on this replica"},
		}, ""},
		{"binlog off note", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.BinlogEnabled = false }), Preferences{}, []want{{Snapshot, true, ""}}, "binary log off"},
		{"statement binlog note", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.BinlogFormat = "STATEMENT" }), Preferences{}, []want{{Snapshot, true, ""}}, "binlog_format STATEMENT"},
		{"mysql gtid off note", with(mysql8(), func(c *v1.Capabilities) { c.GtidMode = "OFF" }), Preferences{}, []want{{Clone, true, ""}}, "gtid_mode OFF"},
		{"storage relayed note", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.StorageReachable = false; c.StorageError = "dial tcp: i/o timeout" }), Preferences{}, []want{{Snapshot, true, ""}}, "storage: dial tcp: i/o timeout; backups are relayed"},
		{"unknown data size", with(mariadbBtrfs(), func(c *v1.Capabilities) { c.DataBytes = 0; c.Filesystem = v1.Filesystem_FILESYSTEM_EXT4 }), Preferences{SmallBytes: gib}, []want{
			{MariaBackup, true, ""}, {Logical, true, "of unknown size"},
		}, ""},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d capability sets; the issue asks for at least 30", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Decide(tc.caps, tc.pref)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Verdicts) != len(Known) {
				t.Fatalf("%d verdicts, want one per engine (%d): %+v", len(d.Verdicts), len(Known), d.Verdicts)
			}
			// Each listed engine's verdict, wherever it is; the usable ones
			// listed must come in this order, the first being the choice.
			pos := map[string]int{}
			for i, v := range d.Verdicts {
				pos[v.Engine] = i
				if !strings.HasPrefix(v.Reason, v.Engine+": ") {
					t.Errorf("reason %q does not start with its engine's name", v.Reason)
				}
			}
			last, first := -1, ""
			for _, w := range tc.want {
				v, _ := d.Verdict(w.engine)
				if v.OK != w.ok || !strings.Contains(v.Reason, w.reason) {
					t.Errorf("%s = %+v; want ok=%v reason containing %q", w.engine, v, w.ok, w.reason)
				}
				if !w.ok {
					continue
				}
				if first == "" {
					first = w.engine
				}
				if pos[w.engine] < last {
					t.Errorf("%s ranked before an engine listed above it: %+v", w.engine, d.Verdicts)
				}
				last = pos[w.engine]
			}
			if d.Chosen() != first {
				t.Errorf("chosen %q, want %q: %+v", d.Chosen(), first, d.Verdicts)
			}
			if tc.note != "" && !strings.Contains(strings.Join(d.Notes, "\n"), tc.note) {
				t.Errorf("notes %q lack %q", d.Notes, tc.note)
			}
			// Usable verdicts precede refused ones unless a preference list
			// orders them.
			if len(tc.pref.Engines) == 0 || tc.pref.Engines[0] == "auto" {
				seenRefused := false
				for _, v := range d.Verdicts {
					if !v.OK {
						seenRefused = true
					} else if seenRefused {
						t.Errorf("usable %s after a refused engine: %+v", v.Engine, d.Verdicts)
					}
				}
			}
		})
	}
}

func TestUnknownEngine(t *testing.T) {
	_, err := Decide(mariadbBtrfs(), Preferences{Engines: []string{"snapshot", "xtrabackupp"}})
	if !errors.Is(err, ErrUnknownEngine) || !strings.Contains(err.Error(), `"xtrabackupp": use auto or one of snapshot, clone, mariabackup, logical`) {
		t.Fatalf("err = %v", err)
	}
}

func TestChooseNoUsable(t *testing.T) {
	d, err := Decide(mariadbBtrfs(), Preferences{Engines: []string{"clone"}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = d.Choose()
	if !errors.Is(err, ErrNoUsableEngine) || !strings.Contains(err.Error(), "clone: server is MariaDB 10.11, clone needs MySQL ≥ 8.0.17") {
		t.Fatalf("err = %v", err)
	}
	d, _ = Decide(mariadbBtrfs(), Preferences{})
	v, rest, err := d.Choose()
	if err != nil || v.Engine != Snapshot || strings.Join(rest, ",") != "mariabackup,logical" {
		t.Fatalf("Choose = %+v %v %v", v, rest, err)
	}
}

func TestChange(t *testing.T) {
	before, _ := Decide(mariadbBtrfs(), Preferences{})
	after, _ := Decide(with(mariadbBtrfs(), func(c *v1.Capabilities) { c.Filesystem = v1.Filesystem_FILESYSTEM_EXT4 }), Preferences{})
	if ch := Change(nil, before.Proto()); ch != nil {
		t.Fatalf("first decision is a change: %v", ch)
	}
	if ch := Change(before.Proto(), before.Proto()); ch != nil {
		t.Fatalf("same decision is a change: %v", ch)
	}
	ch := Change(before.Proto(), after.Proto())
	if ch.GetOldEngine() != Snapshot || ch.GetNewEngine() != MariaBackup || !strings.Contains(ch.GetOldReason(), "is on ext4") || !strings.Contains(ch.GetNewReason(), "mariabackup 10.11.19") {
		t.Fatalf("change = %v", ch)
	}
	if got := FromProto(after.Proto()); got.Chosen() != MariaBackup || len(got.Verdicts) != 4 {
		t.Fatalf("round trip: %+v", got)
	}
}

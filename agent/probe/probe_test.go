package probe

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// answer is one captured reply to a query or a command.
type answer struct {
	rows []Row
	out  string
	err  error
}

// fakeQuerier replays captured query results; a query it was not given is
// an error, so a probe that changes its SQL fails its test.
type fakeQuerier map[string]answer

func (f fakeQuerier) Query(_ context.Context, q string) ([]Row, error) {
	for k, a := range f {
		if strings.HasPrefix(q, k) {
			return a.rows, a.err
		}
	}
	return nil, fmt.Errorf("unexpected query %q", q)
}

// fakeHost replays captured statfs results, sysfs files and command output.
type fakeHost struct {
	statfs map[string]FS
	dev    map[string][2]uint32
	files  map[string]string
	cmds   map[string]answer // "name arg arg"
}

func (h fakeHost) Statfs(p string) (FS, error) {
	if st, ok := h.statfs[p]; ok {
		return st, nil
	}
	return FS{}, fmt.Errorf("statfs %s: %w", p, fs.ErrNotExist)
}

func (h fakeHost) Device(p string) (uint32, uint32, error) {
	if d, ok := h.dev[p]; ok {
		return d[0], d[1], nil
	}
	return 0, 0, fmt.Errorf("stat %s: %w", p, fs.ErrNotExist)
}

func (h fakeHost) ReadFile(p string) ([]byte, error) {
	if s, ok := h.files[p]; ok {
		return []byte(s), nil
	}
	return nil, fmt.Errorf("open %s: %w", p, fs.ErrNotExist)
}

func (h fakeHost) Run(_ context.Context, name string, args ...string) ([]byte, error) {
	k := strings.Join(append([]string{name}, args...), " ")
	a, ok := h.cmds[k]
	if !ok {
		return nil, fmt.Errorf("%s: executable file not found in $PATH", name)
	}
	return []byte(a.out), a.err
}

func rows(rs ...Row) answer { return answer{rows: rs} }

var (
	mysql80 = &v1.ServerInfo{Flavor: "mysql", Version: "8.0.36"}
	maria   = &v1.ServerInfo{Flavor: "mariadb", Version: "10.11.6-MariaDB-0+deb12u1"}
)

const (
	qVersion = "SELECT VERSION()"
	qUUID    = "SELECT @@server_uuid"
)

func TestProbeServer(t *testing.T) {
	cases := []struct {
		name                      string
		version, comment          string
		flavor, ver, edition, err string
	}{
		{name: "mysql community", version: "8.0.36", comment: "MySQL Community Server - GPL", flavor: "mysql", ver: "8.0.36", edition: "community"},
		{name: "mysql enterprise", version: "8.0.36-commercial", comment: "MySQL Enterprise Server - Commercial", flavor: "mysql", ver: "8.0.36", edition: "enterprise"},
		{name: "percona", version: "8.0.35-27", comment: "Percona Server (GPL), Release '27', Revision '2f8eeab2'", flavor: "percona", ver: "8.0.35", edition: "community"},
		{name: "mariadb debian", version: "10.11.6-MariaDB-0+deb12u1-log", comment: "Debian 12", flavor: "mariadb", ver: "10.11.6", edition: "community"},
		{name: "mariadb enterprise", version: "10.6.16-11-MariaDB-enterprise-log", comment: "MariaDB Enterprise Server", flavor: "mariadb", ver: "10.6.16", edition: "enterprise"},
		{name: "mariadb through a proxy", version: "5.5.5-10.5.23-MariaDB", comment: "mariadb.org binary distribution", flavor: "mariadb", ver: "10.5.23", edition: "community"},
		{name: "empty version", version: "", err: "empty version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := fakeQuerier{
				qVersion: rows(Row{"version": tc.version, "comment": tc.comment, "hostname": "db1", "server_id": "7"}),
				qUUID:    rows(Row{"uuid": "3e11fa47-71ca-11e1-9e33-c80aa9429562"}),
			}
			s := &state{Deps: Deps{Querier: q}}
			var c v1.Capabilities
			err := probeServer(context.Background(), s, &c)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Flavor != tc.flavor || c.Version != tc.ver || c.Edition != tc.edition {
				t.Fatalf("got %s %s %s, want %s %s %s", c.Flavor, c.Version, c.Edition, tc.flavor, tc.ver, tc.edition)
			}
			if s.server.Hostname != "db1" || s.server.ServerId != 7 || s.server.Version != tc.version {
				t.Fatalf("server info %v", s.server)
			}
			if (s.server.ServerUuid != "") == (tc.flavor == "mariadb") {
				t.Fatalf("server uuid %q for %s", s.server.ServerUuid, tc.flavor)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		s := &state{Deps: Deps{Querier: fakeQuerier{qVersion: {err: errors.New("dial tcp 127.0.0.1:1: connection refused")}}}}
		if err := probeServer(context.Background(), s, &v1.Capabilities{}); err == nil || s.server != nil {
			t.Fatalf("err = %v, server = %v", err, s.server)
		}
	})
}

// sqlCase is a table row for the probes that read one thing over SQL.
type sqlCase struct {
	name   string
	server *v1.ServerInfo
	q      fakeQuerier
	want   func(*v1.Capabilities) string // "" when right, else what is wrong
	err    string
}

func runSQLCases(t *testing.T, run func(context.Context, *state, *v1.Capabilities) error, cases []sqlCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.server
			if srv == nil {
				srv = mysql80
			}
			var c v1.Capabilities
			err := run(context.Background(), &state{Deps: Deps{Querier: tc.q}, server: srv}, &c)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.want(&c); msg != "" {
				t.Fatal(msg)
			}
		})
	}
}

func TestProbePlugins(t *testing.T) {
	const q = "SELECT PLUGIN_NAME"
	runSQLCases(t, probePlugins, []sqlCase{
		{name: "clone installed", q: fakeQuerier{q: rows(Row{"name": "clone"}, Row{"name": "validate_password"}, Row{"name": "CLONE"})},
			want: func(c *v1.Capabilities) string {
				if strings.Join(c.Plugins, ",") != "clone,validate_password" {
					return fmt.Sprint("plugins ", c.Plugins)
				}
				return ""
			}},
		{name: "none loaded", q: fakeQuerier{q: rows()},
			want: func(c *v1.Capabilities) string {
				if len(c.Plugins) != 0 {
					return fmt.Sprint("plugins ", c.Plugins)
				}
				return ""
			}},
		{name: "no privilege", q: fakeQuerier{q: {err: errors.New("Error 1227: Access denied")}}, err: "Access denied"},
	})
}

func TestProbeBinlog(t *testing.T) {
	const q = "SELECT @@log_bin"
	runSQLCases(t, probeBinlog, []sqlCase{
		{name: "row", q: fakeQuerier{q: rows(Row{"log_bin": "1", "format": "ROW"})}, want: func(c *v1.Capabilities) string {
			if !c.BinlogEnabled || c.BinlogFormat != "ROW" {
				return fmt.Sprint(c.BinlogEnabled, c.BinlogFormat)
			}
			return ""
		}},
		{name: "off", q: fakeQuerier{q: rows(Row{"log_bin": "0", "format": "mixed"})}, want: func(c *v1.Capabilities) string {
			if c.BinlogEnabled || c.BinlogFormat != "MIXED" {
				return fmt.Sprint(c.BinlogEnabled, c.BinlogFormat)
			}
			return ""
		}},
	})
}

func TestProbeGTID(t *testing.T) {
	mode := func(want string) func(*v1.Capabilities) string {
		return func(c *v1.Capabilities) string {
			if c.GtidMode != want {
				return fmt.Sprintf("gtid_mode %q, want %q", c.GtidMode, want)
			}
			return ""
		}
	}
	runSQLCases(t, probeGTID, []sqlCase{
		{name: "mysql on", q: fakeQuerier{"SELECT @@gtid_mode": rows(Row{"mode": "ON"})}, want: mode("ON")},
		{name: "mysql permissive", q: fakeQuerier{"SELECT @@gtid_mode": rows(Row{"mode": "OFF_PERMISSIVE"})}, want: mode("OFF_PERMISSIVE")},
		{name: "mariadb strict", server: maria, q: fakeQuerier{"SELECT @@gtid_strict_mode": rows(Row{"strict": "1"})}, want: mode("ON")},
		{name: "mariadb lax", server: maria, q: fakeQuerier{"SELECT @@gtid_strict_mode": rows(Row{"strict": "0"})}, want: mode("OFF")},
	})
}

func TestProbeDatadir(t *testing.T) {
	const q = "SELECT @@datadir"
	runSQLCases(t, probeDatadir, []sqlCase{
		{name: "trailing slash", q: fakeQuerier{q: rows(Row{"datadir": "/var/lib/mysql/"})}, want: func(c *v1.Capabilities) string {
			if c.Datadir != "/var/lib/mysql" {
				return c.Datadir
			}
			return ""
		}},
		{name: "relative", q: fakeQuerier{q: rows(Row{"datadir": "./data/"})}, err: "not an absolute path"},
	})
}

func TestProbeReplica(t *testing.T) {
	replica := func(want bool) func(*v1.Capabilities) string {
		return func(c *v1.Capabilities) string {
			if c.IsReplica != want {
				return fmt.Sprint("is_replica ", c.IsReplica)
			}
			return ""
		}
	}
	syntax := answer{err: errors.New("Error 1064 (42000): You have an error in your SQL syntax")}
	runSQLCases(t, probeReplica, []sqlCase{
		{name: "mariadb primary", server: maria, q: fakeQuerier{"SHOW ALL SLAVES STATUS": rows()}, want: replica(false)},
		{name: "mariadb replica", server: maria, q: fakeQuerier{"SHOW ALL SLAVES STATUS": rows(Row{"connection_name": "", "master_host": "10.0.0.1", "slave_io_running": "Yes"})}, want: replica(true)},
		{name: "mysql 8.0.22+ replica", q: fakeQuerier{"SHOW REPLICA STATUS": rows(Row{"source_host": "10.0.0.1", "channel_name": ""})}, want: replica(true)},
		{name: "mysql 5.7 primary", q: fakeQuerier{"SHOW REPLICA STATUS": syntax, "SHOW SLAVE STATUS": rows()}, want: replica(false)},
		{name: "mysql 5.7 replica", q: fakeQuerier{"SHOW REPLICA STATUS": syntax, "SHOW SLAVE STATUS": rows(Row{"master_host": "10.0.0.1"})}, want: replica(true)},
		{name: "no privilege", q: fakeQuerier{"SHOW REPLICA STATUS": {err: errors.New("Error 1227: Access denied; you need REPLICATION CLIENT")}, "SHOW SLAVE STATUS": {err: errors.New("Error 1227: Access denied")}}, err: "REPLICATION CLIENT"},
	})
}

func TestProbeDataSize(t *testing.T) {
	const q = "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0)"
	du := "du -s -B1 /var/lib/mysql"
	cases := []struct {
		name string
		q    fakeQuerier
		h    fakeHost
		want uint64
		err  string
	}{
		{name: "information_schema", q: fakeQuerier{q: rows(Row{"bytes": "1073741824"})}, want: 1 << 30},
		{name: "du fallback", q: fakeQuerier{q: {err: errors.New("Error 1146: table doesn't exist")}},
			h: fakeHost{cmds: map[string]answer{du: {out: "5368709120\t/var/lib/mysql\n"}}}, want: 5 << 30},
		{name: "both fail", q: fakeQuerier{q: {err: errors.New("Error 1146: table doesn't exist")}},
			h: fakeHost{cmds: map[string]answer{du: {err: errors.New("du: cannot read directory '/var/lib/mysql': Permission denied")}}}, err: "Permission denied"},
		{name: "garbage", q: fakeQuerier{q: rows(Row{"bytes": "lots"})}, h: fakeHost{cmds: map[string]answer{du: {out: "\n"}}}, err: "du printed nothing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := v1.Capabilities{Datadir: "/var/lib/mysql"}
			err := probeDataSize(context.Background(), &state{Deps: Deps{Querier: tc.q, Host: tc.h}, server: mysql80}, &c)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || errors.Is(err, errSkipped) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || c.DataBytes != tc.want {
				t.Fatalf("data bytes %d, err %v; want %d", c.DataBytes, err, tc.want)
			}
		})
	}
}

const dd = "/var/lib/mysql"

func TestProbeFilesystem(t *testing.T) {
	lsblk := "lsblk -rno MAJ:MIN,TYPE,NAME"
	cases := []struct {
		name    string
		h       fakeHost
		want    v1.Filesystem
		lvmName string
		free    uint64
		err     string // of the filesystem probe
		freeErr string
	}{
		{name: "ext4 on a disk", h: fakeHost{
			statfs: map[string]FS{dd: {Magic: magicExt4, AvailBytes: 100}}, dev: map[string][2]uint32{dd: {254, 1}},
			files: map[string]string{"/sys/dev/block/254:1/dev": "254:1\n"},
		}, want: v1.Filesystem_FILESYSTEM_EXT4, free: 100},
		{name: "xfs on an LVM volume", h: fakeHost{
			statfs: map[string]FS{dd: {Magic: magicXFS, AvailBytes: 100}}, dev: map[string][2]uint32{dd: {253, 3}},
			files: map[string]string{
				"/sys/dev/block/253:3/dm/uuid": "LVM-q3Tc2yWkBz0fMBnP3uJmFjFnlGr4bw2b1zs9IoUSE8wBGtnPUG8zDJzb9Xjtq8PN\n",
				"/sys/dev/block/253:3/dm/name": "vg--db-mysql\n",
			},
			cmds: map[string]answer{"vgs --noheadings --units b --nosuffix -o vg_free vg-db": {out: "  21470642176\n"}},
		}, want: v1.Filesystem_FILESYSTEM_LVM, lvmName: "vg--db-mysql", free: 21470642176},
		{name: "ext4 on dm-crypt", h: fakeHost{
			statfs: map[string]FS{dd: {Magic: magicExt4, AvailBytes: 7}}, dev: map[string][2]uint32{dd: {253, 0}},
			files: map[string]string{"/sys/dev/block/253:0/dm/uuid": "CRYPT-LUKS2-0a1b2c3d-cryptdata\n"},
		}, want: v1.Filesystem_FILESYSTEM_EXT4, free: 7},
		{name: "btrfs", h: fakeHost{statfs: map[string]FS{dd: {Magic: magicBtrfs, AvailBytes: 42}}, dev: map[string][2]uint32{dd: {0, 45}}},
			want: v1.Filesystem_FILESYSTEM_BTRFS, free: 42},
		{name: "zfs", h: fakeHost{statfs: map[string]FS{dd: {Magic: magicZFS, AvailBytes: 43}}, dev: map[string][2]uint32{dd: {0, 52}}},
			want: v1.Filesystem_FILESYSTEM_ZFS, free: 43},
		{name: "tmpfs", h: fakeHost{statfs: map[string]FS{dd: {Magic: magicTmpfs, AvailBytes: 44}}, dev: map[string][2]uint32{dd: {0, 30}}},
			want: v1.Filesystem_FILESYSTEM_OTHER, free: 44},
		{name: "no sysfs, lsblk says lvm", h: fakeHost{
			statfs: map[string]FS{dd: {Magic: magicExt4}}, dev: map[string][2]uint32{dd: {253, 2}},
			cmds: map[string]answer{
				lsblk: {out: "254:0 disk vda\n254:1 part vda1\n253:2 lvm data-mysql\n"},
				"vgs --noheadings --units b --nosuffix -o vg_free data": {out: "  0\n"},
			},
		}, want: v1.Filesystem_FILESYSTEM_LVM, lvmName: "data-mysql"},
		{name: "no sysfs, no lsblk", h: fakeHost{statfs: map[string]FS{dd: {Magic: magicXFS, AvailBytes: 5}}, dev: map[string][2]uint32{dd: {8, 1}}},
			want: v1.Filesystem_FILESYSTEM_XFS, free: 5, err: "LVM unknown"},
		{name: "vgs fails", h: fakeHost{
			statfs: map[string]FS{dd: {Magic: magicExt4}}, dev: map[string][2]uint32{dd: {253, 3}},
			files: map[string]string{"/sys/dev/block/253:3/dm/uuid": "LVM-x\n", "/sys/dev/block/253:3/dm/name": "vg0-mysql\n"},
			cmds:  map[string]answer{"vgs --noheadings --units b --nosuffix -o vg_free vg0": {err: errors.New("vgs: exit status 5: WARNING: Running as a non-root user")}},
		}, want: v1.Filesystem_FILESYSTEM_LVM, lvmName: "vg0-mysql", freeErr: "non-root"},
		{name: "datadir elsewhere", h: fakeHost{}, err: "does not exist on this host", freeErr: "skipped"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := v1.Capabilities{Datadir: dd}
			s := &state{Deps: Deps{Host: tc.h}}
			err := probeFilesystem(context.Background(), s, &c)
			if (err != nil) != (tc.err != "") || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("filesystem err = %v, want %q", err, tc.err)
			}
			if c.Filesystem != tc.want || s.lvmName != tc.lvmName {
				t.Fatalf("filesystem %v on %q, want %v on %q", c.Filesystem, s.lvmName, tc.want, tc.lvmName)
			}
			err = probeFree(context.Background(), s, &c)
			if (err != nil) != (tc.freeErr != "") || err != nil && !strings.Contains(err.Error(), tc.freeErr) {
				t.Fatalf("free err = %v, want %q", err, tc.freeErr)
			}
			if c.SnapshotFreeBytes != tc.free {
				t.Fatalf("free %d, want %d", c.SnapshotFreeBytes, tc.free)
			}
		})
	}
}

func TestVGOfDMName(t *testing.T) {
	for name, want := range map[string]string{
		"vg0-mysql":          "vg0",
		"vg--db-mysql":       "vg-db",
		"my--vg-data--lv":    "my-vg",
		"a--b--c-d":          "a-b-c",
		"nodash":             "",
		"trailing--escaped-": "trailing-escaped",
	} {
		got, ok := vgOfDMName(name)
		if got != want || ok != (want != "") {
			t.Errorf("vgOfDMName(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
}

func TestProbeStorage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		check   func(context.Context) error
		ok      bool
		errText string
	}{
		{name: "not configured", errText: "no repository configured"},
		{name: "reachable", check: func(context.Context) error { return nil }, ok: true},
		{name: "unreachable", check: func(context.Context) error {
			return errors.New(`s3://backups/db: dial tcp 10.0.0.9:9000: i/o timeout`)
		}, errText: "i/o timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c v1.Capabilities
			if err := probeStorage(context.Background(), &state{Deps: Deps{Storage: tc.check}}, &c); err != nil {
				t.Fatal(err)
			}
			if c.StorageReachable != tc.ok || !strings.Contains(c.StorageError, tc.errText) || (tc.ok && c.StorageError != "") {
				t.Fatalf("reachable %v error %q", c.StorageReachable, c.StorageError)
			}
		})
	}
}

// TestRunServerDown: with the server down, the SQL probes are skipped with
// one warning each for the cause and the list; storage is still probed.
func TestRunServerDown(t *testing.T) {
	res := Run(context.Background(), Deps{
		Querier:      fakeQuerier{qVersion: {err: errors.New("dial tcp 127.0.0.1:3306: connect: connection refused")}},
		Host:         fakeHost{},
		Storage:      func(context.Context) error { return nil },
		AgentVersion: "test",
	})
	c := res.Capabilities
	if res.Server != nil || c.Flavor != "" || !c.StorageReachable || c.AgentVersion != "test" || c.ProbedAt == nil {
		t.Fatalf("result %v", res)
	}
	joined := strings.Join(res.Warnings, "\n")
	for _, want := range []string{"probe server: dial tcp", "skipped because the server could not be queried: plugins, binlog, gtid, datadir, data size, replication",
		"probe filesystem: skipped: datadir unknown"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings lack %q:\n%s", want, joined)
		}
	}
}

// TestRunAll runs every probe over one captured MySQL 8.0 host.
func TestRunAll(t *testing.T) {
	q := fakeQuerier{
		qVersion:                             rows(Row{"version": "8.0.36", "comment": "MySQL Community Server - GPL", "hostname": "db1", "server_id": "1"}),
		qUUID:                                rows(Row{"uuid": "u"}),
		"SELECT PLUGIN_NAME":                 rows(Row{"name": "clone"}),
		"SELECT @@log_bin":                   rows(Row{"log_bin": "1", "format": "ROW"}),
		"SELECT @@gtid_mode":                 rows(Row{"mode": "ON"}),
		"SELECT @@datadir":                   rows(Row{"datadir": "/var/lib/mysql/"}),
		"SELECT COALESCE":                    rows(Row{"bytes": "1000"}),
		"SHOW REPLICA STATUS":                rows(),
		"SHOW GRANTS":                        rows(Row{"grants for tm@%": "GRANT BACKUP_ADMIN,CLONE_ADMIN ON *.* TO `tm`@`%`"}),
		"SELECT @@innodb_log_group_home_dir": rows(Row{"redo": "./", "binlog": "/var/log/mysql/bin"}),
	}
	h := fakeHost{
		statfs: map[string]FS{dd: {Magic: magicBtrfs, AvailBytes: 1 << 40}, "/var/log/mysql": {Magic: magicExt4}},
		dev:    map[string][2]uint32{dd: {0, 40}, "/var/log/mysql": {8, 1}},
		files:  map[string]string{"/sys/dev/block/8:1/dev": "8:1"},
		cmds:   map[string]answer{"sh -c " + versionScript + " xtrabackup": {out: "xtrabackup version 8.0.35-30 based on MySQL server 8.0.35 Linux (x86_64) (revision id: 6beb4b49)\n"}},
	}
	res := Run(context.Background(), Deps{Querier: q, Host: h, Storage: func(context.Context) error { return nil }})
	if len(res.Warnings) > 0 {
		t.Fatalf("warnings: %q", res.Warnings)
	}
	c := res.Capabilities
	if c.Flavor != "mysql" || c.Version != "8.0.36" || c.Edition != "community" || len(c.Plugins) != 1 ||
		!c.BinlogEnabled || c.GtidMode != "ON" || c.Datadir != dd || c.Filesystem != v1.Filesystem_FILESYSTEM_BTRFS ||
		c.SnapshotFreeBytes != 1<<40 || c.DataBytes != 1000 || c.IsReplica || !c.StorageReachable {
		t.Fatalf("capabilities %v", c)
	}
	if !c.SelectionProbed || c.BackupTool != "xtrabackup" || c.BackupToolVersion != "8.0.35" || c.BackupToolError != "" || !c.BackupAdmin ||
		len(c.Volumes) != 2 || !c.Volumes[0].SameAsDatadir || c.Volumes[0].Path != dd || c.Volumes[0].Filesystem != v1.Filesystem_FILESYSTEM_BTRFS ||
		c.Volumes[1].SameAsDatadir || c.Volumes[1].Role != "binlog" || c.Volumes[1].Filesystem != v1.Filesystem_FILESYSTEM_EXT4 {
		t.Fatalf("selection inputs %v", c)
	}
	if res.Server.ServerUuid != "u" {
		t.Fatalf("server %v", res.Server)
	}
}

// TestProbeBackupTool: missing, broken, unreadable and good tools.
func TestProbeBackupTool(t *testing.T) {
	key := "sh -c " + versionScript + " mariabackup"
	for _, tc := range []struct {
		name             string
		cmd              *answer
		tool, ver, error string
	}{
		{"missing", nil, "", "", "mariabackup is not in the agent's PATH; install mariadb-backup"},
		{"broken", &answer{err: errors.New("sh: exit status 2: segfault")}, "mariabackup", "", "mariabackup --version failed: sh: exit status 2"},
		{"unreadable", &answer{out: "mariabackup 1.0\n"}, "mariabackup", "", `cannot read the server version mariabackup was built from in "mariabackup 1.0"`},
		{"good", &answer{out: "mariabackup based on MariaDB server 10.11.19-MariaDB debian-linux-gnu (x86_64)\n"}, "mariabackup", "10.11.19", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := fakeHost{cmds: map[string]answer{}}
			if tc.cmd != nil {
				h.cmds[key] = *tc.cmd
			}
			c := &v1.Capabilities{}
			s := &state{Deps: Deps{Host: h, Querier: fakeQuerier{}}, server: maria}
			if err := probeBackupTool(context.Background(), s, c); err != nil {
				t.Fatal(err)
			}
			if !c.SelectionProbed || c.BackupTool != tc.tool || c.BackupToolVersion != tc.ver || !strings.Contains(c.BackupToolError, tc.error) || (tc.error == "") != (c.BackupToolError == "") {
				t.Fatalf("tool %q version %q error %q", c.BackupTool, c.BackupToolVersion, c.BackupToolError)
			}
		})
	}
}

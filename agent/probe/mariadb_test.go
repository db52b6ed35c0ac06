//go:build linux

package probe

import (
	"context"
	"database/sql"
	"strings"
	"syscall"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestMariaDB runs every probe against a real server on this host.
func TestMariaDB(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{ExtraArgs: []string{"--gtid-strict-mode=1"}})
	db, err := sql.Open("mysql", m.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	testenv.LoadSample(t, db, "shop", 200)

	var reached bool
	deps := Deps{Querier: SQL(db), Host: LocalHost{}, AgentVersion: "test",
		Storage: func(context.Context) error { reached = true; return nil }}
	res := Run(context.Background(), deps)
	if len(res.Warnings) > 0 {
		t.Fatalf("warnings: %q", res.Warnings)
	}
	c := res.Capabilities
	t.Logf("capabilities: %v", c)
	if c.Flavor != "mariadb" || !strings.HasPrefix(res.Server.Version, c.Version) || c.Edition != "community" {
		t.Errorf("flavor %q version %q (server %q) edition %q", c.Flavor, c.Version, res.Server.Version, c.Edition)
	}
	if res.Server.ServerId != m.ServerID {
		t.Errorf("server id %d, want %d", res.Server.ServerId, m.ServerID)
	}
	if !c.BinlogEnabled || c.BinlogFormat != "ROW" || c.GtidMode != "ON" {
		t.Errorf("binlog %v %q gtid %q", c.BinlogEnabled, c.BinlogFormat, c.GtidMode)
	}
	if c.Datadir != m.DataDir {
		t.Errorf("datadir %q, want %q", c.Datadir, m.DataDir)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(m.DataDir, &st); err != nil {
		t.Fatal(err)
	}
	if uint32(st.Type) == magicExt4 && c.Filesystem != v1.Filesystem_FILESYSTEM_EXT4 || c.Filesystem == v1.Filesystem_FILESYSTEM_UNSPECIFIED {
		t.Errorf("filesystem %v on %s (magic %#x)", c.Filesystem, m.DataDir, uint32(st.Type))
	}
	if c.SnapshotFreeBytes == 0 || c.DataBytes == 0 || c.IsReplica || !c.StorageReachable || !reached {
		t.Errorf("free %d data %d replica %v storage %v", c.SnapshotFreeBytes, c.DataBytes, c.IsReplica, c.StorageReachable)
	}
	// Debian's mariadb-backup is of the server's series; redo and binlog
	// live in the datadir.
	if c.BackupTool != "mariabackup" || !strings.HasPrefix(res.Server.Version, c.BackupToolVersion) || !c.SelectionProbed {
		t.Errorf("tool %q version %q error %q", c.BackupTool, c.BackupToolVersion, c.BackupToolError)
	}
	for _, v := range c.Volumes {
		if !v.SameAsDatadir {
			t.Errorf("volume %v apart from the datadir", v)
		}
	}

	// A configured replication source makes it a replica, running or not.
	m.Exec(t, "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=1, MASTER_USER='repl'")
	if res := Run(context.Background(), deps); !res.Capabilities.IsReplica || len(res.Warnings) > 0 {
		t.Errorf("after CHANGE MASTER: replica %v warnings %q", res.Capabilities.IsReplica, res.Warnings)
	}
}

package logical

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// The MySQL 8 paths run against testenv.MySQL8Double, a DOUBLE: a proxy
// that gives a real MariaDB MySQL 8's version, variables and backup-lock
// statements (this machine has no MySQL 8). The tests check what Tidemark
// sends, on which connection and in what order; MySQL's own execution of
// those statements is not covered here.

// indexOf returns the position in log of the first statement starting with
// prefix, on conn when conn is not 0, or -1.
func indexOf(log []testenv.Statement, conn int, prefix string) int {
	for i, s := range log {
		if (conn == 0 || s.Conn == conn) && strings.HasPrefix(strings.ToUpper(strings.TrimSpace(s.SQL)), strings.ToUpper(prefix)) {
			return i
		}
	}
	return -1
}

// TestMySQL8LockProtocol backs up through the double: LOCK INSTANCE FOR
// BACKUP blocks DDL for the whole dump; FLUSH TABLES WITH READ LOCK (MySQL
// has no BACKUP STAGE) is held only while every worker opens its snapshot
// and the lock connection reads the coordinates; both are released on the
// connection that took them. The backup then restores into the double
// (MySQL's LOAD DATA and privilege paths) with every checksum equal.
func TestMySQL8LockProtocol(t *testing.T) {
	t.Parallel()
	m := startMariaDB(t, "my8")
	m.Exec(t, "CREATE DATABASE shop",
		"CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(40), total DECIMAL(10,2)) ENGINE=InnoDB",
		"INSERT INTO shop.orders SELECT seq, CONCAT('order ', seq), seq / 7 FROM test.seq_1_to_5000",
		"CREATE TABLE shop.counters (k VARCHAR(10) PRIMARY KEY, v INT) ENGINE=MyISAM",
		"INSERT INTO shop.counters VALUES ('a', 1), ('b', 2)")
	d := testenv.StartMySQL8Double(t, m)

	a, res := backupMem(t, smallPieces, engines.BackupParams{DSN: d.DSN, Databases: []string{"shop"}, Parallel: 2})
	if a.server == nil || a.server.Flavor != mysqlx.MySQL || a.server.Version != d.Version {
		t.Fatalf("server recorded as %v, want MySQL %s", a.server, d.Version)
	}
	if a.cp == nil || a.cp.BinlogFile == "" || a.cp.GtidSet == "" {
		t.Errorf("coordinates: %v", a.cp)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "shop.counters uses MyISAM") {
		t.Errorf("warnings: %v (want only the one about the MyISAM table)", res.Warnings)
	}

	log := d.Log()
	ctl := testenv.ConnOf(log, "FLUSH TABLES WITH READ LOCK")
	if ctl == 0 || testenv.ConnOf(log, "LOCK INSTANCE FOR BACKUP") != ctl || testenv.ConnOf(log, "BACKUP STAGE") != 0 {
		t.Fatalf("lock statements not on one connection, or BACKUP STAGE sent to MySQL:\n%s", dump(log))
	}
	lockInst := indexOf(log, ctl, "LOCK INSTANCE FOR BACKUP")
	ftwrl := indexOf(log, ctl, "FLUSH TABLES WITH READ LOCK")
	coords := indexOf(log, ctl, "SHOW MASTER STATUS")
	gtid := indexOf(log, ctl, "SELECT @@GLOBAL.gtid_executed")
	unlock := indexOf(log, ctl, "UNLOCK TABLES")
	unlockInst := indexOf(log, ctl, "UNLOCK INSTANCE")
	inOrder := lockInst < ftwrl && ftwrl < coords && coords < unlock && gtid > ftwrl && gtid < unlock && unlock < unlockInst
	if !inOrder {
		t.Errorf("lock connection's order: LOCK INSTANCE %d, FTWRL %d, SHOW MASTER STATUS %d, gtid_executed %d, UNLOCK TABLES %d, UNLOCK INSTANCE %d\n%s",
			lockInst, ftwrl, coords, gtid, unlock, unlockInst, dump(log))
	}
	snapshots := 0
	for i, s := range log {
		if strings.HasPrefix(s.SQL, "START TRANSACTION WITH CONSISTENT SNAPSHOT") {
			snapshots++
			if s.Conn == ctl || i < ftwrl || i > unlock {
				t.Errorf("snapshot on connection %d at %d, outside the lock window %d..%d", s.Conn, i, ftwrl, unlock)
			}
		}
		if strings.Contains(s.SQL, "max_execution_time") && s.Conn == ctl {
			t.Errorf("max_execution_time set on the lock connection")
		}
	}
	if snapshots != 2 {
		t.Errorf("%d snapshots, want one per worker (2)", snapshots)
	}
	// MyISAM is dumped while the lock is held.
	if i := indexOf(log, 0, "SELECT `k`"); i < ftwrl || i > unlock {
		t.Errorf("MyISAM table read at %d, outside the lock window %d..%d", i, ftwrl, unlock)
	}

	dst := startMariaDB(t, "my8-dst")
	dd := testenv.StartMySQL8Double(t, dst)
	restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dd.DSN, Parallel: 2})
	testenv.Compare(t, m.DB(t), dst.DB(t), "shop")
	if indexOf(dd.Log(), 0, "LOAD DATA LOCAL INFILE") < 0 {
		t.Errorf("restore did not load with LOAD DATA:\n%s", dump(dd.Log()))
	}

	// A MariaDB backup with row history is refused by MySQL, which has no
	// system-versioned tables, before anything is created.
	m.Exec(t, "CREATE DATABASE hv", "CREATE TABLE hv.v (id INT PRIMARY KEY) WITH SYSTEM VERSIONING", "INSERT INTO hv.v VALUES (1)", "DELETE FROM hv.v")
	h, _ := backupMem(t, smallPieces, engines.BackupParams{DSN: m.DSN, Databases: []string{"hv"}, History: true})
	_, err := smallPieces.Restore(context.Background(), engines.RestoreParams{DSN: dd.DSN, Source: h})
	if !errors.Is(err, ErrHistoryRefused) || !strings.Contains(err.Error(), "hv.v") || !strings.Contains(err.Error(), mysqlx.MySQL+" "+dd.Version+", has no system-versioned tables") {
		t.Errorf("history restored onto MySQL: %v", err)
	}
	if i := indexOf(dd.Log(), 0, "CREATE DATABASE IF NOT EXISTS `hv`"); i >= 0 || strings.Contains(dump(dd.Log()), "`hv`") {
		t.Errorf("the refused restore created hv:\n%s", dump(dd.Log()))
	}
}

// TestMySQL8LockErrors: without RELOAD, FLUSH TABLES WITH READ LOCK fails,
// the error names the privilege, and LOCK INSTANCE FOR BACKUP is still
// released on its connection. Without BACKUP_ADMIN, LOCK INSTANCE FOR
// BACKUP is refused and the backup goes on with a warning that says so.
func TestMySQL8LockErrors(t *testing.T) {
	t.Parallel()
	m := startMariaDB(t, "my8err")
	m.Exec(t, "CREATE DATABASE shop", "CREATE TABLE shop.t (id INT PRIMARY KEY) ENGINE=InnoDB", "INSERT INTO shop.t VALUES (1), (2)")
	d := testenv.StartMySQL8Double(t, m)

	d.Fail("FLUSH TABLES WITH READ LOCK", &testenv.DoubleError{Number: 1227, SQLState: "42000",
		Message: "Access denied; you need (at least one of) the RELOAD privilege(s) for this operation"})
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(time.Minute))
	defer cancel()
	_, err := smallPieces.Backup(ctx, engines.BackupParams{DSN: d.DSN, Databases: []string{"shop"}, Parallel: 2, Sink: newMem()})
	if !errors.Is(err, mysqlx.ErrPrivilege) || !strings.Contains(err.Error(), "RELOAD") {
		t.Fatalf("backup without RELOAD: %v", err)
	}
	log := d.Log()
	ctl := testenv.ConnOf(log, "LOCK INSTANCE FOR BACKUP")
	if ctl == 0 || indexOf(log, ctl, "UNLOCK INSTANCE") < indexOf(log, ctl, "FLUSH TABLES WITH READ LOCK") {
		t.Fatalf("LOCK INSTANCE not released on its connection after the failure:\n%s", dump(log))
	}
	if indexOf(log, 0, "START TRANSACTION WITH CONSISTENT SNAPSHOT") >= 0 {
		t.Errorf("a snapshot was opened without the lock")
	}

	d.Fail("FLUSH TABLES WITH READ LOCK", nil)
	d.Fail("LOCK INSTANCE FOR BACKUP", &testenv.DoubleError{Number: 1227, SQLState: "42000",
		Message: "Access denied; you need (at least one of) the BACKUP_ADMIN privilege(s) for this operation"})
	_, res := backupMem(t, smallPieces, engines.BackupParams{DSN: d.DSN, Databases: []string{"shop"}, Parallel: 2})
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "BACKUP_ADMIN") {
		t.Errorf("warnings without BACKUP_ADMIN: %v", res.Warnings)
	}
}

func dump(log []testenv.Statement) string {
	var b strings.Builder
	for _, s := range log {
		b.WriteString(strings.Repeat(" ", 2*s.Conn))
		b.WriteString(s.SQL)
		b.WriteByte('\n')
	}
	return b.String()
}

package logical

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestPartialRenameAndExisting restores parts of one backup under new
// names into one target, then checks the refusal of existing tables.
func TestPartialRenameAndExisting(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "part-src")
	dst := startMariaDB(t, "part-dst")
	loadTypes(t, src)
	a, _ := backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN, History: true})
	srcDB, dstDB := src.DB(t), dst.DB(t)

	// Whole databases under new names: views, triggers and routines follow.
	restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, RenameDB: map[string]string{"rt": "rt_copy", "rt2": "rt2_copy"}})
	sums := testenv.Checksums(t, dstDB, "rt_copy", "rt2_copy")
	for name, want := range testenv.Checksums(t, srcDB, "rt", "rt2") {
		got := sums[strings.Replace(strings.Replace(name, "rt2.", "rt2_copy.", 1), "rt.", "rt_copy.", 1)]
		if got != want {
			t.Errorf("%s: restored %+v, source %+v", name, got, want)
		}
	}
	compareSchema(t, srcDB, dstDB, []string{"rt", "rt2"}, map[string]string{"rt": "rt_copy", "rt2": "rt2_copy"})
	var n int
	if err := dstDB.QueryRow("SELECT COUNT(*) FROM rt2_copy.cross_view").Scan(&n); err != nil || n != 1 {
		t.Errorf("cross-database view after rename: %d rows, %v", n, err)
	}
	var def string
	if err := dstDB.QueryRow("SELECT VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'rt2_copy'").Scan(&def); err != nil || strings.Contains(def, "`rt`.") {
		t.Errorf("renamed view still points at the old database: %s (%v)", def, err)
	}

	// Only some tables.
	res := restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, Tables: []string{"rt.big", "rt.types", "rt.v_func", "rt.v_merge"}, RenameDB: map[string]string{"rt": "rt_part"}})
	if res.Tables != 2 {
		t.Errorf("partial restore restored %d tables, want 2", res.Tables)
	}
	// v_func calls a function, which a restore of some tables leaves out.
	if w := strings.Join(res.Warnings, "\n"); !strings.Contains(w, "view rt_part.v_func not restored") || !strings.Contains(w, "f_double does not exist") {
		t.Errorf("partial restore of a view calling a function: warnings %q", res.Warnings)
	}
	got := queryStrings(t, dstDB, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'rt_part'")
	if strings.Join(got, ",") != "big,types,v_merge" { // views can be named too
		t.Errorf("partial restore created %v", got)
	}
	if trig := queryStrings(t, dstDB, "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'rt_part'"); len(trig) != 2 {
		t.Errorf("triggers of the restored table: %v", trig)
	}
	// One database, by its original name.
	restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, Databases: []string{"rt2"}})
	testenv.Compare(t, srcDB, dstDB, "rt2")

	// Again: the target holds the tables now.
	_, err := smallPieces.Restore(context.Background(), engines.RestoreParams{DSN: dst.DSN, Source: a, RenameDB: map[string]string{"rt": "rt_copy", "rt2": "rt2_copy"}})
	if !errors.Is(err, ErrTargetNotEmpty) || !strings.Contains(err.Error(), "table rt_copy.big") || !strings.Contains(err.Error(), "table rt2_copy.t,") ||
		!strings.Contains(err.Error(), "more;") {
		t.Fatalf("restore over existing tables: %v", err)
	}
	t.Logf("refusal reads: %v", err)
	if _, err := dstDB.Exec("UPDATE rt_copy.big SET v = 'changed'"); err != nil {
		t.Fatal(err)
	}
	res = restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, DropExisting: true, RenameDB: map[string]string{"rt": "rt_copy", "rt2": "rt2_copy"}})
	if len(res.Warnings) == 0 {
		t.Errorf("drop-existing restore gave no warning")
	}
	compareSchema(t, srcDB, dstDB, []string{"rt"}, map[string]string{"rt": "rt_copy"})

	// Names that are not in the backup.
	for _, p := range []engines.RestoreParams{
		{Databases: []string{"nope"}}, {Tables: []string{"rt.nope"}}, {RenameDB: map[string]string{"nope": "x"}},
	} {
		p.DSN, p.Source = dst.DSN, a
		if _, err := smallPieces.Restore(context.Background(), p); err == nil || !strings.Contains(err.Error(), "nope") {
			t.Errorf("restore %+v: %v", p, err)
		}
	}
}

// TestInsertFallback restores into a server with local_infile=OFF.
func TestInsertFallback(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "ins-src")
	dst := startMariaDB(t, "ins-dst", "--local-infile=0")
	loadTypes(t, src)
	a, _ := backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN, History: true})
	res := restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN})
	if len(res.Warnings) == 0 || !strings.Contains(res.Warnings[0], "local_infile") {
		t.Errorf("no warning about local_infile: %v", res.Warnings)
	}
	testenv.Compare(t, src.DB(t), dst.DB(t), "rt", "rt2")
}

// TestConnectionErrors covers the mistakes an operator makes first.
func TestConnectionErrors(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "err-src")
	src.Exec(t, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)", "CREATE VIEW app.v AS SELECT * FROM app.t",
		"CREATE USER 'weak'@'%' IDENTIFIED BY 'weak'", "GRANT SELECT ON app.* TO 'weak'@'%'",
		// Global SELECT shows every account's rows in information_schema's
		// privilege tables: the check must read its own.
		"CREATE USER 'notrig'@'%' IDENTIFIED BY 'notrig'", "GRANT SELECT, SHOW VIEW, RELOAD, BINLOG MONITOR ON *.* TO 'notrig'@'%'")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	_ = l.Close()
	host := src.DSN[strings.Index(src.DSN, "@"):]
	for _, tc := range []struct {
		name, dsn string
		kind      error
		mentions  []string
	}{
		{"wrong password", "tidemark:wrong" + host, mysqlx.ErrAccessDenied, []string{"password"}},
		{"unreachable", "tidemark:tidemark@tcp(" + closed + ")/", mysqlx.ErrUnreachable, []string{"cannot reach", closed}},
		{"unknown host", "tidemark:tidemark@tcp(no-such-host.invalid:3306)/", mysqlx.ErrUnreachable, []string{"no-such-host.invalid"}},
		{"missing privileges", "weak:weak" + host, mysqlx.ErrPrivilege, []string{"RELOAD", "BINLOG MONITOR", "SHOW VIEW, TRIGGER, EVENT ON `app`.*"}},
		{"global SELECT without TRIGGER and EVENT", "notrig:notrig" + host, mysqlx.ErrPrivilege, []string{"TRIGGER, EVENT ON `app`.*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newMem()
			_, err := (&Engine{}).Backup(context.Background(), engines.BackupParams{DSN: tc.dsn, Sink: a})
			if !errors.Is(err, tc.kind) {
				t.Fatalf("got %v, want %v", err, tc.kind)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if strings.Contains(err.Error(), "tidemark:tidemark") || strings.Contains(err.Error(), "weak:weak") || strings.Contains(err.Error(), "notrig:notrig") {
				t.Errorf("error shows the password: %v", err)
			}
			if _, err := (&Engine{}).Restore(context.Background(), engines.RestoreParams{DSN: tc.dsn, Source: fakeBackup(t)}); !errors.Is(tc.kind, mysqlx.ErrPrivilege) && !errors.Is(err, tc.kind) {
				t.Errorf("restore: got %v, want %v", err, tc.kind)
			}
		})
	}
}

// fakeBackup is a valid empty logical backup.
func fakeBackup(t *testing.T) *memArchive {
	a := newMem()
	if err := writeJSON(a, streamMeta, nil, metaDoc{Format: formatVersion}); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestServerKilled kills the source mid-dump and the target mid-load, then
// restarts the target and resumes the restore.
func TestServerKilled(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "kill-src")
	dst := startMariaDB(t, "kill-dst")
	src.Exec(t, "CREATE DATABASE k", "USE k", "CREATE TABLE t (id INT PRIMARY KEY, v CHAR(200))",
		"INSERT INTO t SELECT seq, REPEAT('v', 200) FROM seq_1_to_60000")
	full, _ := backupMem(t, &Engine{}, engines.BackupParams{DSN: src.DSN})

	a := newMem()
	a.blockAfter, a.blocked, a.unblock = 1<<20, make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := (&Engine{}).Backup(context.Background(), engines.BackupParams{DSN: src.DSN, Sink: a, Parallel: 1})
		errc <- err
	}()
	select {
	case <-a.blocked:
	case err := <-errc:
		t.Fatalf("backup ended before the kill: %v", err)
	}
	src.Kill()
	close(a.unblock)
	err := <-errc
	if !errors.Is(err, mysqlx.ErrConnectionLost) || !strings.Contains(err.Error(), "run again") {
		t.Fatalf("backup with the source killed: %v", err)
	}
	t.Logf("backup error: %v", err)

	slow := &slowSource{memArchive: full, blocked: make(chan struct{}), unblock: make(chan struct{})}
	go func() {
		_, err := (&Engine{}).Restore(context.Background(), engines.RestoreParams{DSN: dst.DSN, Source: slow, Parallel: 1})
		errc <- err
	}()
	select {
	case <-slow.blocked:
	case err := <-errc:
		t.Fatalf("restore ended before the kill: %v", err)
	}
	dst.Kill()
	close(slow.unblock)
	err = <-errc
	if !errors.Is(err, mysqlx.ErrConnectionLost) {
		t.Fatalf("restore with the target killed: %v", err)
	}
	t.Logf("restore error: %v", err)

	// The target restarted (crash recovery): the piece that was loading
	// rolled back together with its record, the record of what committed
	// is there, so a fresh restore is refused and Resume ends with the
	// source's rows, checksums equal.
	dst.Restart(t)
	src.Restart(t)
	ctx := context.Background()
	if _, err := (&Engine{}).Restore(ctx, engines.RestoreParams{DSN: dst.DSN, Source: full}); !errors.Is(err, ErrTargetNotEmpty) {
		t.Fatalf("a fresh restore onto the restarted target: %v, want it refused pointing at resume", err)
	}
	res, err := (&Engine{}).Restore(ctx, engines.RestoreParams{DSN: dst.DSN, Source: full, Parallel: 1, Resume: true})
	if err != nil {
		t.Fatalf("resume after the target's restart: %v", err)
	}
	testenv.Compare(t, src.DB(t), dst.DB(t), "k")
	if vr, err := (&Engine{}).Verify(ctx, engines.VerifyParams{DSN: dst.DSN, Source: full}); err != nil || vr.Tables != 1 || len(vr.Mismatches) != 0 {
		t.Errorf("verify of the resumed restore: %+v, %v", vr, err)
	}
	if got := queryStrings(t, dst.DB(t), "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '"+stateDB+"'"); len(got) != 0 {
		t.Errorf("the restore's record is left: %v", got)
	}
	t.Logf("resumed after the target's restart: %d rows loaded", res.Rows)
}

// slowSource stalls data streams after their first MiB until unblocked.
type slowSource struct {
	*memArchive
	blocked, unblock chan struct{}
	once             bool
}

func (s *slowSource) OpenStream(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, err := s.memArchive.OpenStream(ctx, name)
	if err != nil || !strings.HasPrefix(name, "data/") || s.once {
		return rc, err
	}
	s.once = true
	return io.NopCloser(io.MultiReader(io.LimitReader(rc, 1<<20), &gate{s: s}, rc)), nil
}

type gate struct{ s *slowSource }

func (g *gate) Read([]byte) (int, error) {
	close(g.s.blocked)
	<-g.s.unblock
	time.Sleep(100 * time.Millisecond)
	return 0, io.EOF
}

// TestTargetFull fills a target table to its limit: the error must say
// that the server ran out of space.
func TestTargetFull(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "full-src")
	dst := startMariaDB(t, "full-dst", "--max-heap-table-size=65536")
	src.Exec(t, "CREATE DATABASE f", "USE f", "SET SESSION max_heap_table_size = 64*1024*1024",
		"CREATE TABLE m (id INT PRIMARY KEY, v CHAR(100)) ENGINE=MEMORY", "INSERT INTO m SELECT seq, 'x' FROM seq_1_to_20000")
	a, _ := backupMem(t, &Engine{}, engines.BackupParams{DSN: src.DSN})
	_, err := (&Engine{}).Restore(context.Background(), engines.RestoreParams{DSN: dst.DSN, Source: a})
	if !errors.Is(err, mysqlx.ErrDiskFull) || !strings.Contains(err.Error(), "free space") {
		t.Fatalf("restore into a full table: %v", err)
	}
	t.Logf("error reads: %v", err)
}

// TestHistoryTargetRefused: a backup with history is refused, before
// anything is written, by a target that cannot write row history: one
// with secure_timestamp=YES (the reason named), and under
// secure_timestamp=SUPER a user without SUPER or BINLOG REPLAY (the
// privileges named), whom the grant then lets restore the whole history.
// A backup without history restores onto the YES target: its current rows,
// with warnings for them and for the event created with the target's time.
func TestHistoryTargetRefused(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "sects-src", "--secure-timestamp=SUPER")
	dst := startMariaDB(t, "sects-dst", "--secure-timestamp=YES")
	src.Exec(t, "CREATE DATABASE h", "USE h", "CREATE TABLE h.v (id INT PRIMARY KEY, n INT) WITH SYSTEM VERSIONING",
		"INSERT INTO h.v SELECT seq, 0 FROM seq_1_to_50", "UPDATE h.v SET n = n + 1 WHERE id <= 10", "UPDATE h.v SET n = n + 1 WHERE id <= 5",
		"CREATE EVENT h.ev ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM h.v WHERE id < 0")
	withHistory, _ := backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN, History: true})
	dstDB := dst.DB(t)
	noDatabase := func(db *sql.DB, name string) {
		t.Helper()
		if got := queryStrings(t, db, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?", name); len(got) != 0 {
			t.Errorf("the refused restore created database %s", name)
		}
	}

	_, err := smallPieces.Restore(context.Background(), engines.RestoreParams{DSN: dst.DSN, Source: withHistory})
	if !errors.Is(err, ErrHistoryRefused) || !strings.Contains(err.Error(), "h.v") || !strings.Contains(err.Error(), "secure_timestamp=YES") {
		t.Fatalf("restoring history onto secure_timestamp=YES: %v", err)
	}
	t.Logf("refusal reads: %v", err)
	noDatabase(dstDB, "h")

	src.Exec(t, "CREATE USER loader@'%'", "GRANT ALL PRIVILEGES ON h_x.* TO loader@'%'", "GRANT SELECT ON *.* TO loader@'%'")
	loader := engines.RestoreParams{DSN: strings.Replace(src.DSN, "tidemark@", "loader@", 1), Source: withHistory, Tables: []string{"h.v"}, RenameDB: map[string]string{"h": "h_x"}}
	_, err = smallPieces.Restore(context.Background(), loader)
	if !errors.Is(err, ErrHistoryRefused) || !strings.Contains(err.Error(), "secure_timestamp=SUPER") || !strings.Contains(err.Error(), "BINLOG REPLAY") {
		t.Fatalf("restoring history as a user without BINLOG REPLAY: %v", err)
	}
	t.Logf("refusal reads: %v", err)
	srcDB := src.DB(t)
	noDatabase(srcDB, "h_x")
	src.Exec(t, "GRANT BINLOG REPLAY ON *.* TO loader@'%'")
	restoreMem(t, smallPieces, withHistory, loader)
	const all = "SELECT id, n, CONCAT(row_start), CONCAT(row_end) FROM %s.v FOR SYSTEM_TIME ALL"
	want, got := queryStrings(t, srcDB, fmt.Sprintf(all, "h")), queryStrings(t, srcDB, fmt.Sprintf(all, "h_x"))
	if len(want) != 65 || strings.Join(want, "\n") != strings.Join(got, "\n") {
		t.Errorf("history restored with BINLOG REPLAY: %d row versions, the source %d (want 65, equal)", len(got), len(want))
	}

	current, _ := backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN, Databases: []string{"h"}})
	res := restoreMem(t, smallPieces, current, engines.RestoreParams{DSN: dst.DSN})
	w := strings.Join(res.Warnings, "\n")
	if !strings.Contains(w, "only the current rows of the system-versioned h.v (it was taken without --history)") || !strings.Contains(w, "event h.ev is created with the target's time") {
		t.Errorf("restore without history: warnings %q", res.Warnings)
	}
	if res.Rows != 50 {
		t.Errorf("restore without history: %d rows, want the 50 current ones", res.Rows)
	}
	if want, got := queryStrings(t, srcDB, "SELECT id, n FROM h.v"), queryStrings(t, dstDB, "SELECT id, n FROM h.v FOR SYSTEM_TIME ALL"); strings.Join(want, ",") != strings.Join(got, ",") {
		t.Errorf("restored rows, history included: %v, want the current ones %v", got, want)
	}
}

// TestNoBinlog: with NoBinlog nothing of the restore reaches the target's
// binlog (its GTID position does not move), where a default restore is
// binlogged for the target's replicas; a user who may not set sql_log_bin
// is refused before anything is written, naming the privilege.
func TestNoBinlog(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "nobin-src")
	dst := startMariaDB(t, "nobin-dst")
	loadTypes(t, src)
	a, _ := backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN, History: true})
	dstDB := dst.DB(t)
	pos := func() string {
		var p string
		if err := dstDB.QueryRow("SELECT @@gtid_binlog_pos").Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}

	before := pos()
	restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, NoBinlog: true})
	if after := pos(); after != before {
		t.Errorf("--no-binlog restore moved the target's binlog from %q to %q", before, after)
	}
	testenv.Compare(t, src.DB(t), dstDB, "rt", "rt2")
	restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN, RenameDB: map[string]string{"rt": "rt_b", "rt2": "rt2_b"}})
	if after := pos(); after == before {
		t.Errorf("a default restore left the target's binlog at %q: replicas would miss it", after)
	}

	dst.Exec(t, "CREATE USER loader@'%'", "GRANT ALL PRIVILEGES ON rt_x.* TO loader@'%'", "GRANT ALL PRIVILEGES ON rt2_x.* TO loader@'%'", "GRANT SELECT ON *.* TO loader@'%'")
	dsn := strings.Replace(dst.DSN, "tidemark@", "loader@", 1)
	_, err := smallPieces.Restore(context.Background(), engines.RestoreParams{DSN: dsn, Source: a, NoBinlog: true, RenameDB: map[string]string{"rt": "rt_x", "rt2": "rt2_x"}})
	if err == nil || !strings.Contains(err.Error(), "BINLOG ADMIN") || !strings.Contains(err.Error(), "--no-binlog") {
		t.Fatalf("--no-binlog without the privilege: %v", err)
	}
	t.Logf("refusal reads: %v", err)
	if got := queryStrings(t, dstDB, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'rt%_x'"); len(got) != 0 {
		t.Errorf("the refused restore created %v", got)
	}
}

// TestHistoryByTransactionID: a table system-versioned by transaction id
// (its period in InnoDB's BIGINT UNSIGNED ids, which cannot be written
// back) is backed up with its current rows only, and the backup says so;
// the restored copy holds exactly those rows. A table versioned by
// timestamps keeps its history (TestMariaDBDumpSame compares it through
// mariadb-dump --dump-history).
func TestHistoryByTransactionID(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "trxv-src")
	dst := startMariaDB(t, "trxv-dst")
	src.Exec(t, "CREATE DATABASE hv",
		"CREATE TABLE hv.tv (id INT PRIMARY KEY, v INT, s BIGINT UNSIGNED AS ROW START INVISIBLE, e BIGINT UNSIGNED AS ROW END INVISIBLE, PERIOD FOR SYSTEM_TIME(s, e)) ENGINE=InnoDB WITH SYSTEM VERSIONING",
		"INSERT INTO hv.tv VALUES (1, 1), (2, 2), (3, 3)",
		"UPDATE hv.tv SET v = v + 10 WHERE id <= 2",
		"DELETE FROM hv.tv WHERE id = 3")
	a, res := backupMem(t, smallPieces, engines.BackupParams{DSN: src.DSN, History: true})
	if w := strings.Join(res.Warnings, "\n"); !strings.Contains(w, "hv.tv is system-versioned by transaction id: only its current rows are backed up") {
		t.Errorf("backup warnings: %q", res.Warnings)
	}
	rres := restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN})
	if w := strings.Join(rres.Warnings, "\n"); !strings.Contains(w, "only the current rows of the system-versioned hv.tv (their periods are in transaction ids") {
		t.Errorf("restore warnings: %q", rres.Warnings)
	}
	const q = "SELECT CONCAT(id, '=', v) FROM hv.tv FOR SYSTEM_TIME ALL ORDER BY id, v"
	if got := strings.Join(queryStrings(t, dst.DB(t), q), " "); got != "1=11 2=12" {
		t.Errorf("restored rows, history included: %q, want the current rows 1=11 2=12", got)
	}
	if all := queryStrings(t, src.DB(t), "SELECT COUNT(*) FROM hv.tv FOR SYSTEM_TIME ALL"); strings.Join(all, "") != "5" {
		t.Errorf("the source's history: %v rows, want 5 (the test's premise)", all)
	}
	// CHECKSUM TABLE differs by the invisible transaction ids; the rows as
	// dumped are the backup's.
	if vr, err := smallPieces.Verify(context.Background(), engines.VerifyParams{DSN: dst.DSN, Source: a}); err != nil || vr.Tables != 1 {
		t.Errorf("verify: %+v, %v", vr, err)
	}
}

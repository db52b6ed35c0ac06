package apply

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// The pitfalls of peers' point-in-time recovery, one test each.

var baseSQL = []string{
	"CREATE DATABASE b",
	"CREATE TABLE b.t (id INT PRIMARY KEY, v VARCHAR(20))",
	"INSERT INTO b.t VALUES (1, 'one'), (2, 'two')",
	"INSERT INTO b.t VALUES (3, 'three')",
}

var afterBaseSQL = []string{
	"INSERT INTO b.t VALUES (4, 'four')",
	"UPDATE b.t SET v = 'TWO' WHERE id = 2",
	"CREATE TABLE b.u (a INT)",
	"INSERT INTO b.u VALUES (1), (1)",
	"FLUSH BINARY LOGS",
	"ALTER TABLE b.t ADD COLUMN w INT DEFAULT 7",
	"DELETE FROM b.t WHERE id = 1",
}

// TestStrictModeBaseWrittenByTarget: the target runs gtid_strict_mode with
// its binlog on, and wrote the base itself (as a logical restore does), so
// its binlog holds GTIDs of the same domain with higher sequence numbers
// than the source's transactions to apply. Strict mode would refuse to
// binlog them; both methods apply them and put strict mode back.
func TestStrictModeBaseWrittenByTarget(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "strict-src", ExtraArgs: []string{"--gtid-strict-mode=1"}})
	src.Exec(t, baseSQL...)
	base := record(t, "base", src.DB(t))
	src.Exec(t, afterBaseSQL...)
	end := record(t, "end", src.DB(t))
	files := snapshotFiles(t, binlogFiles(t, src), "")
	for _, method := range []string{MethodReplication, MethodSQL} {
		t.Run(method, func(t *testing.T) {
			dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "strict-" + method, ExtraArgs: []string{"--gtid-strict-mode=1", "--log-slave-updates=1"}})
			// The base, written by the target: its own GTIDs, far ahead.
			dst.Exec(t, append([]string{"SET SESSION gtid_seq_no = 1000"}, baseSQL...)...)
			db := dst.DB(t)
			var binlogPos string
			if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&binlogPos); err != nil || !strings.HasSuffix(binlogPos, "-1003") {
				t.Fatalf("the target's base: binlog position %s (%v)", binlogPos, err)
			}
			res := apply(t, Params{DSN: dst.DSN, Files: files, StartGTID: base.gtid, Method: method})
			sumsEqual(t, method, testenv.Checksums(t, db), end.sums)
			if len(res.Warnings) == 0 || !strings.Contains(strings.Join(res.Warnings, " "), "gtid_strict_mode") {
				t.Errorf("no warning about gtid_strict_mode: %v", res.Warnings)
			}
			var strict int
			if err := db.QueryRow("SELECT @@gtid_strict_mode").Scan(&strict); err != nil || strict != 1 {
				t.Errorf("gtid_strict_mode is %d after the apply (%v)", strict, err)
			}
			// The applied transactions are in the target's binlog under the
			// source's GTIDs.
			if err := db.QueryRow("SELECT @@gtid_binlog_state").Scan(&binlogPos); err != nil || !strings.Contains(binlogPos, lastGTID(end.gtid)) {
				t.Errorf("target's binlog state %s does not hold %s (%v)", binlogPos, end.gtid, err)
			}
			noPITRConnection(t, dst)
		})
	}
}

// TestTemporaryTableAcrossRotation: in MIXED format a temporary table is
// logged; created in one file and used after a rotation, it must be there
// when the next file is applied (one applier session for all files).
func TestTemporaryTableAcrossRotation(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "temp-src", ExtraArgs: []string{"--binlog-format=MIXED"}})
	db := src.DB(t)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	for _, s := range []string{
		"CREATE DATABASE tt",
		"CREATE TABLE tt.t (id INT PRIMARY KEY, v VARCHAR(20))",
		"CREATE TEMPORARY TABLE tt.tmp (id INT, v VARCHAR(20))",
		"INSERT INTO tt.tmp VALUES (1, 'a'), (2, 'b'), (3, 'c')",
		"FLUSH BINARY LOGS",
		"INSERT INTO tt.t SELECT * FROM tt.tmp", // logged as a statement reading tmp
		"FLUSH BINARY LOGS",
		"UPDATE tt.tmp SET v = 'z'",
		"INSERT INTO tt.t SELECT id + 10, v FROM tt.tmp",
		"DROP TEMPORARY TABLE tt.tmp",
	} {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	want := record(t, "end", db)
	if want.sums["tt.t"].Rows != 6 {
		t.Fatalf("source has %d rows", want.sums["tt.t"].Rows)
	}
	files := snapshotFiles(t, binlogFiles(t, src), "")
	if len(files) < 3 {
		t.Fatalf("%d files, want 3", len(files))
	}
	for _, method := range []string{MethodReplication, MethodSQL} {
		dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "temp-" + method})
		apply(t, Params{DSN: dst.DSN, Files: files, Method: method, Parallel: 2})
		sumsEqual(t, method, testenv.Checksums(t, dst.DB(t)), want.sums)
	}
}

// TestFailoverSameNamedFiles: after a failover the archive holds the old
// primary's binlog.000001 and the new primary's binlog.000001, which also
// repeats the old primary's transactions it replicated. Nothing is keyed
// by the name: the ordered list applies exactly once each, and a stop
// position in a repeated name needs the server that wrote it (or, with
// files of unknown servers, the file's index).
func TestFailoverSameNamedFiles(t *testing.T) {
	t.Parallel()
	a := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "failover-a"})
	b := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "failover-b", ExtraArgs: []string{"--log-slave-updates=1"}})
	a.Exec(t, "CREATE DATABASE f", "CREATE TABLE f.t (id INT PRIMARY KEY, who VARCHAR(10))", "CREATE TABLE f.log (who VARCHAR(10))",
		"INSERT INTO f.t VALUES (1, 'a')", "INSERT INTO f.log VALUES ('a')")
	b.Exec(t, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='tidemark', MASTER_USE_GTID=slave_pos", a.Port),
		"START SLAVE")
	a.Exec(t, "INSERT INTO f.t VALUES (2, 'a')", "INSERT INTO f.log VALUES ('a')")
	aDB, bDB := a.DB(t), b.DB(t)
	var aPos string
	if err := aDB.QueryRow("SELECT @@gtid_binlog_pos").Scan(&aPos); err != nil {
		t.Fatal(err)
	}
	var waited int
	if err := bDB.QueryRow("SELECT MASTER_GTID_WAIT(?, ?)", aPos, testenv.Wait(30*time.Second).Seconds()).Scan(&waited); err != nil || waited != 0 {
		t.Fatalf("replica did not catch up with %s: %d %v", aPos, waited, err)
	}
	// The failover: b becomes the primary.
	b.Exec(t, "STOP SLAVE", "RESET SLAVE ALL",
		"INSERT INTO f.t VALUES (3, 'b')", "INSERT INTO f.log VALUES ('b')")
	mid := record(t, "mid", bDB)
	b.Exec(t, "UPDATE f.t SET who = 'B'", "INSERT INTO f.log VALUES ('b')")
	end := record(t, "end", bDB)
	fa := snapshotFiles(t, binlogFiles(t, a), "a-")
	fb := snapshotFiles(t, binlogFiles(t, b), "b-")
	if fa[0].Name != fb[0].Name {
		t.Fatalf("expected same-named first files, got %s and %s", fa[0].Name, fb[0].Name)
	}
	files := append(fa, fb...)

	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "failover-dst"})
	_, err := Plan(context.Background(), Params{Files: files, Stop: Stop{File: mid.file, Pos: mid.pos}})
	if err == nil || !strings.Contains(err.Error(), "several files have that name") {
		t.Errorf("stop at an ambiguous file name: %v", err)
	}
	for i := range files {
		files[i].ServerID = a.ServerID
		if i >= len(fa) {
			files[i].ServerID = b.ServerID
		}
	}
	_, err = Plan(context.Background(), Params{Files: files, Stop: Stop{File: mid.file, Pos: mid.pos}})
	if want := fmt.Sprintf("servers %d and %d each wrote a file of that name (a failover); name the server too, as FILE:POS@SERVER_ID", a.ServerID, b.ServerID); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("stop at an ambiguous file name of known servers: %v", err)
	}
	if _, err = Plan(context.Background(), Params{Files: files, Stop: Stop{File: mid.file, ServerID: 424242, Pos: mid.pos}}); err == nil || !strings.Contains(err.Error(), "no file of that name was written by server 424242") {
		t.Errorf("stop in a file of a server that wrote none: %v", err)
	}
	if _, err = Plan(context.Background(), Params{Files: files, Stop: Stop{File: mid.file, FileIndex: len(fa) + 1, Pos: mid.pos}}); err != nil {
		t.Errorf("stop by file index: %v", err)
	}
	res := apply(t, Params{DSN: dst.DSN, Files: files, Stop: Stop{File: mid.file, ServerID: b.ServerID, Pos: mid.pos}})
	sumsEqual(t, "to the new primary's position", testenv.Checksums(t, dst.DB(t)), mid.sums)
	res = apply(t, Params{DSN: dst.DSN, Files: files, StartGTID: res.EndGTID})
	sumsEqual(t, "to the end", testenv.Checksums(t, dst.DB(t)), end.sums)
	if res.EndGTID != end.gtid {
		t.Errorf("end GTID %s, the new primary is at %s", res.EndGTID, end.gtid)
	}
}

// TestThenReplicateFrom: the restored target replicates from the live
// source from exactly the restored position.
func TestThenReplicateFrom(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "then-src"})
	src.Exec(t, baseSQL...)
	p := record(t, "p", src.DB(t))
	src.Exec(t, afterBaseSQL...)
	files := snapshotFiles(t, binlogFiles(t, src), "")
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "then-dst"})
	apply(t, Params{DSN: dst.DSN, Files: files, Stop: Stop{GTID: lastGTID(p.gtid)}, ThenReplicateFrom: src.DSN})
	src.Exec(t, "INSERT INTO b.t (id, v) VALUES (10, 'live')", "DROP TABLE b.u")
	var pos string
	if err := src.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	db := dst.DB(t)
	var waited int
	if err := db.QueryRow("SELECT MASTER_GTID_WAIT(?, ?)", pos, testenv.Wait(30*time.Second).Seconds()).Scan(&waited); err != nil || waited != 0 {
		st, _ := dst.DB(t).Query("SHOW SLAVE STATUS")
		_ = st
		t.Fatalf("restored target did not catch up with %s: %d %v", pos, waited, err)
	}
	testenv.Compare(t, src.DB(t), db, "b")
}

// TestTargetWithTheSourcesServerID: a replica drops events that carry its
// own server id; restoring a server's binlog onto a server with the same
// id (the same host, rebuilt) must apply them all the same.
func TestTargetWithTheSourcesServerID(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "sameid-src"})
	src.Exec(t, baseSQL...)
	src.Exec(t, afterBaseSQL...)
	end := record(t, "end", src.DB(t))
	files := snapshotFiles(t, binlogFiles(t, src), "")
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "sameid-dst", ExtraArgs: []string{"--server-id=" + strconv.FormatUint(uint64(src.ServerID), 10)}})
	res := apply(t, Params{DSN: dst.DSN, Files: files, Method: MethodReplication})
	sumsEqual(t, "same server id", testenv.Checksums(t, dst.DB(t)), end.sums)
	var id uint32
	if err := dst.DB(t).QueryRow("SELECT @@server_id").Scan(&id); err != nil || id != src.ServerID {
		t.Errorf("target's server_id is %d after the apply, want %d back (%v)", id, src.ServerID, err)
	}
	t.Logf("warnings: %v", res.Warnings)
}

// TestCancel: cancelling removes the replication connection and puts the
// parallel applier setting back.
func TestCancel(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cancel-src"})
	src.Exec(t, baseSQL...)
	files := snapshotFiles(t, binlogFiles(t, src), "")
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "cancel-dst"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := Apply(ctx, Params{DSN: dst.DSN, Files: files, Parallel: 4, Progress: func(p Progress) {
		if p.Phase == "apply" {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled apply: %v", err)
	}
	noPITRConnection(t, dst)
}

// TestAutoFallsBackToSQL: a target account that may not set up replication
// (no SUPER, no REPLICATION SLAVE ADMIN) gets the sql method, with a
// warning that says it is slower and what to grant; Method "replication"
// refuses instead.
func TestAutoFallsBackToSQL(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "fallback-src"})
	src.Exec(t, baseSQL...)
	src.Exec(t, afterBaseSQL...)
	end := record(t, "end", src.DB(t))
	files := snapshotFiles(t, binlogFiles(t, src), "")
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "fallback-dst"})
	dst.Exec(t, "CREATE USER 'restorer'@'%' IDENTIFIED BY 'pw'",
		"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, BINLOG REPLAY ON *.* TO 'restorer'@'%'")
	dsn := fmt.Sprintf("restorer:pw@tcp(127.0.0.1:%d)/", dst.Port)
	_, err := Apply(context.Background(), Params{DSN: dsn, Files: files, Method: MethodReplication})
	if err == nil || !strings.Contains(err.Error(), "CHANGE MASTER") {
		t.Fatalf("replication method without the privilege: %v", err)
	}
	if sums := testenv.Checksums(t, dst.DB(t)); len(sums) != 0 {
		t.Fatalf("the refused apply wrote tables: %v", sums)
	}
	res := apply(t, Params{DSN: dsn, Files: files})
	if res.Method != MethodSQL || !strings.Contains(strings.Join(res.Warnings, " "), "slower") {
		t.Errorf("method %q, warnings %v; want sql with a warning", res.Method, res.Warnings)
	}
	sumsEqual(t, "fallback", testenv.Checksums(t, dst.DB(t)), end.sums)
	t.Logf("warnings: %v", res.Warnings)
}

// TestLargeEvent: a row event larger than a protocol packet (16 MiB) is
// served split over several packets and applied whole, by both methods.
func TestLargeEvent(t *testing.T) {
	t.Parallel()
	args := []string{"--max-allowed-packet=256M"}
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "large-src", ExtraArgs: args})
	src.Exec(t, "CREATE DATABASE l", "CREATE TABLE l.t (id INT PRIMARY KEY, b LONGBLOB)",
		"INSERT INTO l.t VALUES (1, REPEAT('x', 17000000))", "INSERT INTO l.t VALUES (2, 'small')")
	end := record(t, "end", src.DB(t))
	files := snapshotFiles(t, binlogFiles(t, src), "")
	for _, method := range []string{MethodReplication, MethodSQL} {
		dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "large-" + method, ExtraArgs: args})
		apply(t, Params{DSN: dst.DSN, Files: files, Method: method})
		sumsEqual(t, method, testenv.Checksums(t, dst.DB(t)), end.sums)
	}
}

// TestStartAtFilePosition: a base known by its binlog coordinates (no
// GTIDs) starts the roll-forward at exactly that event; a position inside
// a transaction is refused.
func TestStartAtFilePosition(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "filepos-src"})
	src.Exec(t, baseSQL...)
	base := record(t, "base", src.DB(t))
	src.Exec(t, afterBaseSQL...)
	end := record(t, "end", src.DB(t))
	files := snapshotFiles(t, binlogFiles(t, src), "")
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "filepos-dst"})
	apply(t, Params{DSN: dst.DSN, Files: files, Stop: Stop{File: base.file, Pos: base.pos}})
	sumsEqual(t, "base", testenv.Checksums(t, dst.DB(t)), base.sums)
	if _, err := Plan(context.Background(), Params{Files: files, StartFile: base.file, StartPos: base.pos - 10}); err == nil || !strings.Contains(err.Error(), "not the start of an event") && !strings.Contains(err.Error(), "inside the transaction") {
		t.Errorf("start inside an event: %v", err)
	}
	res := apply(t, Params{DSN: dst.DSN, Files: files, StartFile: base.file, StartPos: base.pos})
	sumsEqual(t, "end", testenv.Checksums(t, dst.DB(t)), end.sums)
	if res.EndGTID != end.gtid {
		t.Errorf("end GTID %s, want %s", res.EndGTID, end.gtid)
	}
}

// TestSkippingReplicaSettings: a target whose replica settings would skip
// errors silently (slave_skip_errors, a startup option) is not applied to
// by its replication applier: Method "" falls back to the sql method with
// a warning naming the setting. slave_exec_mode=IDEMPOTENT is set to
// STRICT for the apply and put back.
func TestSkippingReplicaSettings(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "skip-src"})
	src.Exec(t, baseSQL...)
	src.Exec(t, afterBaseSQL...)
	end := record(t, "end", src.DB(t))
	files := snapshotFiles(t, binlogFiles(t, src), "")

	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "skip-dst", ExtraArgs: []string{"--slave-skip-errors=1062,1032"}})
	res := apply(t, Params{DSN: dst.DSN, Files: files})
	if res.Method != MethodSQL || !strings.Contains(strings.Join(res.Warnings, " "), "slave_skip_errors=1032,1062") {
		t.Errorf("method %q, warnings %v", res.Method, res.Warnings)
	}
	sumsEqual(t, "skip errors", testenv.Checksums(t, dst.DB(t)), end.sums)

	// IDEMPOTENT would hide a row the target lacks; STRICT stops.
	dst2 := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "idem-dst"})
	dst2.Exec(t, "SET GLOBAL slave_exec_mode = 'IDEMPOTENT'")
	base := lastGTID(end.gtid)
	// The target holds the base (after baseSQL, sequence 4) but lacks row 2,
	// which the files update.
	base = base[:strings.LastIndex(base, "-")+1] + "4"
	dst2.Exec(t, "CREATE DATABASE b", "CREATE TABLE b.t (id INT PRIMARY KEY, v VARCHAR(20))", "INSERT INTO b.t VALUES (1, 'one'), (3, 'three')")
	_, err := Apply(context.Background(), Params{DSN: dst2.DSN, Files: files, StartGTID: base, Method: MethodReplication})
	if err == nil || !strings.Contains(err.Error(), "applier stopped") {
		t.Errorf("apply onto a target that lacks a row: %v", err)
	}
	var mode string
	if err := dst2.DB(t).QueryRow("SELECT @@slave_exec_mode").Scan(&mode); err != nil || mode != "IDEMPOTENT" {
		t.Errorf("slave_exec_mode is %q after the apply (%v)", mode, err)
	}
	noPITRConnection(t, dst2)
}

// TestReceiverReconnects: the connection to the served source breaks in the
// middle of the stream (mid-transaction); the target's receiver reconnects
// from its position and the source goes on from there: nothing twice,
// nothing missing. Not parallel: it sets package test hooks.
func TestReceiverReconnects(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "reconnect-src"})
	src.Exec(t, baseSQL...)
	src.Exec(t, "CREATE TABLE b.n (v INT)") // no key: a repeated row shows
	for i := 0; i < 60; i++ {
		src.Exec(t, fmt.Sprintf("INSERT INTO b.n VALUES (%d), (%d)", i, i))
	}
	src.Exec(t, "FLUSH BINARY LOGS", "UPDATE b.n SET v = v + 1", "INSERT INTO b.n SELECT v FROM b.n WHERE v < 10")
	end := record(t, "end", src.DB(t))
	files := snapshotFiles(t, binlogFiles(t, src), "")
	defer func() { testHookCut, testHookDumps = nil, nil }()
	// Over TLS too: a cut TLS session is a network failure to reconnect
	// from, not a TLS refusal that ends the apply.
	for _, useTLS := range []bool{false, true} {
		var sent, cuts atomic.Int64
		testHookCut = func() bool {
			// Cut twice: inside a transaction of the first file, and again
			// right after the reconnect.
			n := sent.Add(1)
			if n == 101 || n == 140 {
				cuts.Add(1)
				return true
			}
			return false
		}
		var dumps atomic.Int64
		testHookDumps = func(n int64) { dumps.Store(n) }
		p := Params{Files: files, Method: MethodReplication, Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		if useTLS {
			dst, _ := testenv.StartMariaDBTLS(t, testenv.MariaDBOptions{Name: "reconnect-tls-dst"})
			p.DSN, p.TLS = dst.DSN, SourceTLS{Mode: TLSOn}
		} else {
			p.DSN = testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "reconnect-dst"}).DSN
		}
		res := apply(t, p)
		db, err := sql.Open("mysql", p.DSN)
		if err != nil {
			t.Fatal(err)
		}
		sumsEqual(t, fmt.Sprintf("after reconnects (TLS %v)", useTLS), testenv.Checksums(t, db), end.sums)
		_ = db.Close()
		if cuts.Load() != 2 || dumps.Load() < 3 {
			t.Errorf("TLS %v: %d cuts, %d dumps served; want 2 cuts and 3 dumps", useTLS, cuts.Load(), dumps.Load())
		}
		if useTLS && (res.TLS == nil || res.TLS.Sessions < 3) {
			t.Errorf("TLS: %+v, want a TLS session per dump", res.TLS)
		}
	}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestTwoDomains: transactions of two GTID domains interleave; the start
// position names both and every Apply continues each domain exactly after
// its own last transaction, whichever comes first in the stream.
func TestTwoDomains(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "domains-src"})
	src.Exec(t, "CREATE DATABASE d", "CREATE TABLE d.a (v INT)", "CREATE TABLE d.b (v INT)")
	for i := 0; i < 4; i++ {
		src.Exec(t, fmt.Sprintf("INSERT INTO d.a VALUES (%d)", i),
			"SET SESSION gtid_domain_id = 1", fmt.Sprintf("INSERT INTO d.b VALUES (%d)", i), "SET SESSION gtid_domain_id = 0")
	}
	mid := record(t, "mid", src.DB(t))
	if !strings.Contains(mid.gtid, ",") {
		t.Fatalf("expected two domains in %s", mid.gtid)
	}
	src.Exec(t, "SET SESSION gtid_domain_id = 1", "INSERT INTO d.b VALUES (10)", "SET SESSION gtid_domain_id = 0",
		"FLUSH BINARY LOGS", "INSERT INTO d.a VALUES (10)", "SET SESSION gtid_domain_id = 1", "INSERT INTO d.b VALUES (11)")
	end := record(t, "end", src.DB(t))
	files := snapshotFiles(t, binlogFiles(t, src), "")
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "domains-dst"})
	// To the middle by the domain-1 GTID that ends it, then on from there.
	res := apply(t, Params{DSN: dst.DSN, Files: files, Stop: Stop{GTID: strings.Split(mid.gtid, ",")[1]}})
	if res.EndGTID != mid.gtid {
		t.Errorf("end GTID %s, want %s", res.EndGTID, mid.gtid)
	}
	sumsEqual(t, "mid", testenv.Checksums(t, dst.DB(t)), mid.sums)
	res = apply(t, Params{DSN: dst.DSN, Files: files, StartGTID: mid.gtid, Parallel: 2})
	sumsEqual(t, "end", testenv.Checksums(t, dst.DB(t)), end.sums)
	if res.EndGTID != end.gtid || res.Transactions != 3 {
		t.Errorf("end GTID %s after %d transactions, want %s after 3", res.EndGTID, res.Transactions, end.gtid)
	}
}

// TestReceiverCannotConnect: a target that cannot reach or log into the
// served source (it would retry for ever) fails the apply with the
// receiver's error, and the connection is removed. Not parallel: it sets
// package test hooks.
func TestReceiverCannotConnect(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "noconn-src"})
	src.Exec(t, baseSQL...)
	files := snapshotFiles(t, binlogFiles(t, src), "")
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "noconn-dst"})
	testHookRefuseLogin, ioGrace = true, 3*time.Second
	defer func() { testHookRefuseLogin, ioGrace = false, 20*time.Second }()
	_, err := Apply(context.Background(), Params{DSN: dst.DSN, Files: files, Method: MethodReplication})
	if err == nil || !strings.Contains(err.Error(), "cannot connect to the replication source") || !strings.Contains(err.Error(), "Access denied") {
		t.Fatalf("apply with a source the target cannot log into: %v", err)
	}
	t.Log(err)
	noPITRConnection(t, dst)
	if sums := testenv.Checksums(t, dst.DB(t)); len(sums) != 0 {
		t.Errorf("tables on the target: %v", sums)
	}
}

// TestServeAddrLocalhost: a serve address named "localhost" must still
// reach Tidemark's source over TCP. The server's replica, given
// MASTER_HOST='localhost', would take its own Unix socket (the client
// library's rule for that name) and replicate from itself.
func TestServeAddrLocalhost(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "lh-src"})
	src.Exec(t, baseSQL...)
	base := record(t, "base", src.DB(t))
	src.Exec(t, afterBaseSQL...)
	end := record(t, "end", src.DB(t))
	files := snapshotFiles(t, binlogFiles(t, src), "")
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "lh-dst"})
	dst.Exec(t, baseSQL...)
	apply(t, Params{DSN: dst.DSN, Files: files, StartGTID: base.gtid, Method: MethodReplication, ServeAddr: "localhost:0"})
	sumsEqual(t, "serve address localhost", testenv.Checksums(t, dst.DB(t)), end.sums)
}

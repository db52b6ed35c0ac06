package apply

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// workload writes rows, DDL and a rotation into db in steps and records a
// restore point after each step. Every third point's time is a whole
// second that no earlier transaction is after and no later one is at.
func workload(t *testing.T, m *testenv.MariaDB, steps int) []point {
	t.Helper()
	db := m.DB(t)
	exec := func(stmts ...string) {
		t.Helper()
		for _, s := range stmts {
			if _, err := db.Exec(s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	exec("CREATE DATABASE w",
		"CREATE TABLE w.pk (id INT PRIMARY KEY, v VARCHAR(40), n INT)",
		// No primary key: a transaction applied twice shows in its checksum.
		"CREATE TABLE w.nopk (v VARCHAR(40), n INT)")
	var points []point
	id := 0
	for step := 0; step < steps; step++ {
		rows := 20
		if testing.Short() {
			rows = 5
		}
		for i := 0; i < rows; i++ {
			id++
			exec(fmt.Sprintf("INSERT INTO w.pk (id, v, n) VALUES (%d, 'v%d', %d)", id, id, step),
				fmt.Sprintf("INSERT INTO w.nopk VALUES ('v%d', %d)", id, step))
		}
		// One multi-statement transaction.
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{
			fmt.Sprintf("UPDATE w.pk SET n = n + 1 WHERE id %% 3 = %d", step%3),
			fmt.Sprintf("DELETE FROM w.nopk WHERE n = %d LIMIT 2", step),
			fmt.Sprintf("INSERT INTO w.nopk SELECT v, n + 100 FROM w.pk WHERE id %% 7 = %d", step%7),
		} {
			if _, err := tx.Exec(s); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		switch step % 5 { // DDL between points
		case 1:
			exec(fmt.Sprintf("CREATE TABLE w.t%d (id INT PRIMARY KEY, s TEXT)", step),
				fmt.Sprintf("INSERT INTO w.t%d VALUES (1, 'one'), (2, 'two')", step))
		case 2:
			exec(fmt.Sprintf("ALTER TABLE w.pk ADD COLUMN c%d INT DEFAULT %d", step, step),
				fmt.Sprintf("UPDATE w.pk SET c%d = id WHERE id %% 2 = 0", step))
		case 3:
			exec(fmt.Sprintf("DROP TABLE w.t%d", step-2), "FLUSH BINARY LOGS", "INSERT INTO w.nopk VALUES ('after rotation', 0)")
		case 4:
			exec(fmt.Sprintf("CREATE DATABASE w%d", step), fmt.Sprintf("CREATE TABLE w%d.x (a INT) ENGINE=MyISAM", step),
				fmt.Sprintf("INSERT INTO w%d.x VALUES (1), (2)", step))
		}
		p := record(t, fmt.Sprintf("step %d", step), db)
		if step%3 == 2 {
			// A time point: the recorded second is the last transaction's
			// (or later); the next transaction is in a later second.
			p.time = time.Unix(time.Now().Unix(), 0)
			time.Sleep(time.Until(p.time.Add(time.Second + 20*time.Millisecond)))
		}
		points = append(points, p)
	}
	return points
}

// stopOf cycles the kind of stop: GTID, position, time (when recorded).
func stopOf(i int, p point) Stop {
	switch {
	case !p.time.IsZero():
		return Stop{Time: p.time}
	case i%2 == 0:
		return Stop{GTID: lastGTID(p.gtid)}
	}
	return Stop{File: p.file, Pos: p.pos}
}

func lastGTID(pos string) string { return strings.Split(pos, ",")[0] }

// TestRollForwardToPoints rolls one target per method forward point by
// point, each Apply starting exactly at the previous stop (inside a file:
// a replay from the file's start, peers' bug, applies transactions twice,
// which the table without a key shows), and compares every point's table
// checksums with the source's at that point. DDL,
// a rotation and a table without a primary key are in the stream; the
// stop kinds alternate between GTID, position and time.
func TestRollForwardToPoints(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "points-src"})
	steps := 9
	if testing.Short() {
		steps = 6
	}
	points := workload(t, src, steps)
	files := snapshotFiles(t, binlogFiles(t, src), "")
	if len(files) < 2 {
		t.Fatalf("the workload should have rotated the binlog: %d files", len(files))
	}
	for _, method := range []string{MethodReplication, MethodSQL} {
		t.Run(method, func(t *testing.T) {
			dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "points-" + method})
			dstDB := dst.DB(t)
			start := ""
			for i, p := range points {
				par := 0
				if i%2 == 1 {
					par = 4
				}
				stop := stopOf(i, p)
				res := apply(t, Params{DSN: dst.DSN, Files: files, StartGTID: start, Stop: stop, Method: method, Parallel: par})
				if res.Method != method {
					t.Errorf("%s: applied by %q", p.name, res.Method)
				}
				if res.EndGTID != p.gtid {
					t.Errorf("%s (stop %s): end GTID %s, the source was at %s", p.name, stop, res.EndGTID, p.gtid)
				}
				sumsEqual(t, fmt.Sprintf("%s, %s (stop %s)", method, p.name, stop), testenv.Checksums(t, dstDB), p.sums)
				start = p.gtid
			}
			var n int
			if err := dstDB.QueryRow("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='w'").Scan(&n); err != nil || n == 0 {
				t.Fatalf("target has %d tables in w (%v)", n, err)
			}
		})
	}

	// A fresh target straight to a middle point, by time, with no start.
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "points-fresh"})
	mid := points[5]
	res := apply(t, Params{DSN: dst.DSN, Files: files, Stop: Stop{Time: mid.time}, Parallel: 2})
	sumsEqual(t, "fresh target to "+mid.name, testenv.Checksums(t, dst.DB(t)), mid.sums)
	if res.EndGTID != mid.gtid {
		t.Errorf("fresh target: end GTID %s, want %s", res.EndGTID, mid.gtid)
	}
	noPITRConnection(t, dst)
}

// noPITRConnection fails when Apply left its replication connection or
// changed slave_parallel_threads.
func noPITRConnection(t *testing.T, m *testenv.MariaDB) {
	t.Helper()
	db := m.DB(t)
	rows, err := db.Query("SHOW ALL SLAVES STATUS")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	cols, _ := rows.Columns()
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		for i, c := range cols {
			if c == "Connection_name" && string(vals[i]) == pitrConnection {
				t.Errorf("replication connection %s left on the target", pitrConnection)
			}
		}
	}
	var par int
	if err := db.QueryRow("SELECT @@slave_parallel_threads").Scan(&par); err != nil || par != 0 {
		t.Errorf("slave_parallel_threads is %d after the apply (%v), want 0", par, err)
	}
}

// TestRefusedTargets: stops the files cannot reach are refused by Plan,
// and by Apply before it writes anything, with the available range.
func TestRefusedTargets(t *testing.T) {
	t.Parallel()
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "refuse-src"})
	src.Exec(t, "CREATE DATABASE r", "CREATE TABLE r.t (id INT PRIMARY KEY)", "INSERT INTO r.t VALUES (1)")
	db := src.DB(t)
	p1 := record(t, "p1", db)
	src.Exec(t, "FLUSH BINARY LOGS", "INSERT INTO r.t VALUES (2)", "INSERT INTO r.t VALUES (3)")
	p2 := record(t, "p2", db)
	src.Exec(t, "FLUSH BINARY LOGS", "INSERT INTO r.t VALUES (4)")
	p3 := record(t, "p3", db)
	files := snapshotFiles(t, binlogFiles(t, src), "")
	if len(files) != 3 {
		t.Fatalf("%d binlog files, want 3", len(files))
	}
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "refuse-dst"})
	ctx := context.Background()
	last := time.Now().Add(time.Hour)
	g1, g2, g3 := lastGTID(p1.gtid), lastGTID(p2.gtid), lastGTID(p3.gtid)
	seq3 := g3[strings.LastIndex(g3, "-")+1:]
	beyond := g3[:strings.LastIndex(g3, "-")+1] + "99" + seq3
	for _, c := range []struct {
		name  string
		p     Params
		wants []string
	}{
		{"time after the last event", Params{Files: files, Stop: Stop{Time: last}}, []string{"after the last event", "GTID " + g3}},
		{"time before the base", Params{Files: files, StartGTID: p2.gtid, Stop: Stop{Time: time.Unix(0, 0)}}, []string{"before the start"}},
		{"time before the base's time", Params{Files: files, StartGTID: p2.gtid, StartTime: time.Now(), Stop: Stop{Time: time.Now().Add(-time.Hour)}}, []string{"before the start"}},
		{"GTID not in the files", Params{Files: files, Stop: Stop{GTID: beyond}}, []string{"not in the files"}},
		{"GTID before the start", Params{Files: files, StartGTID: p2.gtid, Stop: Stop{GTID: g1}}, []string{"before the start"}},
		{"position after the file's end", Params{Files: files, Stop: Stop{File: files[2].Name, Pos: 1 << 30}}, []string{"after the end of " + files[2].Name}},
		{"position before the start", Params{Files: files, StartGTID: p2.gtid, Stop: Stop{File: files[0].Name, Pos: p1.pos}}, []string{"before the start"}},
		{"a gap (file 2 missing)", Params{Files: []File{files[0], files[2]}}, []string{"starts after GTID " + g2, "gaps"}},
		{"base before the oldest file", Params{Files: files[2:], StartGTID: p1.gtid}, []string{"starts after GTID " + g2, "reach only " + g1}},
	} {
		c.p.DSN = dst.DSN
		_, err := Plan(ctx, c.p)
		var ue *UnreachableError
		if !errors.Is(err, ErrUnreachable) || !errors.As(err, &ue) {
			t.Errorf("%s: Plan: %v, want ErrUnreachable", c.name, err)
			continue
		}
		for _, w := range c.wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", c.name, err, w)
			}
		}
		if _, err := Apply(ctx, c.p); !errors.Is(err, ErrUnreachable) {
			t.Errorf("%s: Apply: %v, want ErrUnreachable", c.name, err)
		}
		t.Logf("%s: %v", c.name, err)
	}
	// Bad input: clear errors, not refusals.
	for _, c := range []struct {
		name string
		p    Params
		want string
	}{
		{"two kinds of stop", Params{Files: files, Stop: Stop{GTID: g1, Time: time.Now()}}, "give exactly one"},
		{"malformed GTID", Params{Files: files, Stop: Stop{GTID: "0-1"}}, "domain-server-sequence"},
		{"malformed start", Params{Files: files, StartGTID: "abc"}, "domain-server-sequence"},
		{"unknown file", Params{Files: files, Stop: Stop{File: "nope.000001", Pos: 4}}, "not among the 3 files"},
		{"not an event boundary", Params{Files: files, Stop: Stop{File: files[0].Name, Pos: p1.pos - 1}}, "not the start of an event"},
		{"no files", Params{}, "no binlog files"},
		{"bad method", Params{Files: files, Method: "fast"}, "unknown method"},
	} {
		c.p.DSN = dst.DSN
		_, err := Apply(ctx, c.p)
		if err == nil || errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	if _, err := ParseTime("yesterday", time.UTC); err == nil || !strings.Contains(err.Error(), "RFC 3339") {
		t.Errorf("ParseTime(yesterday): %v", err)
	}
	if tm, err := ParseTime("2026-12-03 13:00:00", time.UTC); err != nil || !tm.Equal(time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC)) {
		t.Errorf("ParseTime: %v %v", tm, err)
	}
	// Nothing was written by any of them.
	if sums := testenv.Checksums(t, dst.DB(t)); len(sums) != 0 {
		t.Errorf("the target has tables after refused applies: %v", sums)
	}
	noPITRConnection(t, dst)

	// Within reach despite the gap: the stop is before it.
	res := apply(t, Params{DSN: dst.DSN, Files: []File{files[0], files[2]}, Stop: Stop{GTID: g1}})
	sumsEqual(t, "stop before the gap", testenv.Checksums(t, dst.DB(t)), p1.sums)
	t.Logf("before the gap: %+v", res)
}

package logical

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// sequenceSchema holds a sequence of every option and state: advanced past
// a cache boundary, cycled, restarted below its start, run out, untouched.
var sequenceSchema = []string{
	"CREATE DATABASE sq",
	"USE sq",
	"CREATE SEQUENCE s_step START WITH 100 INCREMENT BY 7",
	"SELECT NEXTVAL(s_step), NEXTVAL(s_step)",
	"CREATE SEQUENCE s_neg START WITH -5 INCREMENT BY -3 MINVALUE -1000 MAXVALUE 0 CACHE 3 CYCLE",
	"SELECT NEXTVAL(s_neg), NEXTVAL(s_neg), NEXTVAL(s_neg), NEXTVAL(s_neg), NEXTVAL(s_neg)", // past the 3-value cache
	"CREATE SEQUENCE s_nolimits START WITH 10 NOMINVALUE NOMAXVALUE NOCACHE NOCYCLE",
	"SELECT NEXTVAL(s_nolimits), NEXTVAL(s_nolimits), NEXTVAL(s_nolimits)",
	"CREATE SEQUENCE s_aria START WITH 50 INCREMENT BY 2 MINVALUE 10 MAXVALUE 1000000 CACHE 1 ENGINE=Aria COMMENT='an Aria sequence'",
	"SELECT NEXTVAL(s_aria)",
	"CREATE SEQUENCE s_inno START WITH 1 INCREMENT BY 1 CACHE 5 NOCYCLE ENGINE=InnoDB",
	"SELECT NEXTVAL(s_inno), NEXTVAL(s_inno), NEXTVAL(s_inno), NEXTVAL(s_inno), NEXTVAL(s_inno), NEXTVAL(s_inno), NEXTVAL(s_inno)",
	"CREATE SEQUENCE s_cycled START WITH 1 MINVALUE 1 MAXVALUE 3 CACHE 2 CYCLE",
	"SELECT NEXTVAL(s_cycled), NEXTVAL(s_cycled), NEXTVAL(s_cycled), NEXTVAL(s_cycled), NEXTVAL(s_cycled)", // 1 2 3 1 2: round 1
	// RESTART below START: SETVAL(s, 5, 0) on a new sequence starting at
	// 100 is ignored, which is how mariadb-dump loses this one.
	"CREATE SEQUENCE s_restart START WITH 100 MINVALUE 1 CACHE 10",
	"ALTER SEQUENCE s_restart RESTART WITH 5",
	"CREATE SEQUENCE s_out MAXVALUE 3 NOCACHE NOCYCLE",
	"SELECT NEXTVAL(s_out), NEXTVAL(s_out), NEXTVAL(s_out)",
	"CREATE SEQUENCE s_fresh",
	"CREATE SEQUENCE s_top START WITH 9223372036854775000 INCREMENT BY 100 MAXVALUE 9223372036854775806 CACHE 2",
	"SELECT NEXTVAL(s_top)",
	// A default that draws from a sequence that sorts after the table:
	// the sequence must exist when the table is created.
	"CREATE TABLE a_orders (id BIGINT NOT NULL DEFAULT NEXTVAL(z_ids) PRIMARY KEY, v INT)",
}

func loadSequences(t *testing.T, db *sql.DB) {
	t.Helper()
	// z_ids first: a_orders needs it.
	stmts := append([]string{"CREATE DATABASE sq", "CREATE SEQUENCE sq.z_ids START WITH 1000 INCREMENT BY 10"}, sequenceSchema[1:]...)
	stmts = append(stmts, "INSERT INTO sq.a_orders (v) VALUES (1), (2), (3)")
	c, err := db.Conn(context.Background()) // one session: USE sq holds
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	for _, s := range stmts {
		if _, err := c.ExecContext(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// sequenceState is what restore must carry over: the definition as the
// server prints it and the state row.
func sequenceState(t *testing.T, db *sql.DB, schema string) map[string]string {
	t.Helper()
	names := queryStrings(t, db, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'SEQUENCE'", schema)
	out := map[string]string{}
	for _, n := range names {
		var name, create string
		if err := db.QueryRow("SHOW CREATE SEQUENCE "+qname(schema, n)).Scan(&name, &create); err != nil {
			t.Fatalf("SHOW CREATE SEQUENCE %s.%s: %v", schema, n, err)
		}
		row := queryStrings(t, db, "SELECT * FROM "+qname(schema, n))
		out[n] = create + "\nrow: " + strings.Join(row, "")
	}
	return out
}

// nextValues draws three values, or the error that stops the drawing.
func nextValues(db *sql.DB, schema, name string) string {
	var out []string
	for range 3 {
		var v string
		if err := db.QueryRow("SELECT NEXTVAL(" + qname(schema, name) + ")").Scan(&v); err != nil {
			out = append(out, fmt.Sprintf("error %d", mysqlx.ServerErrorNumber(err)))
			break
		}
		out = append(out, v)
	}
	return strings.Join(out, " ")
}

// TestSequencesExact restores sequences of every option whole, under new
// names, filtered and over changed copies: each must come back with the
// source's definition and state row, and then hand out the values the
// source hands out.
func TestSequencesExact(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "seq-src")
	dst := startMariaDB(t, "seq-dst")
	srcDB, dstDB := src.DB(t), dst.DB(t)
	loadSequences(t, srcDB)
	a, _ := backupMem(t, &Engine{}, engines.BackupParams{DSN: src.DSN, Databases: []string{"sq"}})

	restoreMem(t, &Engine{}, a, engines.RestoreParams{DSN: dst.DSN})
	restoreMem(t, &Engine{}, a, engines.RestoreParams{DSN: dst.DSN, Databases: []string{"sq"}, RenameDB: map[string]string{"sq": "sq_copy"}})
	restoreMem(t, &Engine{}, a, engines.RestoreParams{DSN: dst.DSN, Tables: []string{"sq.s_neg", "sq.s_cycled", "sq.s_restart"},
		RenameDB: map[string]string{"sq": "sq_part"}})
	// Change a copy, then restore over it.
	if _, err := dstDB.Exec("SELECT NEXTVAL(sq_copy.s_step), NEXTVAL(sq_copy.s_neg), NEXTVAL(sq_copy.s_cycled); ALTER SEQUENCE sq_copy.s_step INCREMENT BY 1 RESTART WITH 1"); err != nil {
		t.Fatal(err)
	}
	restoreMem(t, &Engine{}, a, engines.RestoreParams{DSN: dst.DSN, DropExisting: true, RenameDB: map[string]string{"sq": "sq_copy"}})

	want := sequenceState(t, srcDB, "sq")
	if len(want) != 11 {
		t.Fatalf("the source holds %d sequences, want 11", len(want))
	}
	targets := map[string][]string{"sq": nil, "sq_copy": nil, "sq_part": {"s_neg", "s_cycled", "s_restart"}}
	for target, only := range targets {
		got := sequenceState(t, dstDB, target)
		if only != nil && len(got) != len(only) {
			t.Errorf("%s holds %d sequences, want %d", target, len(got), len(only))
		}
		for name, w := range want {
			if only != nil && !strings.Contains(strings.Join(only, ","), name) {
				continue
			}
			if got[name] != w {
				t.Errorf("sequence %s.%s:\nsource: %s\nrestored: %s", target, name, w, got[name])
			}
		}
	}
	var create string
	if err := dstDB.QueryRow("SELECT COLUMN_DEFAULT FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'sq_copy' AND TABLE_NAME = 'a_orders' AND COLUMN_NAME = 'id'").Scan(&create); err != nil || !strings.Contains(create, "`sq_copy`.`z_ids`") {
		t.Errorf("the renamed table's default draws from %q (%v), want sq_copy.z_ids", create, err)
	}

	// Exact: each restored copy hands out what the source hands out next.
	// The source's cached values (s_inno: 8 to 10, drawn 1 to 7 with cache
	// 5) are gone from the source too: the backup lock's flush closed its
	// tables, which drops sequence caches, so it continues from
	// next_not_cached_value, as the copies do.
	for name := range want {
		w := nextValues(srcDB, "sq", name)
		if name == "s_inno" && w != "11 12 13" {
			t.Errorf("the source's s_inno continues with %s after the backup, want 11 12 13 (its cache dropped)", w)
		}
		for target, only := range targets {
			if only != nil && !strings.Contains(strings.Join(only, ","), name) {
				continue
			}
			if got := nextValues(dstDB, target, name); got != w {
				t.Errorf("next values of %s.%s: restored %s, source %s", target, name, got, w)
			}
		}
	}
	if _, err := dstDB.Exec("INSERT INTO sq_copy.a_orders (v) VALUES (4)"); err != nil {
		t.Errorf("insert drawing from the renamed sequence: %v", err)
	}

	// A table without the sequence its default draws from: refused, saying why.
	_, err := (&Engine{}).Restore(context.Background(), engines.RestoreParams{DSN: dst.DSN, Source: a, Tables: []string{"sq.a_orders"}, RenameDB: map[string]string{"sq": "sq_alone"}})
	if err == nil || !strings.Contains(err.Error(), "draws from a sequence that is not restored") {
		t.Errorf("restore of a table without its sequence: %v", err)
	}

	// A backup taken before sequences were exact: CREATE TABLE and the next
	// value only. Restored with the default options, the next value where
	// SETVAL takes it, and a warning per sequence.
	legacy := legacySequences(t, srcDB, a)
	res := restoreMem(t, &Engine{}, legacy, engines.RestoreParams{DSN: dst.DSN, Tables: []string{"sq.s_step", "sq.s_nolimits"}, RenameDB: map[string]string{"sq": "sq_legacy"}})
	if w := strings.Join(res.Warnings, "\n"); strings.Count(w, "holds its columns but not its options") != 2 {
		t.Errorf("warnings of a legacy restore: %q", res.Warnings)
	}
	var next string
	if err := dstDB.QueryRow("SELECT CONCAT(NEXTVAL(sq_legacy.s_step), ' ', NEXTVAL(sq_legacy.s_step))").Scan(&next); err != nil || next != "7100 7101" {
		t.Errorf("legacy s_step continues with %s (%v), want 7100 7101 (next_not_cached_value, then by 1)", next, err)
	}
}

// legacySequences rewrites a backup of sq as the engine wrote it before
// sequence_row: sequences' CREATE TABLE and their next value alone.
func legacySequences(t *testing.T, db *sql.DB, a *memArchive) *memArchive {
	t.Helper()
	out := newMem()
	for name, st := range a.streams {
		b := st.buf.Bytes()
		switch name {
		case streamMeta:
			var m metaDoc
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			for i := range m.Tables {
				m.Tables[i].SequenceRow = nil
			}
			b, _ = json.Marshal(m)
		case schemaStream("sq"):
			var sd schemaDoc
			if err := json.Unmarshal(b, &sd); err != nil {
				t.Fatal(err)
			}
			for i, tb := range sd.Tables {
				if tb.Kind == "sequence" {
					var n string
					if err := db.QueryRow("SHOW CREATE TABLE "+qname("sq", tb.Name)).Scan(&n, &sd.Tables[i].Create); err != nil {
						t.Fatal(err)
					}
				}
			}
			b, _ = json.Marshal(sd)
		}
		out.streams[name] = &memStream{a: out, md: st.md, closed: true}
		out.streams[name].buf.Write(b)
	}
	out.server, out.cp = a.server, a.cp
	return out
}

// TestSequenceUnderNextval backs a sequence up while clients draw from it:
// the restored copy must not hand out a value the source handed out before
// the backup's consistency point.
func TestSequenceUnderNextval(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "seqw-src")
	dst := startMariaDB(t, "seqw-dst")
	src.Exec(t, "CREATE DATABASE w", "USE w", "CREATE SEQUENCE w.s CACHE 3", "CREATE TABLE w.pad (id INT PRIMARY KEY, v CHAR(100))",
		"INSERT INTO w.pad SELECT seq, 'x' FROM seq_1_to_20000")
	db := src.DB(t)
	type drawn struct {
		v  int64
		at time.Time
	}
	var (
		mu    sync.Mutex
		got   []drawn
		stop  = make(chan struct{})
		done  sync.WaitGroup
		errMu sync.Mutex
		drawE error
	)
	for range 3 {
		done.Add(1)
		go func() {
			defer done.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var v int64
				if err := db.QueryRow("SELECT NEXTVAL(w.s)").Scan(&v); err != nil {
					errMu.Lock()
					drawE = err
					errMu.Unlock()
					return
				}
				mu.Lock()
				got = append(got, drawn{v, time.Now()})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	a := newMem()
	a.writeDelay = time.Millisecond // the draws go on through the dump
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Wait(time.Minute))
	defer cancel()
	if _, err := smallPieces.Backup(ctx, engines.BackupParams{DSN: src.DSN, Databases: []string{"w"}, Sink: a}); err != nil {
		t.Fatalf("backup: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	done.Wait()
	if drawE != nil {
		t.Fatalf("drawing during the backup: %v", drawE)
	}
	restoreMem(t, smallPieces, a, engines.RestoreParams{DSN: dst.DSN})
	var first int64
	if err := dst.DB(t).QueryRow("SELECT NEXTVAL(w.s)").Scan(&first); err != nil {
		t.Fatal(err)
	}
	point := a.cp.GetTime().AsTime()
	var before, after, again int
	for _, d := range got {
		if d.at.Before(point) {
			before++
			if d.v >= first {
				again++
			}
		} else {
			after++
		}
	}
	if again > 0 {
		t.Errorf("%d values the source handed out before the consistency point are handed out again by the copy (it starts at %d)", again, first)
	}
	if before == 0 || after == 0 {
		t.Errorf("%d values drawn before the consistency point and %d after: the draws did not span the backup", before, after)
	}
	t.Logf("%d values drawn before the consistency point, %d after; the copy starts at %d", before, after, first)
}

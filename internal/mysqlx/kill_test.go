package mysqlx

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// runningALTERs lists the ALTER TABLE statements the server runs.
func runningALTERs(t *testing.T, m *testenv.MariaDB) []string {
	t.Helper()
	rows, err := m.DB(t).Query("SELECT ID, STATE FROM information_schema.PROCESSLIST WHERE INFO LIKE 'ALTER TABLE%'")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var id, state string
		if err := rows.Scan(&id, &state); err != nil {
			t.Fatal(err)
		}
		out = append(out, id+" "+state)
	}
	return out
}

// TestKillOnCancel: an ALTER TABLE waiting for a metadata lock goes on on
// the server after its context is cancelled (the driver only drops the
// socket), which is the defect; KillOnCancel's stop returns only once it is
// gone from the processlist.
func TestKillOnCancel(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "kill"})
	m.Exec(t, "CREATE DATABASE k", "CREATE TABLE k.t (id INT PRIMARY KEY, v INT)", "INSERT INTO k.t VALUES (1, 1), (2, 2)")
	// A reader holds the table's metadata lock: the ALTER waits for it.
	blocker, err := m.DB(t).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = blocker.Close() }()
	if _, err := blocker.ExecContext(context.Background(), "START TRANSACTION"); err != nil {
		t.Fatal(err)
	}
	if _, err := blocker.ExecContext(context.Background(), "SELECT * FROM k.t"); err != nil {
		t.Fatal(err)
	}

	dsn, err := ParseDSN(m.DSN)
	if err != nil {
		t.Fatal(err)
	}
	alter := func(kill bool) error {
		db, sessions, err := dsn.OpenSessions(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = db.Close() }()
		ctx, cancel := context.WithCancel(context.Background())
		var stop func(error) error
		if kill {
			stop = sessions.KillOnCancel(ctx)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := db.ExecContext(ctx, "ALTER TABLE k.t ADD INDEX v (v)")
			errc <- err
		}()
		testenv.WaitFor(t, "the ALTER waiting for the metadata lock", 10*time.Second, func() error {
			if a := runningALTERs(t, m); len(a) != 1 {
				return fmt.Errorf("ALTERs running: %v", a)
			}
			return nil
		})
		if ids := sessions.IDs(); len(ids) != 1 {
			t.Fatalf("recorded connection ids %v, want one", ids)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("ALTER returned %v, want context.Canceled", err)
		}
		if stop != nil {
			return stop(context.Canceled)
		}
		return nil
	}

	// Without a kill, the statement outlives its context.
	if err := alter(false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if a := runningALTERs(t, m); len(a) != 1 {
		t.Fatalf("after the cancel without a kill: %v; the test's premise (the server goes on) does not hold", a)
	}
	// Clear it for the second round (it is an orphan now).
	if err := (&Sessions{dsn: dsn, ids: idsOf(t, m)}).Kill(context.Background()); err != nil {
		t.Fatal(err)
	}

	// With KillOnCancel, stop returns once the server stopped too.
	if err := alter(true); err != nil {
		t.Fatal(err)
	}
	if a := runningALTERs(t, m); len(a) != 0 {
		t.Fatalf("ALTER still running after stop returned: %v", a)
	}
	// The reader's lock was never what ended it, and the table has no
	// half-built index.
	var n int
	if err := m.DB(t).QueryRow("SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = 'k' AND INDEX_NAME = 'v'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("index v: %d rows, %v", n, err)
	}
}

func idsOf(t *testing.T, m *testenv.MariaDB) []uint64 {
	t.Helper()
	rows, err := m.DB(t).Query("SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'ALTER TABLE%'")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rows.Close() }()
	var ids []uint64
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// TestKillNothingRunning: a pool whose connections are idle or gone is
// left alone, and Kill answers at once.
func TestKillNothingRunning(t *testing.T) {
	t.Parallel()
	m := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "killidle"})
	dsn, err := ParseDSN(m.DSN)
	if err != nil {
		t.Fatal(err)
	}
	db, sessions, err := dsn.OpenSessions(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	sessions.ids = append(sessions.ids, 1<<40) // long gone
	start := time.Now()
	if err := sessions.Kill(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > testenv.Wait(2*time.Second) {
		t.Errorf("Kill of idle connections took %s", d)
	}
	// The idle connection was not killed: the pool still works.
	if err := db.Ping(); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if !strings.Contains((&Sessions{dsn: dsn}).killErr(context.Background(), []string{"connection 7"}, errors.New("x")).Error(), "connection 7") {
		t.Error("kill error does not name the connection")
	}
}

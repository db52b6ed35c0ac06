package logical

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
)

// gtidSeq returns the sequence number of the single domain in a MariaDB
// GTID position such as "0-123-45".
func gtidSeq(t *testing.T, pos string) int64 {
	t.Helper()
	if pos == "" {
		return 0
	}
	parts := strings.Split(pos, "-")
	if len(parts) != 3 || strings.Contains(pos, ",") {
		t.Fatalf("unexpected GTID position %q", pos)
	}
	n, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestConsistentUnderWrites dumps while a writer commits transfers between
// two tables, each also bumping a counter. The restored data must keep the
// total, and the counter must equal the number of transactions the binlog
// holds up to the recorded GTID: the data sits exactly at the coordinates.
func TestConsistentUnderWrites(t *testing.T) {
	t.Parallel()
	src := startMariaDB(t, "cons-src")
	dst := startMariaDB(t, "cons-dst")
	const accounts = 20000
	src.Exec(t,
		"CREATE DATABASE bank", "USE bank",
		"CREATE TABLE checking (id INT PRIMARY KEY, balance BIGINT NOT NULL, pad CHAR(100) NOT NULL DEFAULT '')",
		"CREATE TABLE savings (id INT PRIMARY KEY, balance BIGINT NOT NULL, pad CHAR(100) NOT NULL DEFAULT '')",
		"CREATE TABLE counter (id INT PRIMARY KEY, n BIGINT NOT NULL)",
		fmt.Sprintf("INSERT INTO checking (id, balance) SELECT seq, 1000 FROM seq_1_to_%d", accounts),
		fmt.Sprintf("INSERT INTO savings (id, balance) SELECT seq, 1000 FROM seq_1_to_%d", accounts),
		"INSERT INTO counter VALUES (1, 0)",
		"ANALYZE TABLE checking, savings",
	)
	db := src.DB(t)
	var pos0 string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos0); err != nil {
		t.Fatal(err)
	}
	seq0 := gtidSeq(t, pos0)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var committed atomic.Int64
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for ctx.Err() == nil {
				from, to, amt := 1+rng.IntN(accounts), 1+rng.IntN(accounts), 1+rng.IntN(50)
				err := transfer(db, from, to, amt)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("transfer: %v", err)
					}
					return
				}
				committed.Add(1)
			}
		}()
	}
	// Let the writers get going, then dump slowly enough that they commit
	// many transfers while the pieces are read.
	for committed.Load() < 50 {
		time.Sleep(5 * time.Millisecond)
	}
	a := newMem()
	a.writeDelay = 30 * time.Millisecond
	res, err := (&Engine{PieceRows: 2000}).Backup(context.Background(), engines.BackupParams{DSN: src.DSN, Parallel: 2, Sink: a})
	during := committed.Load()
	time.Sleep(100 * time.Millisecond)
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lock held %v; %d transfers committed by the end of the dump; consistency point %v", res.LockDuration, during, a.cp)

	restoreMem(t, &Engine{}, a, engines.RestoreParams{DSN: dst.DSN, Parallel: 2})
	out := dst.DB(t)
	var total, n int64
	if err := out.QueryRow("SELECT (SELECT SUM(balance) FROM bank.checking) + (SELECT SUM(balance) FROM bank.savings), (SELECT n FROM bank.counter)").Scan(&total, &n); err != nil {
		t.Fatal(err)
	}
	if total != 2*accounts*1000 {
		t.Errorf("restored balances sum to %d, want %d: the tables come from different points in time", total, 2*accounts*1000)
	}
	if want := gtidSeq(t, a.cp.GetGtidSet()) - seq0; n != want {
		t.Errorf("restored counter is %d, but the recorded GTID %s is %d transactions after the start", n, a.cp.GetGtidSet(), want)
	}
	var final int64
	if err := db.QueryRow("SELECT n FROM bank.counter").Scan(&final); err != nil {
		t.Fatal(err)
	}
	if final <= n {
		t.Logf("note: no transfer committed after the consistency point (final %d, restored %d)", final, n)
	}
	if n == 0 {
		t.Errorf("no transfer was committed before the consistency point; the test proves nothing")
	}
}

func transfer(db *sql.DB, from, to, amt int) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	for _, s := range []string{
		fmt.Sprintf("UPDATE bank.checking SET balance = balance - %d WHERE id = %d", amt, from),
		fmt.Sprintf("UPDATE bank.savings SET balance = balance + %d WHERE id = %d", amt, to),
		"UPDATE bank.counter SET n = n + 1 WHERE id = 1",
	} {
		if _, err := tx.Exec(s); err != nil {
			return err
		}
	}
	return tx.Commit()
}

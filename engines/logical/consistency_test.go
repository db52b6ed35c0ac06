package logical

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

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
	seq0 := testenv.GTIDSeq(t, pos0)

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
				err := testenv.BankTransfer(db, from, to, amt)
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
	if want := testenv.GTIDSeq(t, a.cp.GetGtidSet()) - seq0; n != want {
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

package testenv

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
)

// Bank is the consistency tests' workload: transfers between
// bank.checking and bank.savings, each bumping bank.counter, in one
// transaction. A consistent backup keeps its invariant exactly: the total
// balance, and the counter equal to the transactions committed up to the
// backup's consistency point.
type Bank struct {
	Accounts int
	// Start is the server's GTID sequence before any transfer: the
	// counter of a copy must be its consistency point's sequence minus it.
	Start int64
}

// CreateBank makes the bank schema on m with accounts accounts of 1000 in
// each table, then runs extra (more schema of the test's own).
func CreateBank(t testing.TB, m *MariaDB, accounts int, extra ...string) *Bank {
	t.Helper()
	m.Exec(t, append([]string{
		"CREATE DATABASE bank", "USE bank",
		"CREATE TABLE checking (id INT PRIMARY KEY, balance BIGINT NOT NULL, pad CHAR(100) NOT NULL DEFAULT '')",
		"CREATE TABLE savings (id INT PRIMARY KEY, balance BIGINT NOT NULL, pad CHAR(100) NOT NULL DEFAULT '')",
		"CREATE TABLE counter (id INT PRIMARY KEY, n BIGINT NOT NULL)",
		fmt.Sprintf("INSERT INTO checking (id, balance) SELECT seq, 1000 FROM seq_1_to_%d", accounts),
		fmt.Sprintf("INSERT INTO savings (id, balance) SELECT seq, 1000 FROM seq_1_to_%d", accounts),
		"INSERT INTO counter VALUES (1, 0)",
	}, extra...)...)
	var pos string
	if err := m.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	return &Bank{Accounts: accounts, Start: GTIDSeq(t, pos)}
}

// BankWriters are transfers running in the background.
type BankWriters struct {
	committed atomic.Int64
	stop      context.CancelFunc
	wg        sync.WaitGroup
}

// Transfers starts writers goroutines doing random transfers on db and
// returns once at least 50 have committed, so that a backup started then
// runs under writes.
func (b *Bank) Transfers(t testing.TB, db *sql.DB, writers int) *BankWriters {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	w := &BankWriters{stop: stop}
	for i := range writers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for ctx.Err() == nil {
				if err := BankTransfer(db, 1+rng.IntN(b.Accounts), 1+rng.IntN(b.Accounts), 1+rng.IntN(50)); err != nil {
					if ctx.Err() == nil {
						t.Errorf("transfer: %v", err)
					}
					return
				}
				w.committed.Add(1)
			}
		}()
	}
	for w.committed.Load() < 50 && !t.Failed() {
		time.Sleep(5 * time.Millisecond)
	}
	return w
}

// Committed is how many transfers have committed so far.
func (w *BankWriters) Committed() int64 { return w.committed.Load() }

// Stop lets the writers run on a little (so that some transfers commit
// after whatever the test did last), stops them and waits.
func (w *BankWriters) Stop() {
	time.Sleep(100 * time.Millisecond)
	w.stop()
	w.wg.Wait()
}

// Check asserts the invariant on a copy of the bank consistent at GTID
// position gtid: the total balance, and the counter equal to the
// transfers committed up to gtid. It returns the counter.
func (b *Bank) Check(t testing.TB, db *sql.DB, gtid string) int64 {
	t.Helper()
	var total, n int64
	if err := db.QueryRow("SELECT (SELECT SUM(balance) FROM bank.checking) + (SELECT SUM(balance) FROM bank.savings), (SELECT n FROM bank.counter)").Scan(&total, &n); err != nil {
		t.Fatal(err)
	}
	if want := int64(2 * b.Accounts * 1000); total != want {
		t.Errorf("restored balances sum to %d, want %d: the tables come from different points in time", total, want)
	}
	if want := GTIDSeq(t, gtid) - b.Start; n != want {
		t.Errorf("restored counter is %d, but the recorded GTID %s is %d transactions after the start", n, gtid, want)
	}
	return n
}

// BankTransfer moves amt from bank.checking row from to bank.savings row
// to and bumps bank.counter row 1, in one transaction.
func BankTransfer(db *sql.DB, from, to, amt int) error {
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

// GTIDSeq returns the sequence number of the single domain of a MariaDB
// GTID position such as "0-123-45"; "" is 0.
func GTIDSeq(t testing.TB, pos string) int64 {
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

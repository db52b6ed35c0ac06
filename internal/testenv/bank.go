package testenv

import (
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// BankTransfer moves amt from bank.checking row from to bank.savings row
// to and bumps bank.counter row 1, in one transaction: the concurrent
// writer of the consistency tests, whose invariant (the total balance, and
// the counter equal to the transactions committed) a consistent backup
// keeps exactly. The tests create the three tables themselves.
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

package binlog

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func binlogList(t *testing.T, db *sql.DB) []string {
	t.Helper()
	l, err := binaryLogs(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestPurgeArchived: with PurgeArchived the streamer purges the server's
// binlogs once they are archived to their end, keeping PurgeKeep of them, and
// never one it has not archived.
func TestPurgeArchived(t *testing.T) {
	m := testenv.StartMariaDB(t)
	db := m.DB(t)
	m.Exec(t, "CREATE DATABASE test", "CREATE TABLE test.t (id INT PRIMARY KEY)")
	for i := 0; i < 4; i++ {
		m.Exec(t, fmt.Sprintf("INSERT INTO test.t VALUES (%d)", i), "FLUSH BINARY LOGS")
	}
	all := binlogList(t, db)
	if len(all) != 5 {
		t.Fatalf("binlogs %v", all)
	}
	repo, _ := fileRepo(t)
	stop := runStream(t, StreamParams{DSNs: []string{m.DSN}, Repo: repo, Instance: "db", Flush: 100 * time.Millisecond,
		PurgeArchived: true, PurgeKeep: 1, RetentionCheck: 200 * time.Millisecond, Logger: testLogger(t)})
	waitCaughtUp(t, repo, "db", db)
	testenv.WaitFor(t, "archived binlogs purged", 20*time.Second, func() error {
		if l := binlogList(t, db); len(l) != 2 || l[0] != all[3] {
			return fmt.Errorf("server has %v", l)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	a, err := OpenArchive(context.Background(), repo, "db")
	if err != nil {
		t.Fatal(err)
	}
	ended := map[string]bool{}
	for _, s := range a.Segments() {
		if s.EndsFile {
			ended[s.File] = true
		}
	}
	for _, f := range all[:3] {
		if !ended[f] {
			t.Errorf("%s was purged but the archive does not hold it to its end", f)
		}
	}
}

func TestRetentionAdvice(t *testing.T) {
	logs := []string{"b.1", "b.2", "b.3", "b.4", "b.5"}
	done := func(upTo string) func(string) bool { return func(f string) bool { return f < upTo } }
	for _, c := range []struct {
		cur             string
		purge           bool
		keep            int
		done            func(string) bool
		warn            bool
		purgeTo, blocks string
	}{
		{cur: "b.5", purge: false, keep: 2, done: done("b.5")},                               // caught up, no purging
		{cur: "b.1", purge: false, keep: 2, done: done("b.1"), warn: true},                   // archiving the oldest: at risk
		{cur: "b.2", purge: true, keep: 2, done: done("b.2"), warn: true},                    // next to oldest: at risk, nothing to purge
		{cur: "b.5", purge: true, keep: 2, done: done("b.5"), purgeTo: "b.3"},                // keeps b.3, b.4
		{cur: "b.5", purge: true, keep: 2, done: done("b.2"), purgeTo: "b.3", blocks: "b.2"}, // b.2 not archived to its end
		{cur: "b.5", purge: true, keep: 4, done: done("b.5")},                                // margin covers everything
		{cur: "b.9", purge: true, keep: 1, done: done("b.9")},                                // not in the list
	} {
		warn, to, blocked := retentionAdvice(logs, c.cur, c.purge, c.keep, c.done)
		if warn != c.warn || to != c.purgeTo || blocked != c.blocks {
			t.Errorf("cur %s purge %v keep %d: warn %v purge to %q blocked %q; want %v %q %q", c.cur, c.purge, c.keep, warn, to, blocked, c.warn, c.purgeTo, c.blocks)
		}
	}
}

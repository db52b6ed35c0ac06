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

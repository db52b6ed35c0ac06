package pitr

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// TestFailoverPosition: the archive of a replication group holds the old
// primary's binlog.000001 and, after a failover, the new primary's
// binlog.000001. A position target in that name is refused naming both
// servers, and FILE:POS of the server that wrote it restores exactly that
// point (a peer's PITR replayed the wrong one).
func TestFailoverPosition(t *testing.T) {
	ctx := context.Background()
	opts := func(name string) testenv.MariaDBOptions {
		return testenv.MariaDBOptions{Name: name, ExtraArgs: []string{"--gtid-strict-mode=1", "--log-slave-updates"}}
	}
	a, b := testenv.StartMariaDB(t, opts("fo-a")), testenv.StartMariaDB(t, opts("fo-b"))
	adb, bdb := a.DB(t), b.DB(t)
	b.Exec(t, fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='tidemark', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1", a.Port),
		"START SLAVE")
	st, err := file.Open(filepath.Join(t.TempDir(), "repo"), file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := archive.Init(ctx, st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	sctx, stopStream := context.WithCancel(ctx)
	streamDone := make(chan error, 1)
	go func() {
		streamDone <- binlog.Stream(sctx, binlog.StreamParams{DSNs: []string{a.DSN, b.DSN}, Repo: repo, Instance: instance,
			Flush: 100 * time.Millisecond})
	}()
	t.Cleanup(func() {
		stopStream()
		if err := <-streamDone; err != nil {
			t.Errorf("stream: %v", err)
		}
	})

	a.Exec(t, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, who VARCHAR(10))")
	for i := 1; i <= 20; i++ {
		a.Exec(t, fmt.Sprintf("INSERT INTO app.t VALUES (%d, 'a')", i))
	}
	backup(t, repo, a.DSN)
	a.Exec(t, "UPDATE app.t SET who = 'a2' WHERE id <= 10")
	onA := record(t, adb, "on the old primary")
	want := gtidPos(t, adb)
	testenv.WaitFor(t, "replica at "+want, 30*time.Second, func() error {
		if got := gtidPos(t, bdb); got != want {
			return fmt.Errorf("replica at %s", got)
		}
		return nil
	})
	waitArchived(t, repo, adb)
	a.Kill()
	b.Exec(t, "STOP SLAVE", "RESET SLAVE ALL", "INSERT INTO app.t VALUES (21, 'b')", "INSERT INTO app.t VALUES (22, 'b')")
	onB := record(t, bdb, "on the new primary")
	b.Exec(t, "UPDATE app.t SET who = 'b2'")
	waitArchived(t, repo, bdb)
	if onA.file != onB.file {
		t.Fatalf("the servers' binlog files are %s and %s; the test needs one name", onA.file, onB.file)
	}

	_, _, err = restore(t, repo, Target{File: onB.file, Pos: onB.pos})
	if want := fmt.Sprintf("servers %d and %d each wrote a file of that name", a.ServerID, b.ServerID); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("a position in a name both servers wrote: %v", err)
	}
	for _, c := range []struct {
		p      point
		server uint32
	}{{onB, b.ServerID}, {onA, a.ServerID}} {
		dst, _, err := restore(t, repo, Target{File: c.p.file, Pos: c.p.pos, ServerID: c.server})
		if err != nil {
			t.Fatalf("%s (%s:%d@%d): %v", c.p.name, c.p.file, c.p.pos, c.server, err)
		}
		sameSums(t, c.p.name, testenv.Checksums(t, dst.DB(t), "app"), c.p.sums)
	}
}

func gtidPos(t *testing.T, db *sql.DB) string {
	t.Helper()
	var p string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

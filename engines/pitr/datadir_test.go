package pitr

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/binlog/apply"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/engines/physical/physicaltest"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func restoreDatadir(t *testing.T, repo *archive.Repo, target Target, from string, method ...string) (string, *DatadirResult, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "datadir")
	p := DatadirParams{
		Repo: repo, Instance: instance, Dirs: map[string]string{physical.RootDatadir: dir}, Target: target, FromBackup: from,
	}
	if len(method) > 0 {
		p.Method = method[0]
	}
	res, err := RestoreDatadir(context.Background(), p)
	return dir, res, err
}

// checkDatadir starts a server on a restored datadir and compares it with
// the source at the point.
func checkDatadir(t *testing.T, dir string, want point, binlogged bool) {
	t.Helper()
	if physical.Unfinished(dir) {
		t.Fatalf("%s still holds the in-progress marker", dir)
	}
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{DataDir: dir, Name: "restored", ExtraArgs: strict.ExtraArgs})
	sameSums(t, want.name, testenv.Checksums(t, dst.DB(t), "app"), want.sums)
	var pos string
	if err := dst.DB(t).QueryRow("SELECT @@gtid_current_pos").Scan(&pos); err != nil || pos != want.gtid {
		t.Errorf("restored gtid_current_pos %q (%v), want %q", pos, err, want.gtid)
	}
	if binlogged {
		// A crash image's binlog is restored and the roll-forward is
		// written into it: it is continuous up to the target.
		if err := dst.DB(t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos); err != nil || pos != want.gtid {
			t.Errorf("restored gtid_binlog_pos %q (%v), want %q", pos, err, want.gtid)
		}
	}
}

// TestDatadirPointInTime: physical bases (mariabackup's, taken under a
// concurrent writer; a crash image of the killed source) restored into new
// datadirs and rolled forward on a temporary server to points named by
// GTID, time and position: a server started on each equals the source at
// that point. A target before the base is refused with nothing written.
func TestDatadirPointInTime(t *testing.T) {
	src := testenv.StartMariaDB(t, strict)
	db := src.DB(t)
	repo := newRepo(t)
	stopStream := startStream(t, repo, src.DSN)
	defer stopStream()

	src.Exec(t, "CREATE DATABASE app",
		"CREATE TABLE app.accounts (id INT PRIMARY KEY, owner VARCHAR(40), balance BIGINT)",
		"CREATE TABLE app.events (id BIGINT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(100))")
	for i := 0; i < 100; i++ {
		src.Exec(t, "INSERT INTO app.accounts VALUES ("+itoa(i)+", 'o', "+itoa(i*10)+")")
	}
	before := record(t, db, "before the base")

	// A writer commits throughout mariabackup's run: the roll-forward
	// must start exactly at the coordinates it recorded.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := db.Exec("INSERT INTO app.events (note) VALUES (CONCAT('busy ', ?))", i); err != nil {
				t.Errorf("writer: %v", err)
				return
			}
		}
	}()
	mb := physicaltest.Mariabackup(t, repo, src, instance)
	close(stop)
	wg.Wait()
	p1 := record(t, db, "after the mariabackup base")

	src.Exec(t, "ALTER TABLE app.accounts ADD COLUMN frozen BOOL NOT NULL DEFAULT FALSE",
		"UPDATE app.accounts SET balance = balance + 5, frozen = (id % 7 = 0)")
	p2 := record(t, db, "after DDL")

	// A crash image: the source killed and restarted, the stream goes on.
	snap := physicaltest.Snapshot(t, repo, src, instance)
	src.Restart(t)
	src.Exec(t, "DELETE FROM app.accounts WHERE id % 3 = 0", "INSERT INTO app.events (note) VALUES ('after the crash')")
	p3 := record(t, db, "after the snapshot base")
	waitArchived(t, repo, db)

	for _, c := range []struct {
		target Target
		want   point
		base   string
		method string
	}{
		{Target{GTID: p1.gtid}, p1, mb.BackupId, ""},
		// mariadb-binlog | mariadb over the temporary server's socket.
		{Target{Time: p2.time}, p2, mb.BackupId, apply.MethodSQL},
		{Target{File: p3.file, Pos: p3.pos}, p3, snap.BackupId, ""},
	} {
		t.Run(c.want.name, func(t *testing.T) {
			dir, res, err := restoreDatadir(t, repo, c.target, "", c.method)
			if err != nil {
				t.Fatalf("restore to %s: %v", c.target, err)
			}
			if res.Base.BackupId != c.base {
				t.Errorf("base %s, want %s", res.Base.BackupId, c.base)
			}
			checkDatadir(t, dir, c.want, c.base == snap.BackupId)
			t.Logf("%s: base %s (%s): extract %s, prepare %s, %d transactions by %s in %s", c.target, res.Base.BackupId, res.Base.Engine,
				res.Restore.Extract.Round(time.Millisecond), res.Restore.Prepare.Round(time.Millisecond),
				res.Applied.Transactions, res.Applied.Method, res.Restore.RollForward.Round(time.Millisecond))
		})
	}

	t.Run("refused before the base", func(t *testing.T) {
		dir, _, err := restoreDatadir(t, repo, Target{GTID: before.gtid}, mb.BackupId)
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "after the target") {
			t.Fatalf("err = %v, want ErrUnreachable (the base is after the target)", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created (%v)", dir, err)
		}
	})
	t.Run("refused a non-empty datadir", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := RestoreDatadir(context.Background(), DatadirParams{
			Repo: repo, Instance: instance, Dirs: map[string]string{physical.RootDatadir: dir}, Target: Target{GTID: p3.gtid},
		})
		if !errors.Is(err, physical.ErrNotEmpty) {
			t.Fatalf("err = %v, want ErrNotEmpty", err)
		}
	})
	t.Run("refused a logical base", func(t *testing.T) {
		lb := backup(t, repo, src.DSN)
		dir, _, err := restoreDatadir(t, repo, Target{GTID: p3.gtid}, lb.BackupId)
		if err == nil || !strings.Contains(err.Error(), "--to-mysql") {
			t.Fatalf("err = %v, want the logical restore named", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created (%v)", dir, err)
		}
		// And the logical path refuses a physical base, naming --to-datadir.
		dst := testenv.StartMariaDB(t, strict)
		_, err = Restore(context.Background(), Params{Repo: repo, Instance: instance, DSN: dst.DSN, Target: Target{GTID: p3.gtid}, FromBackup: snap.BackupId,
			Engine: func(string) (engines.Engine, error) { return nil, errors.New("no engine") }})
		if err == nil || !strings.Contains(err.Error(), "--to-datadir") {
			t.Fatalf("logical path, physical base: err = %v, want --to-datadir named", err)
		}
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

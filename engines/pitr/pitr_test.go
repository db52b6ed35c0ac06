package pitr

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/engines/logical"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const instance = "src"

var strict = testenv.MariaDBOptions{ExtraArgs: []string{"--gtid-strict-mode=1"}}

// point is a moment of the source recorded by the test: every way to name
// it, and the data as it was.
type point struct {
	name string
	gtid string
	file string
	pos  uint64
	time time.Time
	sums map[string]testenv.TableSum
}

func record(t *testing.T, db *sql.DB, name string) point {
	t.Helper()
	p := point{name: name}
	var unix int64
	if err := db.QueryRow("SELECT @@gtid_binlog_pos, UNIX_TIMESTAMP()").Scan(&p.gtid, &unix); err != nil {
		t.Fatal(err)
	}
	p.time = time.Unix(unix, 0).UTC()
	rows, err := db.Query("SHOW MASTER STATUS")
	if err != nil {
		t.Fatal(err)
	}
	cols, _ := rows.Columns()
	vals := make([]any, len(cols))
	var f string
	var pos uint64
	vals[0], vals[1] = &f, &pos
	for i := 2; i < len(cols); i++ {
		vals[i] = new(sql.RawBytes)
	}
	for rows.Next() {
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
	}
	_ = rows.Close()
	p.file, p.pos = f, pos
	p.sums = testenv.Checksums(t, db, "app")
	// The next transaction gets a later second, so a time target names
	// exactly this point.
	time.Sleep(1100 * time.Millisecond)
	return p
}

// backup takes a logical backup of the whole server, or of databases only.
func backup(t *testing.T, repo *archive.Repo, dsn string, databases ...string) *v1.Manifest {
	t.Helper()
	eng := logical.New()
	m, err := repo.WithBackup(context.Background(), archive.BackupOptions{Instance: instance, Engine: eng.Name()},
		func(ctx context.Context, b *archive.Backup) error {
			_, err := eng.Backup(ctx, engines.BackupParams{DSN: dsn, Databases: databases, Sink: engines.ArchiveSink(b)})
			return err
		})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// waitArchived waits until the archive holds the source's whole binlog.
func waitArchived(t *testing.T, repo *archive.Repo, db *sql.DB) {
	t.Helper()
	var want string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&want); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "archive at "+want, testenv.Wait(30*time.Second), func() error {
		a, err := binlog.OpenArchive(context.Background(), repo, instance)
		if err != nil {
			return err
		}
		if got := a.Status().GTIDPosition; got != want {
			return fmt.Errorf("archived to %q", got)
		}
		return nil
	})
}

func restore(t *testing.T, repo *archive.Repo, target Target) (*testenv.MariaDB, *Result, error) {
	t.Helper()
	return restoreFrom(t, repo, target, "")
}

// restoreFrom restores a fresh server to target from base backup from ("":
// the newest that fits).
func restoreFrom(t *testing.T, repo *archive.Repo, target Target, from string) (*testenv.MariaDB, *Result, error) {
	t.Helper()
	dst := testenv.StartMariaDB(t, strict)
	res, err := Restore(context.Background(), Params{
		Repo: repo, Instance: instance, DSN: dst.DSN, Target: target, FromBackup: from,
		Engine: func(name string) (engines.Engine, error) {
			if name != "logical" {
				return nil, fmt.Errorf("engine %q", name)
			}
			return logical.New(), nil
		},
	})
	return dst, res, err
}

func sameSums(t *testing.T, what string, got, want map[string]testenv.TableSum) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: tables %v, want %v", what, got, want)
		return
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: table %s = %+v, want %+v", what, k, got[k], w)
		}
	}
}

// TestPointInTime streams a source under writes and DDL, takes two base
// backups while a writer runs, and restores to recorded points named by
// GTID, time and position: each restore equals the source at that point.
// Targets the archive cannot reach are refused with nothing written.
func TestPointInTime(t *testing.T) {
	ctx := context.Background()
	src := testenv.StartMariaDB(t, strict)
	db := src.DB(t)
	dir := filepath.Join(t.TempDir(), "repo")
	st, err := file.Open(dir, file.Options{Create: true})
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
		// Small segments: a source file spans several, so most segments
		// start inside their file, where the events' positions are not
		// their offsets in the segment.
		streamDone <- binlog.Stream(sctx, binlog.StreamParams{DSNs: []string{src.DSN}, Repo: repo, Instance: instance,
			Flush: 100 * time.Millisecond, SegmentSize: 32 << 10})
	}()
	t.Cleanup(func() {
		stopStream()
		if err := <-streamDone; err != nil {
			t.Errorf("stream: %v", err)
		}
	})

	src.Exec(t, "CREATE DATABASE app",
		"CREATE TABLE app.accounts (id INT PRIMARY KEY, owner VARCHAR(40), balance BIGINT)",
		"CREATE TABLE app.events (id BIGINT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(100))")
	for i := 0; i < 200; i++ {
		src.Exec(t, fmt.Sprintf("INSERT INTO app.accounts VALUES (%d, 'owner%d', %d)", i, i, i*10))
	}
	before := record(t, db, "before the first backup")

	// A writer commits throughout the backup: the roll-forward must start
	// exactly at the backup's point, neither repeating nor missing one.
	busy := func(n int) func() {
		var wg sync.WaitGroup
		stop := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
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
		return func() { close(stop); wg.Wait() }
	}
	stopBusy := busy(100000)
	base1 := backup(t, repo, src.DSN)
	stopBusy()
	p1 := record(t, db, "after the first backup")

	src.Exec(t, "ALTER TABLE app.accounts ADD COLUMN frozen BOOL NOT NULL DEFAULT FALSE",
		"UPDATE app.accounts SET balance = balance + 5, frozen = (id % 7 = 0)",
		"CREATE TABLE app.audit (id INT AUTO_INCREMENT PRIMARY KEY, what TEXT)",
		"INSERT INTO app.audit (what) SELECT CONCAT('moved ', id) FROM app.accounts")
	p2 := record(t, db, "after DDL")

	src.Exec(t, "FLUSH BINARY LOGS", // a rotation between points
		"DELETE FROM app.accounts WHERE id % 3 = 0",
		"DROP TABLE app.audit",
		"INSERT INTO app.events (note) VALUES ('after rotation')")
	p3 := record(t, db, "after a rotation and a DROP")

	stopBusy = busy(100000)
	base2 := backup(t, repo, src.DSN)
	stopBusy()
	// Newer than base2 but of one database only: never a base for a
	// roll-forward, which replays every database.
	partialBase := backup(t, repo, src.DSN, "app")
	src.Exec(t, "UPDATE app.accounts SET owner = CONCAT(owner, '!') WHERE id < 50",
		"RENAME TABLE app.events TO app.events_old")
	p4 := record(t, db, "after the second backup")
	waitArchived(t, repo, db)
	a, err := binlog.OpenArchive(ctx, repo, instance)
	if err != nil {
		t.Fatal(err)
	}
	inside := 0
	for _, s := range a.Segments() {
		if s.StartPos > 4 {
			inside++
		}
	}
	if inside == 0 {
		t.Fatalf("want segments that start inside their file: %+v", a.Segments())
	}

	for _, c := range []struct {
		target Target
		want   point
		base   string
	}{
		{Target{GTID: p1.gtid}, p1, base1.BackupId},
		{Target{Time: p2.time}, p2, base1.BackupId},
		{Target{File: p3.file, Pos: p3.pos}, p3, base1.BackupId},
		{Target{GTID: p4.gtid}, p4, base2.BackupId},
	} {
		t.Run(c.want.name, func(t *testing.T) {
			dst, res, err := restore(t, repo, c.target)
			if err != nil {
				t.Fatalf("restore to %s: %v", c.target, err)
			}
			if res.Base.BackupId != c.base {
				t.Errorf("base %s, want %s (the newest at or before the target)", res.Base.BackupId, c.base)
			}
			sameSums(t, c.target.String(), testenv.Checksums(t, dst.DB(t), "app"), c.want.sums)
			t.Logf("%s: base %s in %s, %d transactions by %s in %s", c.target, res.Base.BackupId,
				res.BaseRestore.Round(time.Millisecond), res.Applied.Transactions, res.Applied.Method, res.RollForward.Round(time.Millisecond))
		})
	}

	// Refused, nothing written: before the oldest base; past the archive.
	for _, c := range []struct {
		name   string
		target Target
		is     error
		from   string
	}{
		{"before the oldest backup", Target{Time: before.time}, ErrUnreachable, ""},
		{"past the archive", Target{GTID: bumpSeq(t, p4.gtid, 1000)}, ErrUnreachable, ""},
		{"time past the archive", Target{Time: time.Now().Add(time.Hour)}, ErrUnreachable, ""},
		{"a base of some databases", Target{GTID: p4.gtid}, ErrUnreachable, partialBase.BackupId},
	} {
		t.Run("refused "+c.name, func(t *testing.T) {
			dst, _, err := restoreFrom(t, repo, c.target, c.from)
			if !errors.Is(err, c.is) {
				t.Fatalf("restore to %s: %v, want %v", c.target, err, c.is)
			}
			var n int
			if err := dst.DB(t).QueryRow("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'app'").Scan(&n); err != nil || n != 0 {
				t.Fatalf("refused restore wrote to the target (schema app: %d, %v)", n, err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// bumpSeq returns the GTID position with its (single) sequence number
// increased by n.
func bumpSeq(t *testing.T, pos string, n uint64) string {
	t.Helper()
	p, err := binlog.ParsePosition(pos)
	if err != nil || len(p) != 1 {
		t.Fatalf("position %q: %v", pos, err)
	}
	for d, g := range p {
		g.Seq += n
		p[d] = g
	}
	return p.String()
}

func newRepo(t *testing.T) *archive.Repo {
	t.Helper()
	st, err := file.Open(filepath.Join(t.TempDir(), "repo"), file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := archive.Init(context.Background(), st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	return repo
}

func startStream(t *testing.T, repo *archive.Repo, dsn string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- binlog.Stream(ctx, binlog.StreamParams{DSNs: []string{dsn}, Repo: repo, Instance: instance, Flush: 100 * time.Millisecond})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("stream: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestGapsRefused: a point behind a gap in the archive (a binlog purged
// while no streamer ran), or a base older than the archive's start, is
// refused with nothing written; a point before the gap still restores.
func TestGapsRefused(t *testing.T) {
	src := testenv.StartMariaDB(t, strict)
	db := src.DB(t)
	repo := newRepo(t)
	src.Exec(t, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v INT)", "INSERT INTO app.t VALUES (1, 1)")

	// A backup from before streaming began, whose binlog is purged first:
	// the archive starts after it.
	early := backup(t, repo, src.DSN)
	src.Exec(t, "INSERT INTO app.t VALUES (2, 2)")
	src.PurgeBinlogs(t)
	stop := startStream(t, repo, src.DSN)
	src.Exec(t, "INSERT INTO app.t VALUES (3, 3)")
	base := backup(t, repo, src.DSN)
	src.Exec(t, "UPDATE app.t SET v = v + 10")
	p0 := record(t, db, "before the gap")
	waitArchived(t, repo, db)
	stop()

	src.Exec(t, "INSERT INTO app.t VALUES (4, 4)") // lost: purged before it is archived
	src.PurgeBinlogs(t)
	startStream(t, repo, src.DSN)
	src.Exec(t, "INSERT INTO app.t VALUES (5, 5)")
	p1 := record(t, db, "after the gap")
	waitArchived(t, repo, db)
	if a, err := binlog.OpenArchive(context.Background(), repo, instance); err != nil || len(a.Gaps()) != 1 {
		t.Fatalf("archive gaps: %v (%v), want one", a.Gaps(), err)
	}

	dst, res, err := restore(t, repo, Target{GTID: p0.gtid})
	if err != nil {
		t.Fatalf("restore before the gap: %v", err)
	}
	if res.Base.BackupId != base.BackupId {
		t.Errorf("base %s, want %s", res.Base.BackupId, base.BackupId)
	}
	sameSums(t, "before the gap", testenv.Checksums(t, dst.DB(t), "app"), p0.sums)

	for _, c := range []struct {
		name   string
		target Target
		from   string
	}{
		{"GTID behind the gap", Target{GTID: p1.gtid}, ""},
		{"time behind the gap", Target{Time: p1.time}, ""},
		{"base older than the archive", Target{GTID: p0.gtid}, early.BackupId},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := testenv.StartMariaDB(t, strict)
			_, err := Restore(context.Background(), Params{
				Repo: repo, Instance: instance, DSN: dst.DSN, Target: c.target, FromBackup: c.from,
				Engine: func(string) (engines.Engine, error) { return logical.New(), nil },
			})
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("restore to %s: %v, want ErrUnreachable", c.target, err)
			}
			var n int
			if err := dst.DB(t).QueryRow("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = 'app'").Scan(&n); err != nil || n != 0 {
				t.Fatalf("refused restore wrote to the target (schema app: %d, %v)", n, err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

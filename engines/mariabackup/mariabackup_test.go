package mariabackup

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const mariabackupHint = "apt-get install -y mariadb-backup"

func newRepo(t *testing.T) *archive.Repo {
	t.Helper()
	st, err := file.Open(filepath.Join(t.TempDir(), "repo"), file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := archive.Init(context.Background(), st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); _ = st.Close() })
	return r
}

func backup(t *testing.T, repo *archive.Repo, e *Engine, dsn string) (*v1.Manifest, *engines.BackupResult, error) {
	t.Helper()
	return backupCtx(context.Background(), t, repo, e, dsn)
}

func backupCtx(ctx context.Context, t *testing.T, repo *archive.Repo, e *Engine, dsn string) (*v1.Manifest, *engines.BackupResult, error) {
	t.Helper()
	var res *engines.BackupResult
	m, err := repo.WithBackup(ctx, archive.BackupOptions{Engine: Name, Instance: "src"}, func(ctx context.Context, b *archive.Backup) error {
		var err error
		res, err = e.Backup(ctx, engines.BackupParams{DSN: dsn, Parallel: 2, Sink: engines.ArchiveSink(b)})
		return err
	})
	return m, res, err
}

// restore extracts m into a new directory, prepares it with mariabackup
// and starts a server on it.
func restore(t *testing.T, repo *archive.Repo, m *v1.Manifest) *testenv.MariaDB {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "restored")
	if _, err := physical.Extract(ctx, physical.ExtractParams{Source: engines.ArchiveSource(repo, m), Dirs: map[string]string{physical.RootDatadir: dir}}); err != nil {
		t.Fatal(err)
	}
	if got := m.GetEngineMetadata()[physical.MetaPrepare]; got != physical.PrepareMariabackup {
		t.Fatalf("physical.prepare = %q", got)
	}
	out, err := exec.Command(testenv.RequireBinary(t, "mariabackup", mariabackupHint), "--prepare", "--target-dir="+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("mariabackup --prepare: %v\n%s", err, out)
	}
	return testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "restored", DataDir: dir})
}

// TestRoundTrip backs up under a concurrent writer (transfers between two
// tables, each bumping a counter), extracts the backup into a new datadir,
// prepares it with mariabackup and starts a server on it: the balances
// keep their total and the counter equals the number of transactions up
// to the recorded GTID, so the files sit exactly at the recorded
// coordinates. Then, with the writers stopped, a second backup restores
// to checksums equal to the source's, and a third after updating a small
// contiguous range of rows stores a small fraction of the second.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	testenv.RequireBinary(t, "mariabackup", mariabackupHint)
	accounts := 50000
	if testing.Short() {
		accounts = 10000
	}
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "src"})
	bank := testenv.CreateBank(t, src, accounts,
		"CREATE TABLE aria_t (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=Aria",
		"INSERT INTO aria_t SELECT seq, MD5(seq) FROM seq_1_to_2000",
		"CREATE TABLE myisam_t (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=MyISAM",
		"INSERT INTO myisam_t SELECT seq, MD5(seq) FROM seq_1_to_2000",
	)
	db := src.DB(t)
	repo := newRepo(t)
	e := New()

	writers := bank.Transfers(t, db, 2)
	m1, res, err := backup(t, repo, e, src.DSN)
	during := writers.Committed()
	writers.Stop()
	if err != nil {
		t.Fatal(err)
	}
	cp := m1.GetConsistency()
	t.Logf("backup 1 under writes: %d streams, %d bytes (%d stored), lock %v (result %v), %d transfers by the end, consistency %v",
		len(m1.GetStreams()), m1.GetLogicalBytes(), m1.GetStoredBytes(), m1.GetLockDuration().AsDuration(), res.LockDuration, during, cp)
	if m1.GetLockDuration().AsDuration() <= 0 {
		t.Errorf("no lock time recorded")
	}
	if cp.GetBinlogFile() == "" || cp.GetBinlogPosition() == 0 || cp.GetGtidSet() == "" || cp.GetTime() == nil {
		t.Errorf("consistency point incomplete: %v", cp)
	}
	if m1.GetServer().GetFlavor() != "mariadb" || !strings.HasPrefix(m1.GetEngineMetadata()[MetaTool], "mariabackup 10.") ||
		m1.GetEngineMetadata()[physical.MetaFormat] != physical.FormatVersion || m1.GetEngineMetadata()[MetaToLSN] == "" || m1.GetEngineMetadata()[MetaLastLSN] == "" {
		t.Errorf("manifest: server %v, metadata %v", m1.GetServer(), m1.GetEngineMetadata())
	}
	if m1.GetEngine() != Name {
		t.Errorf("engine %q", m1.GetEngine())
	}

	r1 := restore(t, repo, m1)
	out := r1.DB(t)
	if n := bank.Check(t, out, cp.GetGtidSet()); n == 0 {
		t.Errorf("no transfer before the consistency point: the test proves nothing")
	}
	// mariabackup does not copy binlogs: the restored server starts a
	// binlog of its own, so its gtid_binlog_pos is empty and the recorded
	// GTID is where a replica or a roll-forward continues from (SET GLOBAL
	// gtid_slave_pos = the recorded GTID).
	var restoredPos string
	if err := out.QueryRow("SELECT @@gtid_binlog_pos").Scan(&restoredPos); err != nil {
		t.Fatal(err)
	}
	if restoredPos != "" {
		t.Errorf("restored gtid_binlog_pos %q: expected none (no binlog copied)", restoredPos)
	}
	r1.Stop()

	// Quiet, and over the server's socket this time: the restored server
	// must equal the source exactly.
	m2, _, err := backup(t, repo, e, "tidemark@unix("+src.Socket+")/")
	if err != nil {
		t.Fatal(err)
	}
	r2 := restore(t, repo, m2)
	testenv.Compare(t, db, r2.DB(t), "bank")
	var gtid2 string
	if err := r2.DB(t).QueryRow("SELECT (SELECT COUNT(*) FROM bank.aria_t) + (SELECT COUNT(*) FROM bank.myisam_t)").Scan(&gtid2); err != nil || gtid2 != "4000" {
		t.Errorf("Aria and MyISAM rows restored: %s %v", gtid2, err)
	}
	r2.Stop()

	// A small contiguous change, then a third backup: only blocks that
	// changed are new to the repository.
	lo := accounts / 2
	src.Exec(t, fmt.Sprintf("UPDATE bank.checking SET balance = balance + 1 WHERE id BETWEEN %d AND %d", lo, lo+accounts/100))
	m3, _, err := backup(t, repo, e, src.DSN)
	if err != nil {
		t.Fatal(err)
	}
	// The redo log mariabackup copies (ib_logfile0) runs from InnoDB's
	// last checkpoint to the end of the copy. Between two backups without
	// a checkpoint it only grows at its end (measured: the earlier copy is
	// a byte-exact prefix of the later), so all but its last block dedup;
	// after a checkpoint it starts elsewhere and every block is new. Its
	// size follows the redo written since the checkpoint, not the change.
	// Every other file is stored block for block as before, except the
	// blocks of pages InnoDB flushed in between.
	var redo, data uint64
	for name, n := range newChunks(m2, m3) {
		t.Logf("  new in backup 3: %-40s %8d stored bytes", name, n)
		if name == "files/datadir/ib_logfile0" {
			redo += n
		} else {
			data += n
		}
	}
	frac := float64(data) / float64(m2.GetStoredBytes())
	t.Logf("backup 3 after updating 1%% of one table: %d new stored bytes (%d of them the copied redo log) of %d stored for backup 2; data files: %.1f%%",
		m3.GetNewStoredBytes(), redo, m2.GetStoredBytes(), 100*frac)
	if frac > 0.10 {
		t.Errorf("the third backup uploaded %.0f%% of the second's size in data files: aligned blocks should dedup unchanged regions", 100*frac)
	}
}

// newChunks sums, per stream of b, the stored bytes of chunks a does not
// hold: where a second backup's new data is.
func newChunks(a, b *v1.Manifest) map[string]uint64 {
	have := map[string]bool{}
	for _, s := range a.GetStreams() {
		for _, c := range s.GetChunks() {
			have[string(c.GetId())] = true
		}
	}
	out := map[string]uint64{}
	for _, s := range b.GetStreams() {
		for _, c := range s.GetChunks() {
			if !have[string(c.GetId())] {
				out[s.GetName()] += uint64(c.GetStoredSize())
				have[string(c.GetId())] = true
			}
		}
	}
	return out
}

// TestDDLDuringBackup: Aria and InnoDB tables are created, renamed and
// dropped while the backup runs; mariabackup renames and removes the Aria
// files in its stream (counted in the manifest) and handles InnoDB's with
// files of its own. The tool runs through a tee (a wrapper double around
// the real mariabackup) so that the same stream can go through `mbstream
// -x`: the backup's files, extracted, are exactly mbstream's. Then the
// prepared datadir starts and every table whose files it holds opens with
// its one row.
func TestDDLDuringBackup(t *testing.T) {
	t.Parallel()
	testenv.RequireBinary(t, "mariabackup", mariabackupHint)
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "ddl"})
	src.Exec(t, "CREATE DATABASE d", "CREATE TABLE d.big (id INT PRIMARY KEY, v VARCHAR(200))",
		"INSERT INTO d.big SELECT seq, REPEAT('x', 200) FROM d.seq_1_to_100000")
	db := src.DB(t)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	var rounds atomic.Int64
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			stmts := []string{
				fmt.Sprintf("CREATE TABLE d.a%d (id INT) ENGINE=Aria", i),
				fmt.Sprintf("INSERT INTO d.a%d VALUES (%d)", i, i),
				fmt.Sprintf("RENAME TABLE d.a%d TO d.b%d", i, i),
				fmt.Sprintf("CREATE TABLE d.t%d (id INT PRIMARY KEY) ENGINE=InnoDB", i),
				fmt.Sprintf("INSERT INTO d.t%d VALUES (%d)", i, i),
				fmt.Sprintf("RENAME TABLE d.t%d TO d.r%d", i, i),
			}
			if i >= 2 {
				stmts = append(stmts, fmt.Sprintf("DROP TABLE d.b%d", i-2), fmt.Sprintf("DROP TABLE d.r%d", i-2))
			}
			for _, s := range stmts {
				if _, err := db.Exec(s); err != nil {
					if ctx.Err() == nil {
						t.Errorf("%s: %v", s, err)
					}
					return
				}
			}
			rounds.Add(1)
		}
	}()
	for rounds.Load() < 3 {
		select {
		case <-done:
			t.Fatal("the DDL loop stopped")
		case <-time.After(5 * time.Millisecond):
		}
	}
	repo := newRepo(t)
	real := testenv.RequireBinary(t, "mariabackup", mariabackupHint)
	teed := filepath.Join(t.TempDir(), "stream.xb")
	wrapper := filepath.Join(t.TempDir(), "mariabackup-tee")
	if err := os.WriteFile(wrapper, []byte(fmt.Sprintf("#!/bin/bash\nset -o pipefail\nif [ \"$1\" = --version ]; then exec %s --version; fi\n%s \"$@\" | tee %s\n", real, real, teed)), 0o700); err != nil {
		t.Fatal(err)
	}
	m, res, err := backup(t, repo, &Engine{MariaBackup: wrapper}, src.DSN)
	stop()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d DDL rounds; manifest %s = %q; warnings %q", rounds.Load(), MetaDDL, m.GetEngineMetadata()[MetaDDL], res.Warnings)
	if m.GetEngineMetadata()[MetaDDL] == "" {
		t.Log("note: the tool renamed or removed no file in this run (the DDL fell outside its copy of the Aria tables)")
	}

	// The backup's files against mbstream's extraction of the same stream.
	want := filepath.Join(t.TempDir(), "mbstream")
	if err := os.Mkdir(want, 0o700); err != nil {
		t.Fatal(err)
	}
	x := exec.Command(testenv.RequireBinary(t, "mbstream", mariabackupHint), "-x", "-C", want)
	in, err := os.Open(teed)
	if err != nil {
		t.Fatal(err)
	}
	x.Stdin = in
	if out, err := x.CombinedOutput(); err != nil {
		t.Fatalf("mbstream -x: %v\n%s", err, out)
	}
	_ = in.Close()
	dir := filepath.Join(t.TempDir(), "extracted")
	if _, err := physical.Extract(context.Background(), physical.ExtractParams{Source: engines.ArchiveSource(repo, m), Dirs: map[string]string{physical.RootDatadir: dir}}); err != nil {
		t.Fatal(err)
	}
	if a, b := treeSums(t, want), treeSums(t, dir); !maps.Equal(a, b) {
		for p, h := range a {
			if b[p] != h {
				t.Errorf("%s: mbstream %q, backup %q", p, h, b[p])
			}
		}
		for p := range b {
			if _, ok := a[p]; !ok {
				t.Errorf("%s: in the backup, not in mbstream's extraction", p)
			}
		}
	}

	r := restore(t, repo, m)
	out := r.DB(t)
	rows, err := out.Query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'd' AND TABLE_NAME <> 'big' AND TABLE_TYPE = 'BASE TABLE'")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	_ = rows.Close()
	if len(names) == 0 {
		t.Fatal("the restored server holds none of the tables the DDL loop created")
	}
	var missing []string
	for _, n := range names {
		var cnt int
		err := out.QueryRow("SELECT COUNT(*) FROM d." + n).Scan(&cnt)
		if _, serr := os.Stat(filepath.Join(dir, "d", n+".frm")); err != nil && strings.HasPrefix(n, "b") && serr == nil {
			// An Aria table created and renamed during the backup whose
			// data files mariabackup never sent (see the warning): its
			// own output lacks them too, as the comparison above shows.
			missing = append(missing, n)
			continue
		}
		if err != nil || cnt != 1 {
			t.Errorf("table d.%s: %d rows, %v", n, cnt, err)
		}
	}
	if len(missing) > 0 {
		t.Logf("tables without data files in mariabackup's output: %v", missing)
	}
	var big int
	if err := out.QueryRow("SELECT COUNT(*) FROM d.big").Scan(&big); err != nil || big != 100000 {
		t.Errorf("d.big: %d rows, %v", big, err)
	}
	t.Logf("restored tables of the DDL loop: %v", names)
}

// treeSums maps every regular file under dir to its SHA-256.
func treeSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = fmt.Sprintf("%x", sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

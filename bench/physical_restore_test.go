package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/logical"
	"github.com/tidemark-backup/tidemark/engines/physical"
	"github.com/tidemark-backup/tidemark/engines/physical/physicaltest"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// BenchmarkPhysicalRestore measures restoring one sysbench dataset
// (TIDEMARK_BENCH_PHYS_TABLES × TIDEMARK_BENCH_PHYS_ROWS, default 8 ×
// 1,000,000; shrink them for a quick run) three ways, each into a new
// datadir or an empty server on the same disk, and checks every result
// table by table against the source:
//
//   - tidemark: `tidemark restore ID --to-datadir` of a mariabackup-engine
//     backup in a file:// repository (extract + `mariabackup --prepare`),
//     and of a crash-consistent image (extract + crash recovery on a
//     temporary server);
//   - mariabackup: `mariabackup --prepare` then `--copy-back` from a local,
//     uncompressed copy of the same backup (the copy itself, made with cp
//     beforehand, is not timed: it stands for the backup at rest);
//   - logical: Tidemark's logical restore of a logical backup of the same
//     data into an empty server, 2 connections.
//
// Run with -benchtime 1x. Rows: seconds and MB/s of the tablespaces' size
// (sbtest/*.ibd).
func BenchmarkPhysicalRestore(b *testing.B) {
	rows := envInt(b, "TIDEMARK_BENCH_PHYS_ROWS", 1_000_000)
	tables := envInt(b, "TIDEMARK_BENCH_PHYS_TABLES", 8)
	sysbench := requirePeer(b, "sysbench", sysbenchHint)
	mariabackup := requirePeer(b, "mariabackup", testenv.MariaDBInstallHint)
	ctx := context.Background()
	work := b.TempDir()

	src := testenv.StartMariaDB(b, testenv.MariaDBOptions{Name: "phys-src", ExtraArgs: logicalServerArgs})
	src.Exec(b, "CREATE DATABASE sbtest")
	cmd := exec.Command(sysbench, "oltp_read_write", "--db-driver=mysql", "--mysql-host=127.0.0.1",
		"--mysql-port="+strconv.Itoa(src.Port), "--mysql-user=root", "--mysql-db=sbtest",
		"--tables="+strconv.Itoa(tables), "--table-size="+strconv.Itoa(rows), "--threads=2", "prepare")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	srcDB := openPool(b, src)
	want := testenv.Checksums(b, srcDB, "sbtest")
	_ = srcDB.Close()

	st, err := file.Open(filepath.Join(work, "repo"), file.Options{Create: true})
	if err != nil {
		b.Fatal(err)
	}
	repo, err := archive.Init(ctx, st, archive.InitOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer repo.Close()

	mb, mbDir := physicaltest.MariabackupDir(b, repo, src, "phys-src")
	lg, err := repo.WithBackup(ctx, archive.BackupOptions{Instance: "phys-src", Engine: "logical"}, func(ctx context.Context, bk *archive.Backup) error {
		_, err := logical.New().Backup(ctx, engines.BackupParams{DSN: src.DSN, Parallel: 2, Sink: engines.ArchiveSink(bk)})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	snap := physicaltest.Snapshot(b, repo, src, "phys-src") // kills src
	size := dirSize(b, filepath.Join(src.DataDir, "sbtest"))
	fmt.Printf("physical restore: sysbench %d tables × %d rows, %.0f MB of tablespaces; datadir %.0f MB (with a 512 MB redo log), mariabackup dir %.0f MB\n",
		tables, rows, float64(size)/1e6, float64(dirSize(b, src.DataDir))/1e6, float64(dirSize(b, mbDir))/1e6)

	check := func(b *testing.B, dir string) {
		b.Helper()
		dst := testenv.StartMariaDB(b, testenv.MariaDBOptions{DataDir: dir, Name: "phys-check", ExtraArgs: logicalServerArgs})
		db := openPool(b, dst)
		if got := testenv.Checksums(b, db, "sbtest"); !sumsEqual(got, want) {
			b.Errorf("%s differs from the source", dir)
		}
		_ = db.Close()
		dst.Stop()
		_ = os.RemoveAll(dir)
	}
	row := func(name string, d time.Duration) {
		fmt.Printf("%-44s %8.2f s %8.1f MB/s\n", name, d.Seconds(), float64(size)/1e6/d.Seconds())
	}

	for _, c := range []struct {
		name string
		m    string
	}{{"tidemark --to-datadir (mariabackup backup)", mb.BackupId}, {"tidemark --to-datadir (crash image)", snap.BackupId}} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				dir := filepath.Join(work, "restored")
				m, err := repo.LoadManifest(ctx, c.m)
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				res, err := physical.Restore(ctx, physical.RestoreParams{Source: engines.ArchiveSource(repo, m),
					Dirs: map[string]string{physical.RootDatadir: dir}, ServerArgs: logicalServerArgs})
				if err != nil {
					b.Fatal(err)
				}
				d := time.Since(start)
				row(c.name, d)
				fmt.Printf("    extract %.2f s, prepare %.2f s\n", res.Extract.Seconds(), res.Prepare.Seconds())
				b.ReportMetric(d.Seconds(), "s")
				check(b, dir)
			}
		})
	}
	b.Run("mariabackup --prepare + --copy-back", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			local := filepath.Join(work, "local")
			copyDir(b, mbDir, local)
			dir := filepath.Join(work, "restored")
			start := time.Now()
			if out, err := exec.Command(mariabackup, "--prepare", "--target-dir="+local).CombinedOutput(); err != nil {
				b.Fatalf("prepare: %v\n%s", err, out)
			}
			if out, err := exec.Command(mariabackup, "--copy-back", "--target-dir="+local, "--datadir="+dir).CombinedOutput(); err != nil {
				b.Fatalf("copy-back: %v\n%s", err, out)
			}
			d := time.Since(start)
			row("mariabackup --prepare + --copy-back", d)
			b.ReportMetric(d.Seconds(), "s")
			_ = os.RemoveAll(local)
			check(b, dir)
		}
	})
	b.Run("logical restore", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			dst := testenv.StartMariaDB(b, testenv.MariaDBOptions{Name: "phys-logical", ExtraArgs: logicalServerArgs})
			start := time.Now()
			if _, err := logical.New().Restore(ctx, engines.RestoreParams{DSN: dst.DSN, Parallel: 2, Source: engines.ArchiveSource(repo, lg)}); err != nil {
				b.Fatal(err)
			}
			d := time.Since(start)
			row("logical restore (2 connections)", d)
			b.ReportMetric(d.Seconds(), "s")
			db := openPool(b, dst)
			if got := testenv.Checksums(b, db, "sbtest"); !sumsEqual(got, want) {
				b.Errorf("logical restore differs from the source")
			}
			_ = db.Close()
			dst.Stop()
		}
	})
}

func dirSize(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

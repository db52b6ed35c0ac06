package bench

import (
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/mariabackup"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// BenchmarkMariabackup measures the mariabackup engine into a file://
// repository side by side with `mariabackup --backup --stream=xbstream |
// zstd -1 > file` on the same sysbench server (TIDEMARK_BENCH_TABLES ×
// TIDEMARK_BENCH_ROWS, default 8 × 1M as in issue 12; the whole instance,
// --parallel 2 both), then a second engine backup into the same repository
// after updating 1% of one table's rows in one contiguous range. Target:
// the engine's first backup ≤ 1.0× the pipeline's time. Reported per run:
// seconds, MB/s of the stream's bytes, peak RSS (VmHWM of this process for
// the engine, which leaves out its mariabackup child, the same program the
// pipeline runs; the pipeline's summed child peaks), bytes written, and for
// the second backup the fraction of the first's stored bytes it uploaded.
// Run with -benchtime 1x.
func BenchmarkMariabackup(b *testing.B) {
	mb := requirePeer(b, "mariabackup", mbackupHint)
	zstd := requirePeer(b, "zstd", zstdHint)
	sysbench := requirePeer(b, "sysbench", sysbenchHint)
	rows, tables := envInt(b, "TIDEMARK_BENCH_ROWS", 1000000), envInt(b, "TIDEMARK_BENCH_TABLES", 8)
	src := testenv.StartMariaDB(b, testenv.MariaDBOptions{Name: "bench-mariabackup"})
	src.Exec(b, "CREATE DATABASE sbtest")
	start := time.Now()
	cmd := osexec.Command(sysbench, "oltp_read_write", "--db-driver=mysql", "--mysql-host=127.0.0.1",
		"--mysql-port="+strconv.Itoa(src.Port), "--mysql-user=root", "--mysql-db=sbtest",
		"--tables="+strconv.Itoa(tables), "--table-size="+strconv.Itoa(rows), "--threads=2", "prepare")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	src.Exec(b, "RESET MASTER")
	fmt.Printf("dataset sysbench %d × %d rows, datadir %.0f MB, filled in %v\n", tables, rows, float64(pathSize(src.DataDir))/1e6, time.Since(start).Round(time.Second))
	work := b.TempDir()
	ctx := context.Background()

	var pipeSecs float64
	pipeline := func(b *testing.B) {
		out := filepath.Join(work, "mariabackup.xb.zst")
		for range b.N {
			tmp, err := os.MkdirTemp(work, "mb-")
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			u, err := runPipeline(ctx, "", out, []string{mb, "--no-defaults", "--backup", "--stream=xbstream",
				"--target-dir=" + tmp, "--datadir=" + src.DataDir, "--host=127.0.0.1", "--port=" + strconv.Itoa(src.Port), "--user=root",
				"--parallel=" + strconv.Itoa(benchParallel)}, []string{zstd, "-1", "-q", "-c"})
			if err != nil {
				b.Fatal(err)
			}
			pipeSecs = time.Since(t0).Seconds()
			size := pathSize(out)
			b.ReportMetric(pipeSecs, "s")
			b.ReportMetric(float64(u.maxRSS)/(1<<20), "peakRSS-MiB")
			b.ReportMetric(float64(size), "bytes")
			fmt.Printf("row mariabackup|zstd-1: %.1f s, %.0f MiB peak RSS, %d bytes written\n", pipeSecs, float64(u.maxRSS)/(1<<20), size)
			_ = os.Remove(out)
			_ = os.RemoveAll(tmp)
		}
	}
	b.Run("pipeline", pipeline)

	var repo *archive.Repo
	var first *v1.Manifest
	var firstSecs float64
	engineFirst := func(b *testing.B) {
		for range b.N {
			dir := filepath.Join(work, "repo")
			_ = os.RemoveAll(dir)
			st, err := file.Open(dir, file.Options{Create: true})
			if err != nil {
				b.Fatal(err)
			}
			if repo, err = archive.Init(ctx, st, archive.InitOptions{}); err != nil {
				b.Fatal(err)
			}
			resetPeakRSS(b)
			t0 := time.Now()
			first = engineBackup(b, repo, src)
			secs := time.Since(t0).Seconds()
			firstSecs = secs
			rss := peakRSSMiB(b)
			b.ReportMetric(secs, "s")
			b.ReportMetric(float64(first.GetLogicalBytes())/1e6/secs, "MB/s")
			b.ReportMetric(rss, "peakRSS-MiB")
			b.ReportMetric(float64(pathSize(dir)), "bytes")
			ratio := 0.0
			if pipeSecs > 0 {
				ratio = secs / pipeSecs
			}
			fmt.Printf("row tidemark mariabackup engine, file://: %.1f s (%.2f× the pipeline; target ≤ 1.0×), %.0f MiB peak RSS, %d bytes stored of %d, lock %v\n",
				secs, ratio, rss, pathSize(dir), first.GetLogicalBytes(), first.GetLockDuration().AsDuration())
		}
	}
	// Alternated, so that neither side alone profits from a warm cache or
	// suffers from a neighbour's burst.
	b.Run("engine-file", engineFirst)

	b.Run("pipeline-again", pipeline)
	b.Run("engine-file-again", engineFirst)

	b.Run("engine-second", func(b *testing.B) {
		if repo == nil {
			b.Skip("needs engine-file")
		}
		for range b.N {
			lo := rows / 2
			src.Exec(b, fmt.Sprintf("UPDATE sbtest.sbtest1 SET k = k + 1 WHERE id BETWEEN %d AND %d", lo, lo+rows/100))
			resetPeakRSS(b)
			t0 := time.Now()
			m := engineBackup(b, repo, src)
			secs := time.Since(t0).Seconds()
			frac := float64(m.GetNewStoredBytes()) / float64(first.GetStoredBytes())
			redo := newStored(first, m, "files/datadir/ib_logfile0")
			b.ReportMetric(secs, "s")
			b.ReportMetric(100*frac, "%new")
			fmt.Printf("row second engine backup after 1%% of one table: %.1f s (%.2f× the first), %d new stored bytes = %.1f%% of the first's %d (%d of them the copied redo log; data files %.1f%%), %.0f MiB peak RSS\n",
				secs, secs/firstSecs, m.GetNewStoredBytes(), 100*frac, first.GetStoredBytes(), redo,
				100*float64(m.GetNewStoredBytes()-redo)/float64(first.GetStoredBytes()), peakRSSMiB(b))
			first = m
		}
	})
}

func engineBackup(b *testing.B, repo *archive.Repo, src *testenv.MariaDB) *v1.Manifest {
	b.Helper()
	m, err := repo.WithBackup(context.Background(), archive.BackupOptions{Instance: "bench", Engine: mariabackup.Name}, func(ctx context.Context, bk *archive.Backup) error {
		_, err := mariabackup.New().Backup(ctx, engines.BackupParams{DSN: src.DSN, Parallel: benchParallel, Sink: engines.ArchiveSink(bk)})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// newStored is the stored size of stream's chunks in b that a does not
// reference.
func newStored(a, b *v1.Manifest, stream string) uint64 {
	have := map[string]bool{}
	for _, s := range a.GetStreams() {
		for _, c := range s.GetChunks() {
			have[string(c.GetId())] = true
		}
	}
	var n uint64
	for _, s := range b.GetStreams() {
		if s.GetName() != stream {
			continue
		}
		for _, c := range s.GetChunks() {
			if !have[string(c.GetId())] {
				n += uint64(c.GetStoredSize())
			}
		}
	}
	return n
}

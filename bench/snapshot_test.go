package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tidemark-backup/tidemark/cli"
	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/snapshot"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// BenchmarkSnapshot measures the snapshot engine on sysbench data
// (TIDEMARK_BENCH_TABLES × TIDEMARK_BENCH_ROWS, default 8 × 1M) in a
// MariaDB whose datadir is in a Btrfs subvolume on a loop device
// (TIDEMARK_BENCH_BTRFS_SIZE, default 8G, sparse), side by side with
// `mariabackup --backup --stream=xbstream | zstd -1 > file` on the same
// server. Rows:
//
//   - block/<size>: a first backup to file:// and a second after updating
//     1% of the rows in one contiguous id range, for 256 KiB, 1 MiB and
//     4 MiB blocks (TIDEMARK_BENCH_BLOCKS, in KiB): the measurement behind
//     snapshot.DefaultBlock. Targets: second ≤ 5% of the first's stored
//     bytes and ≤ 0.35× its time.
//   - first/file, first/minio: a first backup, time, lock, peak RSS of this
//     process (target ≤ 256 MiB), and the ratio to mariabackup's time
//     (target ≤ 0.7).
//   - engine/mariabackup: the mariabackup engine into a repository, when
//     the binary's registry has it (skipped otherwise).
//   - lock: p99 lock time of 10 backups under sysbench oltp_write_only load
//     (target ≤ 100 ms).
//
// The server runs with BenchmarkLogical's arguments (512 MiB redo log)
// plus TIDEMARK_BENCH_SERVER_ARGS. Needs root (loop device), sysbench, zstd, mariabackup (its row is
// skipped without it) and MinIO. Run with -benchtime 1x.
func BenchmarkSnapshot(b *testing.B) {
	rows := envInt(b, "TIDEMARK_BENCH_ROWS", 1_000_000)
	tables := envInt(b, "TIDEMARK_BENCH_TABLES", 8)
	size := os.Getenv("TIDEMARK_BENCH_BTRFS_SIZE")
	if size == "" {
		size = "8G"
	}
	blocks := []int{256, 1024, 4096}
	if s := os.Getenv("TIDEMARK_BENCH_BLOCKS"); s != "" {
		blocks = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("TIDEMARK_BENCH_BLOCKS=%q: KiB, comma-separated", s)
			}
			blocks = append(blocks, n)
		}
	}
	sysbench := requirePeer(b, "sysbench", sysbenchHint)
	zstd := requirePeer(b, "zstd", zstdHint)
	mariabackup, _ := exec.LookPath("mariabackup")

	vol := testenv.StartBtrfs(b, size)
	sub := vol.Subvolume(b, "mysql")
	src := testenv.StartMariaDB(b, testenv.MariaDBOptions{Name: "snap-bench", DataDir: filepath.Join(sub, "data"), ExtraArgs: append(slices.Clone(logicalServerArgs), strings.Fields(os.Getenv("TIDEMARK_BENCH_SERVER_ARGS"))...)})
	src.Exec(b, "CREATE DATABASE sbtest")
	sb := func(args ...string) *exec.Cmd {
		return exec.Command(sysbench, append([]string{"oltp_write_only", "--db-driver=mysql", "--mysql-host=127.0.0.1",
			"--mysql-port=" + strconv.Itoa(src.Port), "--mysql-user=root", "--mysql-db=sbtest",
			"--tables=" + strconv.Itoa(tables), "--table-size=" + strconv.Itoa(rows)}, args...)...)
	}
	if out, err := sb("--threads=2", "prepare").CombinedOutput(); err != nil {
		b.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	// The load's binlog is not kept: mariabackup does not copy binlogs,
	// and a production server's are bounded by expiry (and archived by the
	// binlog streamer); the snapshot copies the one that remains.
	src.Exec(b, "RESET MASTER", "FLUSH TABLES")
	settle(b, src)
	work := b.TempDir()
	ctx := context.Background()

	openRepo := func(b *testing.B, uri string, opts location.Options) *archive.Repo {
		st, err := location.Open(ctx, uri, opts)
		if err != nil {
			b.Fatal(err)
		}
		r, err := archive.Init(ctx, st, archive.InitOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { r.Close(); _ = st.Close() })
		return r
	}
	run := func(b *testing.B, r *archive.Repo, block int, whole ...bool) (*v1.Manifest, time.Duration) {
		e := snapshot.New()
		e.Block, e.StateDir = block, work
		e.WholeRedo = len(whole) > 0 && whole[0]
		start, cpu0 := time.Now(), cpuTime(unix.RUSAGE_SELF)
		m, err := r.WithBackup(ctx, archive.BackupOptions{Engine: snapshot.Name, Instance: "bench", CompressionLevel: 1}, func(ctx context.Context, bk *archive.Backup) error {
			_, err := e.Backup(ctx, engines.BackupParams{DSN: src.DSN, Parallel: benchParallel, Sink: engines.ArchiveSink(bk)})
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		fmt.Printf("snapshot bench: snapshot backup (block %d KiB, whole redo %v): %.2f s, %.2f s of CPU (this process, user + system), load average %s\n", block>>10, e.WholeRedo, d.Seconds(), (cpuTime(unix.RUSAGE_SELF) - cpu0).Seconds(), loadAvg())
		return m, d
	}
	lo := 1 + rows/2
	update := fmt.Sprintf("UPDATE sbtest.sbtest1 SET k = k + 1, c = REVERSE(c) WHERE id BETWEEN %d AND %d", lo, lo+tables*rows/100-1)

	var mbTime time.Duration
	// peer runs the peer once; it runs first and again last, so that a
	// machine whose load changes during the run shows in the two times.
	peer := func(b *testing.B) time.Duration {
		if mariabackup == "" {
			b.Skip("mariabackup not in PATH")
		}
		out := filepath.Join(work, "mb.xbstream.zst")
		start, cpu0 := time.Now(), cpuTime(unix.RUSAGE_CHILDREN)
		sh := fmt.Sprintf("%s --backup --stream=xbstream --user=root --host=127.0.0.1 --port=%d --datadir=%s --target-dir=%s | %s -1 -q -T1 > %s",
			mariabackup, src.Port, src.DataDir, filepath.Join(work, "mbtmp"), zstd, out)
		if o, err := exec.Command("bash", "-o", "pipefail", "-c", sh).CombinedOutput(); err != nil {
			b.Fatalf("mariabackup | zstd: %v\n%s", err, tail(string(o), 2000))
		}
		d := time.Since(start)
		fi, _ := os.Stat(out)
		fmt.Printf("snapshot bench: mariabackup | zstd -1: %.2f s, %.0f MB, %.2f s of CPU (both processes, user + system), load average %s\n", d.Seconds(), float64(fi.Size())/1e6, (cpuTime(unix.RUSAGE_CHILDREN) - cpu0).Seconds(), loadAvg())
		_ = os.Remove(out)
		_ = os.RemoveAll(filepath.Join(work, "mbtmp"))
		return d
	}
	b.Run("mariabackup", func(b *testing.B) { mbTime = peer(b) })

	// The mariabackup engine (branch phys-xb), when this binary has it:
	// the same server, into a repository, for the side-by-side row.
	b.Run("engine/mariabackup", func(b *testing.B) {
		eng, err := cli.EngineWiring().Engines.Get("mariabackup")
		if err != nil {
			b.Skip(err)
		}
		r := openRepo(b, "file://"+filepath.Join(work, "repo-mariabackup"), location.Options{Create: true})
		resetPeakRSS(b)
		start := time.Now()
		m, err := r.WithBackup(ctx, archive.BackupOptions{Engine: eng.Name(), Instance: "bench", CompressionLevel: 1}, func(ctx context.Context, bk *archive.Backup) error {
			_, err := eng.Backup(ctx, engines.BackupParams{DSN: src.DSN, Parallel: benchParallel, Sink: engines.ArchiveSink(bk)})
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		ratio := ""
		if mbTime > 0 {
			ratio = fmt.Sprintf(", %.2f× mariabackup | zstd", d.Seconds()/mbTime.Seconds())
		}
		fmt.Printf("snapshot bench: mariabackup engine: %.2f s, %.0f MB stored, peak RSS %.0f MiB%s\n", d.Seconds(), float64(m.NewStoredBytes)/1e6, peakRSSMiB(b), ratio)
	})

	for _, kib := range blocks {
		b.Run(fmt.Sprintf("block/%dKiB", kib), func(b *testing.B) {
			r := openRepo(b, "file://"+filepath.Join(work, fmt.Sprintf("repo-%d", kib)), location.Options{Create: true})
			resetPeakRSS(b)
			m1, t1 := run(b, r, kib<<10)
			rss := peakRSSMiB(b)
			src.Exec(b, update)
			m2, t2 := run(b, r, kib<<10)
			fmt.Printf("snapshot bench: block %4d KiB: first %.2f s, %.0f MB stored, lock %v, peak RSS %.0f MiB; second %.2f s (%.2f×), %.1f MB new (%.2f%% of the first)\n",
				kib, t1.Seconds(), float64(m1.NewStoredBytes)/1e6, m1.LockDuration.AsDuration().Round(time.Millisecond), rss,
				t2.Seconds(), t2.Seconds()/t1.Seconds(), float64(m2.NewStoredBytes)/1e6, 100*float64(m2.NewStoredBytes)/float64(m1.NewStoredBytes))
			fmt.Printf("snapshot bench: block %4d KiB: redo log: %s\n", kib, m1.EngineMetadata[snapshot.MetaRedo])
			if mbTime > 0 {
				fmt.Printf("snapshot bench: block %4d KiB: first backup %.2f× mariabackup's time\n", kib, t1.Seconds()/mbTime.Seconds())
			}
		})
	}

	// The same first backup storing the whole redo log (as before the
	// live window; all-zero blocks are still holes): what the window saves.
	b.Run("whole-redo", func(b *testing.B) {
		r := openRepo(b, "file://"+filepath.Join(work, "repo-whole-redo"), location.Options{Create: true})
		m, d := run(b, r, snapshot.DefaultBlock, true)
		ratio := ""
		if mbTime > 0 {
			ratio = fmt.Sprintf(", %.2f× mariabackup's time", d.Seconds()/mbTime.Seconds())
		}
		fmt.Printf("snapshot bench: whole redo log, block 1024 KiB: %.2f s, %.0f MB stored%s\n", d.Seconds(), float64(m.NewStoredBytes)/1e6, ratio)
	})

	b.Run("mariabackup-again", func(b *testing.B) {
		d := peer(b)
		if mbTime > 0 {
			fmt.Printf("snapshot bench: mariabackup | zstd -1 again, after the snapshot rows: %.2f× its first time\n", d.Seconds()/mbTime.Seconds())
		}
	})

	b.Run("first/minio", func(b *testing.B) {
		mc := testenv.StartMinIO(b)
		r := openRepo(b, fmt.Sprintf("s3://%s/snap?endpoint=%s&tls=false", mc.Bucket, mc.Endpoint), minioOptions(mc))
		resetPeakRSS(b)
		// MinIO runs on the same two cores: its CPU time says how much of
		// them the repository itself took from the backup.
		minioCPU0 := procCPU(mc.Pid())
		m, d := run(b, r, snapshot.DefaultBlock)
		minioCPU := procCPU(mc.Pid()) - minioCPU0
		ratio := ""
		if mbTime > 0 {
			ratio = fmt.Sprintf(", %.2f× mariabackup's time", d.Seconds()/mbTime.Seconds())
		}
		fmt.Printf("snapshot bench: MinIO: %.2f s, %.0f MB stored, lock %v, peak RSS %.0f MiB, MinIO's CPU %.2f s (user + system)%s\n",
			d.Seconds(), float64(m.NewStoredBytes)/1e6, m.LockDuration.AsDuration().Round(time.Millisecond), peakRSSMiB(b), minioCPU.Seconds(), ratio)
	})

	b.Run("lock", func(b *testing.B) {
		r := openRepo(b, "file://"+filepath.Join(work, "repo-lock"), location.Options{Create: true})
		load := sb("--threads=2", "--time=0", "--events=0", "--report-interval=0", "run")
		if err := load.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { _ = load.Process.Kill(); _ = load.Wait() }()
		time.Sleep(2 * time.Second)
		var locks, ddls []time.Duration
		for range 10 {
			m, _ := run(b, r, snapshot.DefaultBlock)
			locks = append(locks, m.LockDuration.AsDuration())
			ddl, _ := time.ParseDuration(m.EngineMetadata[snapshot.MetaDDLBlocked])
			ddls = append(ddls, ddl)
		}
		slices.Sort(locks)
		slices.Sort(ddls)
		fmt.Printf("snapshot bench: lock (commits blocked) under sysbench write load, 10 backups: median %v, p99 (max of 10) %v; DDL blocked: median %v, max %v\n",
			locks[len(locks)/2].Round(time.Millisecond), locks[len(locks)-1].Round(time.Millisecond),
			ddls[len(ddls)/2].Round(time.Millisecond), ddls[len(ddls)-1].Round(time.Millisecond))
	})
}

// settle waits until the server has written its dirty pages out after
// loading, so that the timed backups (ours and the peers') do not share
// the machine with the page cleaner's catch-up, which on 2 cores made the
// first timed run of either side up to 30% slower.
func settle(b *testing.B, m *testenv.MariaDB) {
	b.Helper()
	m.Exec(b, "SET GLOBAL innodb_max_dirty_pages_pct = 0")
	defer m.Exec(b, "SET GLOBAL innodb_max_dirty_pages_pct = 90")
	deadline := time.Now().Add(3 * time.Minute)
	db := m.DB(b)
	for {
		var name string
		var dirty int
		if err := db.QueryRow("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'").Scan(&name, &dirty); err != nil {
			b.Fatal(err)
		}
		if dirty < 64 || time.Now().After(deadline) {
			b.Logf("settled: %d dirty pages", dirty)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// cpuTime is the user + system CPU time of who (RUSAGE_SELF: this process;
// RUSAGE_CHILDREN: its children that have been waited for). Less sensitive
// than wall time to a busy machine; neither counts the kernel threads that
// serve the reads (the loop device's, Btrfs's checksum workers).
func cpuTime(who int) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg is /proc/loadavg's 1-minute figure.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

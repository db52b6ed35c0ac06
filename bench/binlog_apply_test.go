package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines/binlog/apply"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// binlogServerArgs are the source's and every target's mariadbd arguments
// (on top of testenv's: binlog on, ROW format).
var binlogServerArgs = []string{
	"--innodb-buffer-pool-size=512M",
	"--innodb-log-file-size=512M",
	"--innodb-flush-log-at-trx-commit=2",
	"--innodb-flush-method=fsync",
	"--max-allowed-packet=256M",
	"--sync-binlog=0",
}

// BenchmarkBinlogApply measures the roll-forward: the same binlog (sysbench
// oltp_write_only transactions, TIDEMARK_BENCH_BINLOG_TXNS, default 200,000)
// applied onto the same base by Tidemark (the replication method, 1 and 4
// applier threads) and by `mariadb-binlog FILES | mariadb`. Every target is a
// fresh server on a copy of the source's datadir taken right after `sysbench
// prepare` and RESET MASTER, checked equal to the source's base before the
// run and to the source's end state after it.
//
// The targets binlog what they apply (log_bin with log_slave_updates, as a
// restored primary would), both sides alike; TIDEMARK_BENCH_TARGET_BINLOG=0
// starts them with --skip-log-bin instead. TIDEMARK_BENCH_BINLOG_SQL=1 adds
// Tidemark's sql fallback.
func BenchmarkBinlogApply(b *testing.B) {
	txns := envInt(b, "TIDEMARK_BENCH_BINLOG_TXNS", 200_000)
	rows := envInt(b, "TIDEMARK_BENCH_BINLOG_ROWS", 100_000)
	tables := envInt(b, "TIDEMARK_BENCH_BINLOG_TABLES", 4)
	targetBinlog := os.Getenv("TIDEMARK_BENCH_TARGET_BINLOG") != "0"
	sysbench := requirePeer(b, "sysbench", sysbenchHint)
	decoder := requirePeer(b, "mariadb-binlog", testenv.MariaDBInstallHint)
	client := requirePeer(b, "mariadb", testenv.MariaDBInstallHint)

	prepare := func(b *testing.B, m *testenv.MariaDB) {
		m.Exec(b, "CREATE DATABASE sbtest")
		cmd := exec.Command(sysbench, "oltp_write_only", "--db-driver=mysql", "--mysql-host=127.0.0.1",
			"--mysql-port="+strconv.Itoa(m.Port), "--mysql-user=root", "--mysql-db=sbtest",
			"--tables="+strconv.Itoa(tables), "--table-size="+strconv.Itoa(rows), "--threads=2", "prepare")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("sysbench prepare: %v\n%s", err, out)
		}
	}

	src := testenv.StartMariaDB(b, testenv.MariaDBOptions{Name: "binlog-src", ExtraArgs: binlogServerArgs})
	prepare(b, src)
	// The base every target starts from: a copy of the source's datadir
	// (sysbench prepare is not deterministic, even with --rand-seed).
	src.Exec(b, "RESET MASTER") // the binlog starts exactly at the base
	src.Stop()
	baseDir := filepath.Join(b.TempDir(), "base")
	copyDir(b, src.DataDir, baseDir)
	src.Restart(b)
	srcDB := openPool(b, src)
	defer func() { _ = srcDB.Close() }()
	base := testenv.Checksums(b, srcDB, "sbtest")
	start := time.Now()
	cmd := exec.Command(sysbench, "oltp_write_only", "--db-driver=mysql", "--mysql-host=127.0.0.1",
		"--mysql-port="+strconv.Itoa(src.Port), "--mysql-user=root", "--mysql-db=sbtest", "--rand-seed=2",
		"--tables="+strconv.Itoa(tables), "--table-size="+strconv.Itoa(rows), "--threads=4",
		"--events="+strconv.Itoa(txns), "--time=0", "run")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("sysbench run: %v\n%s", err, out)
	}
	gen := time.Since(start)
	src.Exec(b, "FLUSH BINARY LOGS")
	want := testenv.Checksums(b, srcDB, "sbtest")
	var gtid string
	if err := srcDB.QueryRow("SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil {
		b.Fatal(err)
	}
	var files []apply.File
	var paths []string
	var binlogBytes int64
	entries, err := os.ReadDir(src.DataDir)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "binlog.") && e.Name() != "binlog.index" && e.Name() != "binlog.state" {
			path := filepath.Join(src.DataDir, e.Name())
			fi, err := e.Info()
			if err != nil {
				b.Fatal(err)
			}
			binlogBytes += fi.Size()
			paths = append(paths, path)
			files = append(files, apply.File{Name: e.Name(), Open: func(context.Context) (io.ReadCloser, error) { return os.Open(path) }})
		}
	}
	slices.Sort(paths)
	fmt.Printf("binlog: %d sysbench oltp_write_only transactions (%d tables of %d rows, 4 threads) generated in %v, %d files, %.0f MB, GTID %s\n",
		txns, tables, rows, gen.Round(time.Second), len(files), float64(binlogBytes)/1e6, gtid)

	targetArgs := slices.Clone(binlogServerArgs)
	if targetBinlog {
		targetArgs = append(targetArgs, "--log-slave-updates=1")
	} else {
		targetArgs = append(targetArgs, "--skip-log-bin")
	}
	type run struct {
		name      string
		inProcess bool
		do        func(ctx context.Context, dst *testenv.MariaDB) (usage, error)
	}
	tidemark := func(method string, par int) func(ctx context.Context, dst *testenv.MariaDB) (usage, error) {
		return func(ctx context.Context, dst *testenv.MariaDB) (usage, error) {
			res, err := apply.Apply(ctx, apply.Params{DSN: dst.RootDSN, Files: files, Method: method, Parallel: par})
			if err == nil && res.EndGTID != gtid {
				err = fmt.Errorf("applied to %s, the source is at %s", res.EndGTID, gtid)
			}
			return usage{}, err
		}
	}
	runs := []run{
		{"tidemark-replication-1", true, tidemark(apply.MethodReplication, 0)},
		{"tidemark-replication-4", true, tidemark(apply.MethodReplication, 4)},
		{"mariadb-binlog|mariadb", false, func(ctx context.Context, dst *testenv.MariaDB) (usage, error) {
			return runPipeline(ctx, "", "", append([]string{decoder}, paths...),
				[]string{client, "--host=127.0.0.1", "--port=" + strconv.Itoa(dst.Port), "--user=root"})
		}},
	}
	if os.Getenv("TIDEMARK_BENCH_BINLOG_SQL") == "1" {
		runs = append(runs, run{"tidemark-sql", true, tidemark(apply.MethodSQL, 0)})
	}
	seconds := map[string]float64{}
	for _, r := range runs {
		b.Run(r.name, func(b *testing.B) {
			var total, tool, server, others, rss float64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dst := testenv.StartMariaDB(b, testenv.MariaDBOptions{Name: "binlog-dst", ExtraArgs: targetArgs})
				dst.Stop()
				if err := os.RemoveAll(dst.DataDir); err != nil {
					b.Fatal(err)
				}
				copyDir(b, baseDir, dst.DataDir)
				dst.Restart(b)
				db := openPool(b, dst)
				if got := testenv.Checksums(b, db, "sbtest"); !sumsEqual(got, base) {
					b.Fatalf("the target's base differs from the source's")
				}
				if r.inProcess {
					debug.FreeOSMemory()
					resetPeakRSS(b)
				}
				syscall.Sync()
				before := takeCPUSnapshot(dst.Pid())
				t0 := time.Now()
				b.StartTimer()
				u, err := r.do(context.Background(), dst)
				b.StopTimer()
				wall := time.Since(t0)
				after := takeCPUSnapshot(dst.Pid())
				if err != nil {
					b.Fatal(err)
				}
				if got := testenv.Checksums(b, db, "sbtest"); !sumsEqual(got, want) {
					b.Fatalf("%s: the target differs from the source after the apply", r.name)
				}
				_ = db.Close()
				total += wall.Seconds()
				server += (after.server - before.server).Seconds()
				toolCPU := u.cpu
				if r.inProcess {
					toolCPU = after.self - before.self
					rss = max(rss, peakRSSMiB(b))
				} else {
					rss = max(rss, float64(u.maxRSS)/(1<<20))
				}
				tool += toolCPU.Seconds()
				// What the rest of the machine took meanwhile (other work on a
				// shared machine): the figures are only comparable when low.
				others += max((after.busy - before.busy - (after.self - before.self) - u.cpu - (after.server - before.server)).Seconds(), 0)
				dst.Stop()
			}
			n := float64(b.N)
			b.ReportMetric(total/n, "s")
			b.ReportMetric(float64(txns)/(total/n), "txn/s")
			b.ReportMetric(tool/n, "tool-cpu-s")
			b.ReportMetric(server/n, "server-cpu-s")
			b.ReportMetric(rss, "peak-RSS-MiB")
			b.ReportMetric(others/n, "others-cpu-s")
			seconds[r.name] = total / n
		})
	}
	if peer, ok := seconds["mariadb-binlog|mariadb"]; ok {
		for _, name := range []string{"tidemark-replication-1", "tidemark-replication-4"} {
			if s, ok := seconds[name]; ok {
				verdict := "meets"
				if s/peer > 0.5 {
					verdict = "MISSES"
				}
				fmt.Printf("  roll-forward %-24s %7.1f s vs mariadb-binlog|mariadb %7.1f s = %.2fx (target <= 0.5x): %s\n", name, s, peer, s/peer, verdict)
			}
		}
	}
}

// copyDir copies a stopped server's datadir.
func copyDir(b *testing.B, from, to string) {
	if out, err := exec.Command("cp", "-a", "--reflink=auto", from, to).CombinedOutput(); err != nil {
		b.Fatalf("copy %s to %s: %v\n%s", from, to, err, out)
	}
}

func sumsEqual(a, b map[string]testenv.TableSum) bool { return maps.Equal(a, b) }

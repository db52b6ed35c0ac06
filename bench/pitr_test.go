package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/engines/logical"
	"github.com/tidemark-backup/tidemark/engines/pitr"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// BenchmarkPITR measures a point-in-time restore end to end and its parts:
// a sysbench source (TIDEMARK_BENCH_PITR_ROWS rows in 4 tables, default
// 250,000 each) streamed into a file:// repository, a logical base backup,
// then TIDEMARK_BENCH_PITR_TXNS oltp_write_only transactions (default
// 100,000); a fresh target is restored to the source's last GTID (base
// restore, then roll-forward through the target's replication applier) and
// checked equal to the source.
func BenchmarkPITR(b *testing.B) {
	rows := envInt(b, "TIDEMARK_BENCH_PITR_ROWS", 250_000)
	txns := envInt(b, "TIDEMARK_BENCH_PITR_TXNS", 100_000)
	sysbench := requirePeer(b, "sysbench", sysbenchHint)
	ctx := context.Background()

	src := testenv.StartMariaDB(b, testenv.MariaDBOptions{Name: "pitr-src", ExtraArgs: binlogServerArgs})
	srcDB := openPool(b, src)
	defer func() { _ = srcDB.Close() }()
	sb := func(args ...string) {
		cmd := exec.Command(sysbench, append([]string{"oltp_write_only", "--db-driver=mysql", "--mysql-host=127.0.0.1",
			"--mysql-port=" + strconv.Itoa(src.Port), "--mysql-user=root", "--mysql-db=sbtest",
			"--tables=4", "--table-size=" + strconv.Itoa(rows)}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("sysbench %v: %v\n%s", args, err, out)
		}
	}
	src.Exec(b, "CREATE DATABASE sbtest")
	sb("--threads=2", "prepare")

	st, err := file.Open(filepath.Join(b.TempDir(), "repo"), file.Options{Create: true})
	if err != nil {
		b.Fatal(err)
	}
	repo, err := archive.Init(ctx, st, archive.InitOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer repo.Close()
	sctx, stop := context.WithCancel(ctx)
	streamed := make(chan error, 1)
	go func() {
		streamed <- binlog.Stream(sctx, binlog.StreamParams{DSNs: []string{src.RootDSN}, Repo: repo, Instance: "src"})
	}()
	defer func() {
		stop()
		if err := <-streamed; err != nil {
			b.Error(err)
		}
	}()

	eng := logical.New()
	t0 := time.Now()
	base, err := repo.WithBackup(ctx, archive.BackupOptions{Instance: "src", Engine: eng.Name()}, func(ctx context.Context, bk *archive.Backup) error {
		_, err := eng.Backup(ctx, engines.BackupParams{DSN: src.RootDSN, Sink: engines.ArchiveSink(bk)})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	backupTime := time.Since(t0)
	t0 = time.Now()
	sb("--threads=4", "--rand-seed=3", "--events="+strconv.Itoa(txns), "--time=0", "run")
	gen := time.Since(t0)
	var gtid string
	if err := srcDB.QueryRow("SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil {
		b.Fatal(err)
	}
	want := testenv.Checksums(b, srcDB, "sbtest")
	testenv.WaitFor(b, "the archive at "+gtid, 5*time.Minute, func() error {
		a, err := binlog.OpenArchive(ctx, repo, "src")
		if err != nil {
			return err
		}
		if a.Status().GTIDPosition != gtid {
			return fmt.Errorf("archived to %s", a.Status().GTIDPosition)
		}
		return nil
	})
	fmt.Printf("pitr: base %s (%d rows x 4 tables) in %v, then %d transactions in %v, to GTID %s\n",
		base.BackupId, rows, backupTime.Round(time.Millisecond), txns, gen.Round(time.Second), gtid)

	targetArgs := append(append([]string(nil), binlogServerArgs...), "--log-slave-updates=1")
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dst := testenv.StartMariaDB(b, testenv.MariaDBOptions{Name: "pitr-dst", ExtraArgs: targetArgs})
		b.StartTimer()
		t0 := time.Now()
		res, err := pitr.Restore(ctx, pitr.Params{
			Repo: repo, Instance: "src", DSN: dst.RootDSN, Target: pitr.Target{GTID: gtid},
			Engine: func(string) (engines.Engine, error) { return logical.New(), nil },
		})
		total := time.Since(t0)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		db := openPool(b, dst)
		if got := testenv.Checksums(b, db, "sbtest"); !sumsEqual(got, want) {
			var slavePos string
			_ = db.QueryRow("SELECT @@gtid_slave_pos").Scan(&slavePos)
			b.Logf("the target's gtid_slave_pos is %s; base %s at %v", slavePos, base.BackupId, base.Consistency)
			b.Fatalf("the restored server differs from the source at %s: %v, want %v (applied %+v)", gtid, got, want, res.Applied)
		}
		_ = db.Close()
		b.ReportMetric(total.Seconds(), "total-s")
		b.ReportMetric(res.BaseRestore.Seconds(), "base-restore-s")
		b.ReportMetric(res.RollForward.Seconds(), "roll-forward-s")
		b.ReportMetric(float64(res.Applied.Transactions), "txns")
		fmt.Printf("  pitr to %s: total %.1f s = base restore %.1f s + roll-forward %.1f s (%d transactions by %s) + planning %.1f s\n",
			gtid, total.Seconds(), res.BaseRestore.Seconds(), res.RollForward.Seconds(), res.Applied.Transactions, res.Applied.Method,
			(total - res.BaseRestore - res.RollForward).Seconds())
		dst.Stop()
	}
}

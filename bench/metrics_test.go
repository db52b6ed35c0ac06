package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/agent/runner"
	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// BenchmarkMetricsScrape: one scrape of a leader's /metrics over a catalog
// of TIDEMARK_BENCH_SCRAPE_INSTANCES instances (default 2,000), each with
// TIDEMARK_BENCH_SCRAPE_BACKUPS complete backups (default 30), 10 finished
// jobs and a binlog stream: the catalog gauges (one series per instance for
// the last backup and the RPO) and the process registry, served by the
// real listener over loopback HTTP. Targets: under 100 ms and 5 MiB.
func BenchmarkMetricsScrape(b *testing.B) {
	instances := envInt(b, "TIDEMARK_BENCH_SCRAPE_INSTANCES", 2000)
	backups := envInt(b, "TIDEMARK_BENCH_SCRAPE_BACKUPS", 30)
	const jobsPer = 10
	t0 := time.Now()
	snap := &v1.CatalogSnapshot{}
	for i := range instances {
		name := fmt.Sprintf("db-%04d.eu-west-1/main", i)
		snap.Instances = append(snap.Instances, &v1.Instance{Name: name, Agent: fmt.Sprintf("db-%04d", i), Labels: map[string]string{"dc": "eu-west-1"}})
		for k := range backups {
			at := t0.Add(-time.Duration(backups-k) * time.Hour)
			snap.Backups = append(snap.Backups, &v1.Backup{Id: fmt.Sprintf("%s-b%03d", name, k), Instance: name, Engine: "logical",
				Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE, StartedAt: timestamppb.New(at.Add(-time.Minute)), FinishedAt: timestamppb.New(at)})
		}
		for k := range jobsPer {
			st := v1.JobState_JOB_STATE_SUCCEEDED
			if k == 0 {
				st = v1.JobState_JOB_STATE_FAILED
			}
			snap.Jobs = append(snap.Jobs, &v1.Job{Id: fmt.Sprintf("%s-j%02d", name, k), Instance: name, Kind: v1.JobKind_JOB_KIND_BACKUP, State: st,
				CreatedAt: timestamppb.New(t0)})
		}
		snap.BinlogStreams = append(snap.BinlogStreams, &v1.BinlogStream{Instance: name,
			Watermark: &v1.StreamWatermark{Instance: name, LastEventTime: timestamppb.New(t0.Add(-2 * time.Second))}})
	}
	store, err := catalog.Load(snap)
	if err != nil {
		b.Fatal(err)
	}
	reg := metrics.New()
	reg.MustRegister(controller.NewCatalogCollector(store.Read))
	srv, err := metrics.Serve(reg, metrics.ServeParams{Addr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	url := "http://" + srv.Addr() + "/metrics"
	scrape := func() (int64, time.Duration) {
		start := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("scrape: %d %v", resp.StatusCode, err)
		}
		return n, time.Since(start)
	}
	scrape() // warm
	var took []time.Duration
	var size int64
	b.ResetTimer()
	for range b.N {
		n, d := scrape()
		size = n
		took = append(took, d)
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(percentileMs(took, 0.5), "p50-ms")
	b.ReportMetric(percentileMs(took, 1), "max-ms")
	b.ReportMetric(float64(size)/(1<<20), "body-MiB")
	b.Logf("%d instances, %d backups, %d jobs: body %d bytes, p50 %.1f ms", instances, len(snap.Backups), len(snap.Jobs), size, percentileMs(took, 0.5))
	if p50 := percentileMs(took, 0.5); p50 > 100 {
		b.Errorf("scrape p50 %.1f ms: over the 100 ms target", p50)
	}
	if size > 5<<20 {
		b.Errorf("scrape body %d bytes: over the 5 MiB target", size)
	}
}

// BenchmarkLogicalMetrics: the logical backup as the agent runs it
// (runner.Run into a new file:// repository each time), with the metrics
// off and on (every repository operation observed, the job recorded),
// TIDEMARK_BENCH_METRICS_ROUNDS pairs (default 3) alternating so that the
// machine's drift hits both alike, on TIDEMARK_BENCH_METRICS_ROWS rows
// (default 1,000,000; -short: 100,000).
func BenchmarkLogicalMetrics(b *testing.B) {
	rows := envInt(b, "TIDEMARK_BENCH_METRICS_ROWS", 1_000_000)
	if testing.Short() {
		rows = 100_000
	}
	rounds := envInt(b, "TIDEMARK_BENCH_METRICS_ROUNDS", 3)
	m := testenv.StartMariaDB(b, testenv.MariaDBOptions{Name: "bench-metrics"})
	loadRows(b, m, rows)
	ctx := context.Background()
	run := func(round int, reg *metrics.Registry) time.Duration {
		uri := "file://" + b.TempDir()
		st, err := location.Open(ctx, uri, location.Options{Create: true})
		if err != nil {
			b.Fatal(err)
		}
		repo, err := archive.Init(ctx, st, archive.InitOptions{})
		if err != nil {
			b.Fatal(err)
		}
		repo.Close()
		_ = st.Close()
		open := func(ctx context.Context, _ string) (*archive.Repo, func(), error) {
			st, err := location.Open(ctx, uri, location.Options{Metrics: reg})
			if err != nil {
				return nil, nil, err
			}
			repo, err := archive.Open(ctx, st, archive.Secret{})
			if err != nil {
				_ = st.Close()
				return nil, nil, err
			}
			return repo, func() { repo.Close(); _ = st.Close() }, nil
		}
		id := fmt.Sprintf("bench-%d", round)
		job := &v1.Job{Id: id, Kind: v1.JobKind_JOB_KIND_BACKUP, Instance: "db",
			Params: &v1.Job_Backup{Backup: &v1.BackupParams{BackupId: id, Engine: "logical"}}}
		start := time.Now()
		res, err := runner.Run(ctx, runner.Params{Job: job, Lease: &v1.LeaseToken{JobId: id, Term: 1, Index: uint64(round + 1)},
			DSN: m.RootDSN, OpenRepo: open, Parallel: 2})
		took := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		reg.JobDone(metrics.Job{Kind: "backup", Engine: res.Engine, Took: took, LogicalBytes: res.Manifest.GetLogicalBytes()})
		return took
	}
	for range b.N {
		var off, on []time.Duration
		for r := range rounds {
			off = append(off, run(2*r, nil))
			on = append(on, run(2*r+1, metrics.New()))
		}
		slices.Sort(off)
		slices.Sort(on)
		mo, mn := off[len(off)/2], on[len(on)/2]
		b.ReportMetric(mo.Seconds(), "off-median-s")
		b.ReportMetric(mn.Seconds(), "on-median-s")
		b.ReportMetric(100*(mn.Seconds()-mo.Seconds())/mo.Seconds(), "on-vs-off-%")
		b.Logf("%d rows: off %v, on %v", rows, off, on)
	}
}

// loadRows fills m with the sample schema and a narrow table of rows
// generated server-side (the sequence engine), without binlog.
func loadRows(b *testing.B, m *testenv.MariaDB, rows int) {
	b.Helper()
	db := m.DB(b)
	testenv.LoadSample(b, db, "shop", 2000)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	for _, stmt := range []string{
		"SET SESSION sql_log_bin = 0",
		"CREATE TABLE shop.events (id INT UNSIGNED NOT NULL PRIMARY KEY, kind INT NOT NULL, tag CHAR(32) NOT NULL, at DATETIME NOT NULL) ENGINE=InnoDB",
		fmt.Sprintf("INSERT INTO shop.events SELECT seq, seq %% 17, MD5(seq), '2024-01-01' + INTERVAL seq SECOND FROM shop.seq_1_to_%d", rows),
	} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			b.Fatalf("%s: %v", stmt, err)
		}
	}
}

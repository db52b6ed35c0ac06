package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// BenchmarkBinlogRPO measures the binlog streamer's recovery point under
// write load: sysbench oltp_write_only at full speed (2 threads) for
// TIDEMARK_BENCH_RPO_SECONDS (default 60) while the streamer archives into
// MinIO on loopback with the default --flush of 1 s.
//
// Commit to durable: a probe connection updates one row every 20 ms and reads
// its transaction's GTID (@@last_gtid); the probe's time is taken before the
// UPDATE is sent, so the delay is an upper bound. The streamer runs in this
// process; its OnWatermark callback says when a GTID position became durable
// (the PUT of the piece holding it returned). Each probe's delay is the first
// such moment covering its GTID minus its send time. CPU and peak RSS are
// this process's (the streamer and the benchmark's bookkeeping); the probe's
// mariadb client, sysbench, MariaDB and MinIO are other processes.
func BenchmarkBinlogRPO(b *testing.B) {
	sysbench := requirePeer(b, "sysbench", sysbenchHint)
	seconds := envInt(b, "TIDEMARK_BENCH_RPO_SECONDS", 60)
	src := testenv.StartMariaDB(b, testenv.MariaDBOptions{Name: "bench-rpo"})
	src.Exec(b, "CREATE DATABASE sbtest", "CREATE TABLE sbtest.probe (id INT PRIMARY KEY, t DATETIME(6))", "INSERT INTO sbtest.probe VALUES (1, NOW(6))")
	sb := func(cmd string, extra ...string) *exec.Cmd {
		args := append([]string{"oltp_write_only", "--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-port=" + strconv.Itoa(src.Port),
			"--mysql-user=root", "--mysql-db=sbtest", "--tables=4", "--table-size=20000"}, extra...)
		return exec.Command(sysbench, append(args, cmd)...)
	}
	if out, err := sb("prepare", "--threads=2").CombinedOutput(); err != nil {
		b.Fatalf("sysbench prepare: %v\n%s", err, out)
	}
	src.Exec(b, "RESET MASTER")

	mc := testenv.StartMinIO(b)
	ctx := context.Background()
	st, err := location.Open(ctx, fmt.Sprintf("s3://%s/rpo?endpoint=%s&tls=false", mc.Bucket, mc.Endpoint), minioOptions(mc))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	repo, err := archive.Init(ctx, st, archive.InitOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer repo.Close()

	type mark struct {
		seq uint64
		at  time.Time
	}
	var (
		mu    sync.Mutex
		marks []mark
	)
	sctx, stopStream := context.WithCancel(ctx)
	streamErr := make(chan error, 1)
	// As `tidemark binlog stream` does.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(binlog.MemoryLimit))
	resetPeakRSS(b)
	cpu0 := procCPU(os.Getpid())
	start := time.Now()
	go func() {
		streamErr <- binlog.Stream(sctx, binlog.StreamParams{DSNs: []string{src.DSN}, Repo: repo, Instance: "bench",
			OnWatermark: func(w binlog.Watermark) {
				p, err := binlog.ParsePosition(w.GTID)
				if err != nil {
					return
				}
				mu.Lock()
				marks = append(marks, mark{p[0].Seq, w.DurableAt})
				mu.Unlock()
			}})
	}()

	// The probe's queries go through a mariadb client process, so that
	// this process's CPU is the streamer's (and the bookkeeping's): the
	// probe's SQL through database/sql was about a tenth of it.
	client := requirePeer(b, "mariadb", testenv.MariaDBInstallHint)
	probeCmd := exec.Command(client, "--no-defaults", "-uroot", "-h127.0.0.1", "-P"+strconv.Itoa(src.Port), "-N", "-B", "--unbuffered")
	probeIn, err := probeCmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	probeOutPipe, err := probeCmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := probeCmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = probeIn.Close(); _ = probeCmd.Wait() }()
	probeOut := bufio.NewReader(probeOutPipe)
	type probe struct {
		seq  uint64
		sent time.Time
	}
	var probes []probe
	probeStop := make(chan struct{})
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-probeStop:
				return
			case <-tick.C:
			}
			sent := time.Now()
			if _, err := io.WriteString(probeIn, "UPDATE sbtest.probe SET t = NOW(6) WHERE id = 1; SELECT @@last_gtid;\n"); err != nil {
				b.Error(err)
				return
			}
			g, err := probeOut.ReadString('\n')
			if err != nil {
				b.Error(err)
				return
			}
			p, err := binlog.ParsePosition(strings.TrimSpace(g))
			if err != nil {
				b.Error(err)
				return
			}
			probes = append(probes, probe{p[0].Seq, sent})
		}
	}()

	b.ResetTimer()
	out, err := sb("run", "--threads=2", "--time="+strconv.Itoa(seconds), "--rate=0", "--report-interval=0").CombinedOutput()
	if err != nil {
		b.Fatalf("sysbench run: %v\n%s", err, out)
	}
	close(probeStop)
	<-probeDone
	time.Sleep(2 * time.Second) // the last probes become durable
	b.StopTimer()
	wall := time.Since(start)
	cpu := procCPU(os.Getpid()) - cpu0
	peak := peakRSSMiB(b)
	stopStream()
	if err := <-streamErr; err != nil {
		b.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	var delays []time.Duration
	missing := 0
	for _, p := range probes {
		i := sort.Search(len(marks), func(i int) bool { return marks[i].seq >= p.seq })
		if i == len(marks) {
			missing++
			continue
		}
		delays = append(delays, marks[i].at.Sub(p.sent))
	}
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	if len(delays) == 0 {
		b.Fatalf("no probe became durable (%d probes, %d watermarks)", len(probes), len(marks))
	}
	var binlogBytes int64
	if a, err := binlog.OpenArchive(ctx, repo, "bench"); err == nil {
		binlogBytes = a.Status().Bytes
	}
	b.ReportMetric(percentileMs(delays, 0.50), "p50-ms")
	b.ReportMetric(percentileMs(delays, 0.99), "p99-ms")
	b.ReportMetric(float64(delays[len(delays)-1])/float64(time.Millisecond), "max-ms")
	b.ReportMetric(pctOfCore(cpu, wall), "cpu-%core")
	b.ReportMetric(peak, "peak-RSS-MiB")
	b.ReportMetric(float64(binlogBytes)/wall.Seconds()/1e6, "binlog-MB/s")
	b.ReportMetric(float64(len(marks))/wall.Seconds(), "flushes/s")
	b.Logf("%d probes (%d not durable at the end), %d flushes, %.1f MB of binlog in %s; sysbench:\n%s",
		len(probes), missing, len(marks), float64(binlogBytes)/1e6, wall.Round(time.Second), tail(string(out), 900))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

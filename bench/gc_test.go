package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/dumpgen"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// BenchmarkGC measures gc on MinIO over a repository of
// TIDEMARK_BENCH_GC_BACKUPS backups (default 1,000) holding
// TIDEMARK_BENCH_GC_CHUNKS chunks in all (default 100,000; issue 19 asks
// about 1,000,000, which takes this machine about ten times as long to
// build: set it to measure that). Every chunk is a stream of its own of a
// few hundred bytes, so building is cheap while the listing, manifest and
// delete work of gc is that of a real repository of that many chunks. One
// backup in ten is then deleted.
//
// Reported: the condemning run and the sweeping run (seconds, peak RSS of
// the process during the run), the throughput of a 256 MiB backup alone and
// while gc runs in a loop, and the p99 latency of a binlog segment upload
// (a sealed object every 100 ms, what the stream's RPO waits on) alone and
// while gc runs.
func BenchmarkGC(b *testing.B) {
	ctx := context.Background()
	backups := envInt(b, "TIDEMARK_BENCH_GC_BACKUPS", 1000)
	chunks := envInt(b, "TIDEMARK_BENCH_GC_CHUNKS", 100_000)
	perBackup := max(1, chunks/backups)
	mc := testenv.StartMinIO(b)
	st, err := location.Open(ctx, fmt.Sprintf("s3://%s/gc?endpoint=%s&tls=false", mc.Bucket, mc.Endpoint), minioOptions(mc))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	repo, err := archive.Init(ctx, st, archive.InitOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer repo.Close()

	start := time.Now()
	var ids []string
	var idsMu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range backups {
		g.Go(func() error {
			m, err := repo.WithBackup(gctx, archive.BackupOptions{Engine: "bench", Workers: 8, Compression: "none"}, func(ctx context.Context, bk *archive.Backup) error {
				for j := range perBackup {
					w, err := bk.Stream(strconv.Itoa(j), nil)
					if err != nil {
						return err
					}
					if _, err := fmt.Fprintf(w, "backup %d stream %d: a row of a few hundred bytes %0200d\n", i, j, i*perBackup+j); err != nil {
						return err
					}
					if err := w.Close(); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			idsMu.Lock()
			ids = append(ids, m.BackupId)
			idsMu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	slices.Sort(ids)
	b.Logf("built %d backups, %d chunks in %s", backups, backups*perBackup, time.Since(start).Round(time.Second))
	for i, id := range ids {
		if i%10 == 0 {
			if err := st.Delete(ctx, "manifests/"+id); err != nil {
				b.Fatal(err)
			}
		}
	}

	// Each gc run from a fresh Repo, as `tidemark repo gc` would: nothing
	// cached from the build. Peak heap is sampled every 10 ms.
	runGC := func(b *testing.B, what string) *archive.GCReport {
		fresh, err := archive.Open(ctx, st, archive.Secret{})
		if err != nil {
			b.Fatal(err)
		}
		defer fresh.Close()
		debug.FreeOSMemory() // the build's buffers: RSS back to what gc starts from
		resetPeakRSS(b)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapAlloc
		var peak atomic.Uint64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > peak.Load() {
					peak.Store(ms.HeapAlloc)
				}
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
		t0 := time.Now()
		rep, err := fresh.GC(ctx, archive.GCOptions{})
		close(stop)
		<-sampled
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(t0).Seconds(), what+"-s")
		b.ReportMetric(peakRSSMiB(b), what+"-peak-RSS-MiB")
		b.ReportMetric(float64(peak.Load()-min(base, peak.Load()))/(1<<20), what+"-heap-growth-MiB")
		return rep
	}
	tmpl := dumpgen.Template(3)
	backupMBs := func(pass uint64) float64 {
		const size = 256 << 20
		t0 := time.Now()
		_, err := repo.WithBackup(ctx, archive.BackupOptions{Engine: "bench"}, func(ctx context.Context, bk *archive.Backup) error {
			w, err := bk.Stream("data", nil)
			if err != nil {
				return err
			}
			if _, err := io.Copy(w, dumpgen.NewReader(tmpl, size, pass)); err != nil {
				return err
			}
			return w.Close()
		})
		if err != nil {
			b.Fatal(err)
		}
		return size / 1e6 / time.Since(t0).Seconds()
	}
	segmentP99 := func(n int) time.Duration {
		seg := make([]byte, 256<<10)
		var lat []time.Duration
		for i := range n {
			t0 := time.Now()
			if err := repo.PutObject(ctx, fmt.Sprintf("binlog/bench/%d-%d", time.Now().UnixNano(), i), seg, archive.ObjectOptions{}); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
			time.Sleep(100 * time.Millisecond)
		}
		slices.Sort(lat)
		return lat[len(lat)*99/100]
	}
	// gcLoop runs gc until stop is closed and counts the runs.
	gcLoop := func(stop chan struct{}) (*atomic.Int64, chan struct{}) {
		runs, done := &atomic.Int64{}, make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := repo.GC(ctx, archive.GCOptions{}); err != nil {
					b.Error(err)
					return
				}
				runs.Add(1)
			}
		}()
		return runs, done
	}

	b.Run("gc", func(b *testing.B) {
		for range b.N {
			rep := runGC(b, "condemn")
			b.Logf("condemn: %d backups, %d chunks, %d condemned", rep.Backups, rep.ChunksTotal, rep.ChunksCondemned)
			rep = runGC(b, "sweep")
			b.Logf("sweep: %d deleted, %d condemned", rep.ChunksDeleted, rep.ChunksCondemned)
		}
	})
	// Alone and during gc alternate, three pairs, medians reported: the
	// machine's other load moves single runs a lot.
	b.Run("concurrent", func(b *testing.B) {
		for i := range b.N {
			var alone, during []float64
			var p99Alone, p99During []time.Duration
			var runs int64
			for k := range 3 {
				alone = append(alone, backupMBs(uint64(100*i+2*k)))
				p99Alone = append(p99Alone, segmentP99(30))
				stop := make(chan struct{})
				n, done := gcLoop(stop)
				during = append(during, backupMBs(uint64(100*i+2*k+1)))
				p99During = append(p99During, segmentP99(30))
				close(stop)
				<-done
				runs += n.Load()
			}
			slices.Sort(alone)
			slices.Sort(during)
			slices.Sort(p99Alone)
			slices.Sort(p99During)
			b.ReportMetric(alone[1], "backup-alone-MB/s")
			b.ReportMetric(during[1], "backup-during-gc-MB/s")
			b.ReportMetric(float64(p99Alone[1].Milliseconds()), "segment-p99-alone-ms")
			b.ReportMetric(float64(p99During[1].Milliseconds()), "segment-p99-during-gc-ms")
			b.Logf("backup MB/s alone %.0f, during gc %.0f; segment p99 alone %v, during gc %v; %d gc runs meanwhile", alone, during, p99Alone, p99During, runs)
		}
	})
}

package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
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
// about 1,000,000). Every chunk is a stream of its own of a few hundred
// bytes, so building is cheap while the listing, manifest and delete work
// of gc is that of a real repository of that many chunks. One backup in
// ten is then deleted.
//
// The repository is built by the archive's own backups into a store in
// memory, then copied to MinIO in tar batches that MinIO unpacks
// (testenv.PutMany): one PUT per chunk is what made a million chunks take
// most of an hour here. The objects are those backups write; only their
// times differ (each is its batch's arrival).
//
// Reported: the condemning run and the sweeping run, unbounded (seconds,
// peak RSS of the process during the run), and then, three rounds each,
// the throughput of a 256 MiB backup and the p99 latency of a binlog
// segment upload (a sealed object every 100 ms, what the stream's RPO
// waits on), alone, while gc sweeps at archive.DefaultGCMaxRate, and while
// it sweeps unbounded (a record of 30% of the chunks, condemned before).
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

	start := time.Now()
	mem := newMemStore()
	built, err := archive.Init(ctx, mem, archive.InitOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var ids []string
	var idsMu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i := range backups {
		g.Go(func() error {
			m, err := built.WithBackup(gctx, archive.BackupOptions{Engine: "bench", Workers: 2, Compression: "none"}, func(ctx context.Context, bk *archive.Backup) error {
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
	built.Close()
	buildTook := time.Since(start)
	// Copied to MinIO under the repository's prefix, locks aside (none
	// is held now; the build's were removed).
	start = time.Now()
	objs := make(chan testenv.BulkObject)
	copied := 0
	cctx, cancelCopy := context.WithCancel(ctx) // ends the sender if PutMany fails
	defer cancelCopy()
	go func() {
		defer close(objs)
		mem.each(func(k string, body []byte) {
			if strings.HasPrefix(k, "locks/") || cctx.Err() != nil {
				return
			}
			select {
			case objs <- testenv.BulkObject{Key: "gc/" + k, Body: body}:
				copied++
			case <-cctx.Done():
			}
		})
	}()
	if err := mc.PutMany(cctx, mc.Bucket, objs, 2000, envInt(b, "TIDEMARK_BENCH_GC_COPY_WORKERS", 4)); err != nil {
		b.Fatal(err)
	}
	cancelCopy()
	mem = nil
	b.Logf("built %d backups, %d chunks in memory in %s; copied %d objects to MinIO in %s (%.0f objects/s)",
		backups, backups*perBackup, buildTook.Round(time.Second), copied, time.Since(start).Round(time.Second), float64(copied)/time.Since(start).Seconds())
	if os.Getenv("TIDEMARK_BENCH_GC_FILL_ONLY") != "" {
		return
	}
	repo, err := archive.Open(ctx, st, archive.Secret{})
	if err != nil {
		b.Fatal(err)
	}
	defer repo.Close()
	slices.Sort(ids)
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
	// gcLoop runs gc at rate (0: unbounded) until stop is closed, which
	// cancels the run in flight: a canceled sweep leaves the rest of its
	// record to the next run.
	gcLoop := func(stop chan struct{}, rate float64) (*atomic.Int64, *atomic.Int64, chan struct{}) {
		runs, deleted, done := &atomic.Int64{}, &atomic.Int64{}, make(chan struct{})
		lctx, cancel := context.WithCancel(ctx)
		go func() { <-stop; cancel() }()
		go func() {
			defer close(done)
			for lctx.Err() == nil {
				rep, err := repo.GC(lctx, archive.GCOptions{MaxRate: rate})
				if rep != nil { // a canceled sweep's deletes are in its record
					for _, rec := range rep.Records {
						deleted.Add(int64(rec.Deleted))
					}
				}
				if lctx.Err() != nil {
					return
				}
				if err != nil {
					b.Error(err)
					return
				}
				runs.Add(1)
			}
		}()
		return runs, deleted, done
	}

	b.Run("gc", func(b *testing.B) {
		for range b.N {
			rep := runGC(b, "condemn")
			b.Logf("condemn: %d backups, %d chunks, %d condemned", rep.Backups, rep.ChunksTotal, rep.ChunksCondemned)
			rep = runGC(b, "sweep")
			b.Logf("sweep: %d deleted, %d condemned", rep.ChunksDeleted, rep.ChunksCondemned)
		}
	})
	// Alone, during gc at the default bound and during gc unbounded
	// alternate, three rounds, medians reported: the machine's other load
	// moves single runs a lot.
	b.Run("concurrent", func(b *testing.B) {
		// What gc does while the measurements run is a sweep: three
		// backups in ten more are deleted and condemned now, a record of
		// 30% of the chunks that the loop's runs delete, each run taking
		// up where the canceled one before it stopped. Its deletes are
		// what a rate bound slows; a listing of every chunk comes only
		// after them.
		for i, id := range ids {
			if d := i % 10; d >= 1 && d <= 3 {
				if err := st.Delete(ctx, "manifests/"+id); err != nil {
					b.Fatal(err)
				}
			}
		}
		t0 := time.Now()
		rep, err := repo.GC(ctx, archive.GCOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("condemned %d chunks for the sweeps in %s", rep.ChunksCondemned, time.Since(t0).Round(time.Second))
		modes := []struct {
			name string
			rate float64
		}{{"alone", -1}, {"during-gc-bounded", archive.DefaultGCMaxRate}, {"during-gc-unbounded", 0}}
		for i := range b.N {
			mbs := make([][]float64, len(modes))
			p99 := make([][]time.Duration, len(modes))
			runs := make([]int64, len(modes))
			deleted := make([]int64, len(modes))
			for k := range 3 {
				for mi, mode := range modes {
					var stop chan struct{}
					var n, d *atomic.Int64
					var done chan struct{}
					if mode.rate >= 0 {
						stop = make(chan struct{})
						n, d, done = gcLoop(stop, mode.rate)
						// Past the run's start (manifests read, at 200/s
						// some seconds), into its deletes.
						time.Sleep(5 * time.Second)
					}
					mbs[mi] = append(mbs[mi], backupMBs(uint64(100*i+10*k+mi)))
					p99[mi] = append(p99[mi], segmentP99(30))
					if stop != nil {
						close(stop)
						<-done
						runs[mi] += n.Load()
						deleted[mi] += d.Load()
					}
				}
			}
			for mi, mode := range modes {
				slices.Sort(mbs[mi])
				slices.Sort(p99[mi])
				b.ReportMetric(mbs[mi][1], "backup-"+mode.name+"-MB/s")
				b.ReportMetric(float64(p99[mi][1].Microseconds())/1000, "segment-p99-"+mode.name+"-ms")
				b.Logf("%s: backup MB/s %.0f; segment p99 %v; %d gc runs completed meanwhile, %d chunks deleted", mode.name, mbs[mi], p99[mi], runs[mi], deleted[mi])
			}
			b.Logf("backup slowdown: at the default bound (%d/s) %.0f%%, unbounded %.0f%%", archive.DefaultGCMaxRate,
				100*(1-mbs[1][1]/mbs[0][1]), 100*(1-mbs[2][1]/mbs[0][1]))
		}
	})
}

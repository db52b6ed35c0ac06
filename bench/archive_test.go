package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/dumpgen"
	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/storage/relay"
	"github.com/tidemark-backup/tidemark/internal/storage/s3"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// benchBytes is the stream length: 2 GiB unless TIDEMARK_BENCH_BYTES says
// otherwise (in bytes, or with a G/M suffix).
func benchBytes(b *testing.B) int64 {
	s := os.Getenv("TIDEMARK_BENCH_BYTES")
	if s == "" {
		return 2 << 30
	}
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		b.Fatalf("TIDEMARK_BENCH_BYTES=%q: %v", os.Getenv("TIDEMARK_BENCH_BYTES"), err)
	}
	return n * mult
}

// resetPeakRSS clears the kernel's high-water mark of this process's RSS,
// so peakRSS reports the peak of one sub-benchmark alone.
func resetPeakRSS(b *testing.B) {
	runtime.GC()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset peak RSS (%v); figures include earlier runs", err)
	}
}

// reportCPU reports this process's CPU-seconds per GB moved since before
// (every thread: on the relay that is the agent's and the controller's
// side together) and what the rest of the machine used meanwhile, in CPUs.
// On a shared machine the MB/s of one run swing with other work; the
// CPU-seconds per GB hardly do, so a change's cost is read from them.
func reportCPU(b *testing.B, before cpuSnapshot, start time.Time, bytes int64) {
	after := takeCPUSnapshot(0)
	self := (after.self - before.self).Seconds()
	b.ReportMetric(self/(float64(bytes)/1e9), "cpu-s/GB")
	if wall := time.Since(start).Seconds(); wall > 0 {
		others := (after.busy - before.busy).Seconds() - self
		b.ReportMetric(max(0, others)/wall, "others-CPUs")
	}
}

func peakRSSMiB(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// passes counts the streams written in this process: each gets its own
// dumpgen pass, so nothing deduplicates against an earlier one, also with
// -count N (which repeats a sub-benchmark on the same repository; seeded
// by the iteration alone, every repeat after the first stored nothing).
var passes atomic.Uint64

// nextPass is a dumpgen pass not used before in this process (dumpgen
// stamps 16 bits of it).
func nextPass() uint64 { return 7777 + passes.Add(1) }

type target struct {
	name string
	uri  string
	opts location.Options
}

// BenchmarkArchive streams dump-like text through the archive writer into a
// directory and into MinIO on loopback, zstd level 1 and SHA-256, then reads
// it back with verification. Reported: MB/s (from SetBytes), allocations and
// peak RSS of the process during the sub-benchmark.
func BenchmarkArchive(b *testing.B) {
	size := benchBytes(b)
	tmpl := dumpgen.Template(1)
	dir := os.Getenv("TIDEMARK_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	mc := testenv.StartMinIO(b)
	targets := []target{
		{name: "file", uri: "file://" + dir, opts: location.Options{Create: true}},
		{name: "minio", uri: fmt.Sprintf("s3://%s/bench?endpoint=%s&tls=false", mc.Bucket, mc.Endpoint), opts: minioOptions(mc)},
	}
	// The relay: a controller's RelayService over a directory, as an agent
	// reaches it, with mutual TLS and plaintext (issue #13: TLS at most
	// 10% slower).
	ca := testenv.NewTestCA(b)
	for _, secure := range []bool{true, false} {
		name, opts := "relay-plain", relay.Options{Insecure: true}
		var srvCA *testenv.TestCA
		if secure {
			name, opts, srvCA = "relay-tls", relay.Options{TLS: ca.Source(b, testenv.Agent("bench")).ClientConfig()}, ca
		}
		addr := serveRelay(b, filepath.Join(b.TempDir(), name), srvCA)
		targets = append(targets, target{name: name, uri: "relay://" + addr, opts: location.Options{Relay: opts}})
	}
	for _, tg := range targets {
		ctx := context.Background()
		var st storage.Storage
		var repo *archive.Repo
		var lastID string
		// Without compression: what the pipeline (hash, copy, store) costs
		// apart from zstd, which is the bottleneck on two cores.
		b.Run("write-nocompress/"+tg.name, func(b *testing.B) {
			st, err := location.Open(ctx, tg.uri, tg.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = st.Close() }()
			r, err := archive.Open(ctx, st, archive.Secret{})
			if err != nil {
				if r, err = archive.Init(ctx, st, archive.InitOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			defer r.Close()
			b.SetBytes(size)
			b.ReportAllocs()
			resetPeakRSS(b)
			b.ResetTimer()
			cpu0, start := takeCPUSnapshot(0), time.Now()
			for i := 0; i < b.N; i++ {
				_, err := r.WithBackup(ctx, archive.BackupOptions{Engine: "bench", Compression: "none"}, func(ctx context.Context, bk *archive.Backup) error {
					w, err := bk.Stream("data", nil)
					if err != nil {
						return err
					}
					if _, err := io.Copy(w, dumpgen.NewReader(tmpl, size, nextPass())); err != nil {
						return err
					}
					return w.Close()
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportCPU(b, cpu0, start, int64(b.N)*size)
			b.ReportMetric(peakRSSMiB(b), "peak-RSS-MiB")
		})
		b.Run("write/"+tg.name, func(b *testing.B) {
			var err error
			st, err = location.Open(ctx, tg.uri, tg.opts)
			if err != nil {
				b.Fatal(err)
			}
			if repo, err = archive.Open(ctx, st, archive.Secret{}); err != nil {
				if repo, err = archive.Init(ctx, st, archive.InitOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(size)
			b.ReportAllocs()
			resetPeakRSS(b)
			b.ResetTimer()
			cpu0, start := takeCPUSnapshot(0), time.Now()
			for i := 0; i < b.N; i++ {
				m, err := repo.WithBackup(ctx, archive.BackupOptions{Engine: "bench"}, func(ctx context.Context, bk *archive.Backup) error {
					w, err := bk.Stream("data", nil)
					if err != nil {
						return err
					}
					if _, err := io.Copy(w, dumpgen.NewReader(tmpl, size, nextPass())); err != nil {
						return err
					}
					return w.Close()
				})
				if err != nil {
					b.Fatal(err)
				}
				lastID = m.BackupId
				b.ReportMetric(float64(m.LogicalBytes)/float64(m.StoredBytes), "ratio")
			}
			b.StopTimer()
			reportCPU(b, cpu0, start, int64(b.N)*size)
			b.ReportMetric(peakRSSMiB(b), "peak-RSS-MiB")
		})
		b.Run("read/"+tg.name, func(b *testing.B) {
			if repo == nil || lastID == "" {
				b.Skip("write benchmark did not run")
			}
			// A fresh Repo: nothing cached from the write.
			fresh, err := archive.Open(ctx, st, archive.Secret{})
			if err != nil {
				b.Fatal(err)
			}
			defer fresh.Close()
			m, err := fresh.LoadManifest(ctx, lastID)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(m.LogicalBytes))
			b.ReportAllocs()
			resetPeakRSS(b)
			b.ResetTimer()
			cpu0, start := takeCPUSnapshot(0), time.Now()
			for i := 0; i < b.N; i++ {
				rc, err := fresh.OpenStream(ctx, m, "data", archive.ReadOptions{})
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, rc)
				_ = rc.Close()
				if err != nil || n != int64(m.LogicalBytes) {
					b.Fatalf("read %d of %d bytes: %v", n, m.LogicalBytes, err)
				}
			}
			b.StopTimer()
			reportCPU(b, cpu0, start, int64(b.N)*int64(m.LogicalBytes))
			b.ReportMetric(peakRSSMiB(b), "peak-RSS-MiB")
		})
		if repo != nil {
			repo.Close()
		}
		if st != nil {
			_ = st.Close()
		}
	}
}

func minioOptions(mc *testenv.MinIO) location.Options {
	return location.Options{S3: s3.Config{
		Credentials: &s3.Credentials{AccessKeyID: mc.AccessKey, SecretAccessKey: secret.NewString(mc.SecretKey)},
	}}
}

// serveRelay serves a directory over RelayService on loopback, with the
// controller certificate of ca (nil: plaintext), and returns its address.
func serveRelay(b *testing.B, dir string, ca *testenv.TestCA) string {
	b.Helper()
	backend, err := location.Open(context.Background(), "file://"+dir, location.Options{Create: true})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var opts []grpc.ServerOption
	if ca != nil {
		opts = append(opts, grpc.Creds(tlsx.GRPC(ca.Source(b, testenv.Controller("bench")).ServerConfig())))
	}
	gs := grpc.NewServer(opts...)
	v1.RegisterRelayServiceServer(gs, controller.NewRelayServer(backend))
	go func() { _ = gs.Serve(lis) }()
	b.Cleanup(func() { gs.Stop(); _ = backend.Close() })
	return lis.Addr().String()
}

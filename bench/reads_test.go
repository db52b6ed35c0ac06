package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// BenchmarkReads measures catalog reads on a 3-node cluster of real
// controller processes (mutual TLS, production Raft timeouts), consistent
// (the default: the leader confirms its leadership with a quorum and has
// applied its commit index before answering) against stale (the node asked
// answers from its own catalog), at readers=1 and readers=16, each reader
// with its own gRPC connection, as CLIs and dashboards would have.
//
// The catalog holds TIDEMARK_BENCH_READ_JOBS jobs (default 3000, submitted
// and cancelled by 16 writers before the measurement, so the followers
// have applied them all). A read is, in turn, ListJobs' first page (50
// jobs, newest first, of every job: the catalog filters and sorts them all)
// and GetJob of a random job (TIDEMARK_BENCH_READ_OPS=list or get: only
// that one). Each mode runs TIDEMARK_BENCH_READ_TIME
// (default 4s) after a 1 s warm-up. The modes:
//
//   - consistent: connections to the leader (what the CLI does: it dials
//     the leader);
//   - consistent-via-follower: connections to the followers, which forward
//     every read to the leader (an API client that dialled any node);
//   - stale: connections to the followers, stale reads (--stale);
//   - stale-on-leader: connections to the leader, stale reads: the same
//     process serving the same reads as consistent, without the
//     leadership check, i.e. the ceiling consistent reads can reach.
//
// The latency is the gRPC call as the client sees it, on the same two
// cores as the three controllers.
func BenchmarkReads(b *testing.B) {
	jobs := envInt(b, "TIDEMARK_BENCH_READ_JOBS", 3000)
	dur := envDuration(b, "TIDEMARK_BENCH_READ_TIME", 4*time.Second)
	ops := os.Getenv("TIDEMARK_BENCH_READ_OPS")
	switch ops {
	case "", "both", "list", "get":
	default:
		b.Fatalf("TIDEMARK_BENCH_READ_OPS=%q: want list, get or both", ops)
	}
	bin := buildTidemark(b)
	c := startCluster(b, bin, true, false)
	ids := fillJobs(b, c, jobs)
	b.Logf("%d jobs in the catalog", len(ids))
	for _, readers := range []int{1, 16} {
		for _, mode := range []string{"consistent", "consistent-via-follower", "stale", "stale-on-leader"} {
			b.Run(fmt.Sprintf("readers=%d/mode=%s", readers, mode), func(b *testing.B) {
				for range b.N {
					measureReads(b, c, ids, readers, mode, ops, dur)
				}
			})
		}
	}
}

// fillJobs submits and cancels n backup jobs through the leader, 16
// writers at a time, and returns their ids once every node applied them.
func fillJobs(b *testing.B, c *ctlCluster, n int) []string {
	const writers = 16
	instances := writerInstances(b, c, writers, 1)
	var (
		mu   sync.Mutex
		ids  []string
		errs []error
		wg   sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			ctl := c.leader.conn.Control
			ctx := context.Background()
			for k := w; k < n; k += writers {
				r, err := ctl.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: instances[w][0]})
				if err == nil {
					_, err = ctl.CancelJob(ctx, &v1.CancelJobRequest{Id: r.GetJob().GetId(), Reason: "benchmark"})
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("writer %d: %w", w, err))
					mu.Unlock()
					return
				}
				ids = append(ids, r.GetJob().GetId())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	commit := c.status(b).GetCommitIndex()
	testenv.WaitFor(b, "every node to apply the catalog", 30*time.Second, func() error {
		for _, nd := range c.nodes {
			st, err := nd.conn.Cluster.NodeStatus(context.Background(), &v1.NodeStatusRequest{})
			if err != nil {
				return err
			}
			if st.GetAppliedIndex() < commit {
				return fmt.Errorf("%s applied %d of %d", nd.id, st.GetAppliedIndex(), commit)
			}
		}
		return nil
	})
	return ids
}

type readSample struct {
	list bool
	at   time.Duration // from the end of the warm-up
	lat  time.Duration
}

func measureReads(b *testing.B, c *ctlCluster, ids []string, readers int, mode, ops string, dur time.Duration) {
	const warmup = time.Second
	var followers []*ctlNode
	for _, nd := range c.nodes {
		if nd != c.leader {
			followers = append(followers, nd)
		}
	}
	stale := mode == "stale" || mode == "stale-on-leader"
	conns := make([]*client.Conn, readers)
	for i := range conns {
		target := c.leader
		if mode == "consistent-via-follower" || mode == "stale" {
			target = followers[i%len(followers)]
		}
		conn, err := client.DialAny(context.Background(), []string{target.grpcAddr}, c.opts(b, testenv.Admin()))
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		conns[i] = conn
	}
	start := time.Now()
	measured := start.Add(warmup)
	end := measured.Add(dur)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		errs    []error
		samples = make([][]readSample, readers)
	)
	cpu0, before := c.cpu(), takeCPUSnapshot(0)
	for r := range readers {
		wg.Go(func() {
			ctl := conns[r].Control
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(uint64(r), 7))
			for k := 0; time.Now().Before(end); k++ {
				list := ops == "list" || (ops != "get" && k%2 == 0)
				t := time.Now()
				var (
					read *v1.ReadInfo
					err  error
				)
				if list {
					var resp *v1.ListJobsResponse
					resp, err = ctl.ListJobs(ctx, &v1.ListJobsRequest{PageSize: 50, Stale: stale})
					if err == nil && len(resp.GetJobs()) != 50 {
						err = fmt.Errorf("ListJobs returned %d jobs, want 50", len(resp.GetJobs()))
					}
					read = resp.GetRead()
				} else {
					var resp *v1.GetJobResponse
					resp, err = ctl.GetJob(ctx, &v1.GetJobRequest{Id: ids[rng.IntN(len(ids))], Stale: stale})
					read = resp.GetRead()
				}
				lat := time.Since(t)
				if err == nil && read.GetStale() != stale {
					err = fmt.Errorf("read answered with %v in mode %s", read, mode)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("reader %d: %w", r, err))
					mu.Unlock()
					return
				}
				samples[r] = append(samples[r], readSample{list: list, at: t.Sub(measured), lat: lat})
			}
		})
	}
	wg.Wait()
	wall, cpuWall := time.Since(measured), time.Since(start)
	cpu1, after := c.cpu(), takeCPUSnapshot(0)
	c.status(b) // fails when the leadership moved
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	var all, lists, gets []time.Duration
	for _, ss := range samples {
		for _, s := range ss {
			if s.at < 0 {
				continue
			}
			all = append(all, s.lat)
			if s.list {
				lists = append(lists, s.lat)
			} else {
				gets = append(gets, s.lat)
			}
		}
	}
	for _, l := range [][]time.Duration{all, lists, gets} {
		slices.Sort(l)
	}
	b.ReportMetric(float64(len(all))/wall.Seconds(), "reads/s")
	b.ReportMetric(percentileMs(all, 0.50), "p50-ms")
	b.ReportMetric(percentileMs(all, 0.99), "p99-ms")
	b.ReportMetric(percentileMs(lists, 0.50), "list-p50-ms")
	b.ReportMetric(percentileMs(lists, 0.99), "list-p99-ms")
	b.ReportMetric(percentileMs(gets, 0.50), "get-p50-ms")
	b.ReportMetric(percentileMs(gets, 0.99), "get-p99-ms")
	b.ReportMetric(pctOfCore(cpu1[c.leader.id]-cpu0[c.leader.id], cpuWall), "leader-cpu-%")
	b.ReportMetric(othersCPU(before, after, cpu0, cpu1).Seconds(), "others-cpu-s")
	b.ReportMetric(load1(), "load1")
}

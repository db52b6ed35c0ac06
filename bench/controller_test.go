package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// The controller benchmarks run a cluster of three real `tidemark
// controller` processes on loopback, with the production defaults (Raft
// timeouts, 5 s agent heartbeats, 20 s leases, info logging to a file),
// and drive it from this process over gRPC, as the CLI and agents do.

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		b.Fatalf("%s=%q: want a positive duration such as 60s", name, s)
	}
	return d
}

// ctlNode is one controller process.
type ctlNode struct {
	id, grpcAddr, raftAddr string
	metricsAddr            string // --metrics-addr; "" without
	child                  *testenv.Child
	conn                   *client.Conn
}

// ctlCluster is three controller processes that agree on a leader.
type ctlCluster struct {
	nodes  []*ctlNode
	leader *ctlNode
	term   uint64
	// ca issues every credential when the cluster runs mutual TLS; nil:
	// plaintext (--insecure, loopback).
	ca *testenv.TestCA
}

// opts dials as id (an admin when the cluster has TLS).
func (c *ctlCluster) opts(b *testing.B, id tlsx.Identity) client.Options {
	if c.ca == nil {
		return client.Options{Insecure: true}
	}
	return client.Options{TLS: c.ca.Source(b, id).ClientConfig()}
}

func (c *ctlCluster) addrs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.grpcAddr)
	}
	return out
}

// buildTidemark builds the tidemark binary into the benchmark's temporary
// directory.
func buildTidemark(b *testing.B) string {
	b.Helper()
	bin, err := testenv.BuildTidemark(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return bin
}

// startCluster starts three controllers (c1 bootstraps, c2 and c3 join),
// on mutual TLS with certificates of a test CA, or plaintext (secure false),
// each with a data directory under the benchmark's temporary directory.
// Cleanups kill the processes (SIGKILL, process group) and remove the
// directories.
//
// With metrics, every node also serves --metrics-addr; extra are more
// arguments of every node.
func startCluster(b *testing.B, bin string, secure, metrics bool, extra ...string) *ctlCluster {
	b.Helper()
	withMetrics := metrics
	c := &ctlCluster{}
	if secure {
		c.ca = testenv.NewTestCA(b)
	}
	for i := 1; i <= 3; i++ {
		n := &ctlNode{id: fmt.Sprintf("c%d", i), grpcAddr: testenv.FreeAddr(b), raftAddr: testenv.FreeAddr(b)}
		args := []string{"controller", "--node-id", n.id, "--data-dir", filepath.Join(b.TempDir(), "data"),
			"--grpc-addr", n.grpcAddr, "--raft-addr", n.raftAddr}
		if i == 1 {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", strings.Join(c.addrs(), ","))
		}
		if withMetrics {
			n.metricsAddr = testenv.FreeAddr(b)
			args = append(args, "--metrics-addr", n.metricsAddr)
		}
		if secure {
			args = append(args, testenv.Args(c.ca.Files(b, testenv.Controller(n.id)))...)
		} else {
			args = append(args, "--insecure")
		}
		args = append(args, extra...)
		n.child = testenv.NewChild(b, n.id, bin, args...)
		n.child.Start()
		testenv.WaitFor(b, n.id+" to serve gRPC", 20*time.Second, func() error {
			if n.child.Exited() {
				return fmt.Errorf("%s exited:\n%s", n.id, n.child.LogTail())
			}
			conn, err := client.DialAny(context.Background(), []string{n.grpcAddr}, withProbe(c.opts(b, testenv.Admin()), time.Second))
			n.conn = conn
			return err
		})
		b.Cleanup(func() { _ = n.conn.Close() })
		c.nodes = append(c.nodes, n)
	}
	testenv.WaitFor(b, "three members agreeing on a leader", 60*time.Second, func() error {
		var id string
		for _, n := range c.nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := n.conn.Control.ClusterStatus(ctx, &v1.ClusterStatusRequest{})
			cancel()
			switch {
			case err != nil:
				return fmt.Errorf("%s: %w", n.id, err)
			case st.GetLeaderId() == "" || (id != "" && st.GetLeaderId() != id):
				return fmt.Errorf("%s sees leader %q, another node %q", n.id, st.GetLeaderId(), id)
			case len(st.GetMembers()) != 3:
				return fmt.Errorf("%s sees %d members", n.id, len(st.GetMembers()))
			}
			id = st.GetLeaderId()
			for _, m := range st.GetMembers() {
				if !m.GetVoter() || m.GetAddress() == "" {
					return fmt.Errorf("%s sees member %v", n.id, m)
				}
			}
			c.term = st.GetTerm()
		}
		for _, n := range c.nodes {
			if n.id == id {
				c.leader = n
			}
		}
		return nil
	})
	return c
}

// status is the leader's ClusterStatus; it fails the benchmark when the
// leadership moved since startCluster (the figures would mix two leaders).
func (c *ctlCluster) status(b *testing.B) *v1.ClusterStatusResponse {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.leader.conn.Control.ClusterStatus(ctx, &v1.ClusterStatusRequest{})
	if err != nil {
		b.Fatalf("ClusterStatus of %s: %v", c.leader.id, err)
	}
	if st.GetLeaderId() != c.leader.id || st.GetTerm() != c.term {
		b.Fatalf("the leadership moved during the benchmark: leader %s term %d, was %s term %d\n%s",
			st.GetLeaderId(), st.GetTerm(), c.leader.id, c.term, c.leader.child.LogTail())
	}
	return st
}

// cpu is every node's CPU time (user+system) now, by node id.
func (c *ctlCluster) cpu() map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, n := range c.nodes {
		out[n.id] = procCPU(n.child.Pid())
	}
	return out
}

// procStatusMiB is a field of /proc/PID/status given in kB (VmRSS:,
// VmHWM:), in MiB.
func procStatusMiB(pid int, field string) float64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	_, rest, ok := strings.Cut(string(data), "\n"+field)
	if !ok {
		return 0
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return 0
	}
	kb, _ := strconv.ParseFloat(f[0], 64)
	return kb / 1024
}

// percentile of sorted durations, in milliseconds.
func percentileMs(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, int(p*float64(len(sorted))))
	return float64(sorted[i]) / float64(time.Millisecond)
}

func pctOfCore(cpu, wall time.Duration) float64 { return 100 * cpu.Seconds() / wall.Seconds() }

// simCapabilities is what an agent's probes would report for a MariaDB
// 10.11 primary on ext4.
func simCapabilities(i int) *v1.Capabilities {
	return &v1.Capabilities{
		Flavor: "mariadb", Version: "10.11.6", Edition: "community", Plugins: []string{"unix_socket", "feedback"},
		BinlogEnabled: true, BinlogFormat: "ROW", GtidMode: "ON", Datadir: "/var/lib/mysql",
		Filesystem: v1.Filesystem_FILESYSTEM_EXT4, SnapshotFreeBytes: 64 << 30, DataBytes: uint64(10+i%90) << 30,
		IsReplica: i%4 == 3, StorageReachable: true, AgentVersion: "bench", ProbedAt: timestamppb.Now(),
	}
}

// simRegister is agent i's Register: labels, host capabilities and one
// instance.
func simRegister(prefix string, i int, instances int) *v1.Register {
	name := fmt.Sprintf("%s-%05d", prefix, i)
	reg := &v1.Register{
		Name:         name,
		Labels:       map[string]string{"env": "prod", "region": []string{"eu-1", "eu-2", "us-1"}[i%3], "team": fmt.Sprintf("team-%d", i%12)},
		Capabilities: simCapabilities(i),
		AgentVersion: "bench",
	}
	for k := range instances {
		in := fmt.Sprintf("%s/db%02d", name, k)
		reg.Instances = append(reg.Instances, &v1.Instance{
			Name: in, Labels: map[string]string{"role": "primary"}, Capabilities: simCapabilities(i),
			Server: &v1.ServerInfo{Flavor: "mariadb", Version: "10.11.6-MariaDB-0+deb12u1", Hostname: name, ServerId: uint32(i*100 + k + 1)},
		})
	}
	return reg
}

// ---------------------------------------------------------------------------
// BenchmarkCatalogWrite

// BenchmarkCatalogWrite measures catalog writes through the leader of a
// 3-node cluster: writers=1 and writers=16 clients, each with its own gRPC
// connection to the leader (as CLIs would have), issue writes back to back
// for TIDEMARK_BENCH_WRITE_TIME (default 20s) after a 2 s warm-up. Each
// sub-benchmark starts a cluster of its own, so it does not inherit the
// other's catalog.
//
// The write: SubmitBackup of an instance whose agent is not connected, then
// CancelJob of that job, and again. Both are real Raft commands that change
// the catalog (a new PENDING job; the job CANCELLED), replicated to both
// followers and fsynced by raft-boltdb on all three nodes, and they are the
// cheapest the ControlService offers: no agent is involved, and the leader
// only reads the catalog before applying. Submitting without cancelling
// is not possible (one backup per instance at a time: the second submit is
// refused with a conflict); AddMember/RemoveMember are configuration
// changes. Each writer has instances of its own (one, or
// TIDEMARK_BENCH_WRITE_INSTANCES taken in turn), so writers never
// conflict. Both calls count as one write each; the latency is the gRPC
// call as the client sees it.
//
// metrics=true runs the same with --metrics-addr on every node and the
// leader scraped every TIDEMARK_BENCH_SCRAPE_INTERVAL (default 1s, a
// busy Prometheus) while the writers run: the metrics' cost is the
// difference between the two rows. TIDEMARK_BENCH_WRITE_METRICS=off|on
// runs only one of them.
func BenchmarkCatalogWrite(b *testing.B) {
	dur := envDuration(b, "TIDEMARK_BENCH_WRITE_TIME", 20*time.Second)
	spread := envInt(b, "TIDEMARK_BENCH_WRITE_INSTANCES", 1)
	every := envDuration(b, "TIDEMARK_BENCH_SCRAPE_INTERVAL", time.Second)
	toggles := []bool{false, true}
	switch os.Getenv("TIDEMARK_BENCH_WRITE_METRICS") {
	case "off":
		toggles = []bool{false}
	case "on":
		toggles = []bool{true}
	}
	bin := buildTidemark(b)
	for _, secure := range []bool{true, false} {
		for _, writers := range []int{1, 16} {
			for _, metrics := range toggles {
				b.Run(fmt.Sprintf("tls=%t/writers=%d/metrics=%t", secure, writers, metrics), func(b *testing.B) {
					for range b.N {
						c := startCluster(b, bin, secure, metrics)
						instances := writerInstances(b, c, writers, spread)
						stop := func() {}
						if metrics {
							stop = c.scrapeLeader(b, every)
						}
						measureWrites(b, c, instances, dur)
						stop()
					}
				})
			}
		}
	}
}

// scrapeLeader scrapes the leader's /metrics every interval until the
// returned function is called, which reports the scrapes' count, median
// and worst time and body size.
func (c *ctlCluster) scrapeLeader(b *testing.B, every time.Duration) func() {
	url := "http://" + c.leader.metricsAddr + "/metrics"
	hc := &http.Client{Timeout: 10 * time.Second}
	if c.ca != nil {
		src := c.ca.Source(b, testenv.Admin())
		url = "https://" + c.leader.metricsAddr + "/metrics"
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: src.Roots(), ServerName: tlsx.ControllerServerName,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return src.Current() }}}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	var (
		took  []time.Duration
		size  int
		fails int
	)
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			start := time.Now()
			resp, err := hc.Get(url)
			if err != nil {
				fails++
				continue
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				fails++
				continue
			}
			took = append(took, time.Since(start))
			size = int(n)
		}
	}()
	return func() {
		close(stop)
		<-done
		slices.Sort(took)
		if fails > 0 || len(took) == 0 {
			b.Errorf("scrapes: %d failed, %d succeeded", fails, len(took))
			return
		}
		b.ReportMetric(float64(len(took)), "scrapes")
		b.ReportMetric(percentileMs(took, 0.5), "scrape-p50-ms")
		b.ReportMetric(percentileMs(took, 1), "scrape-max-ms")
		b.ReportMetric(float64(size)/1024, "scrape-KiB")
	}
}

// writerInstances registers writers×spread instances, through agents that
// then go away (so that the jobs submitted stay PENDING until cancelled),
// and returns each writer's instance names.
func writerInstances(b *testing.B, c *ctlCluster, writers, spread int) [][]string {
	const perAgent = 64
	total := writers * spread
	var names []string
	for a := 0; len(names) < total; a++ {
		reg := simRegister("bench-writer", a, min(perAgent, total-len(names)))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		// Each agent presents its own certificate.
		ac, err := client.DialAny(ctx, []string{c.leader.grpcAddr}, c.opts(b, tlsx.Identity{Kind: tlsx.KindAgent, Name: reg.GetName()}))
		if err != nil {
			b.Fatal(err)
		}
		st, err := ac.Agent.Connect(ctx)
		if err == nil {
			err = st.Send(&v1.AgentMessage{Seq: 1, Msg: &v1.AgentMessage_Register{Register: reg}})
		}
		var m *v1.ControllerMessage
		if err == nil {
			m, err = st.Recv()
		}
		cancel()
		_ = ac.Close()
		if err != nil || m.GetRegistered() == nil {
			b.Fatalf("Register of %s answered %v, %v", reg.GetName(), m, err)
		}
		for _, in := range reg.GetInstances() {
			names = append(names, in.GetName())
		}
	}
	testenv.WaitFor(b, "the writers' agents to be disconnected", 10*time.Second, func() error {
		r, err := c.leader.conn.Control.ListAgents(context.Background(), &v1.ListAgentsRequest{})
		if err != nil {
			return err
		}
		for _, a := range r.GetAgents() {
			if a.GetConnected() {
				return fmt.Errorf("agent %s still connected", a.GetName())
			}
		}
		return nil
	})
	out := make([][]string, writers)
	for i, n := range names {
		out[i%writers] = append(out[i%writers], n)
	}
	return out
}

type write struct {
	at  time.Duration // start, from the end of the warm-up (negative: during it)
	lat time.Duration
}

func measureWrites(b *testing.B, c *ctlCluster, instances [][]string, dur time.Duration) {
	const warmup = 2 * time.Second
	conns := make([]*client.Conn, len(instances))
	for i := range conns {
		conn, err := client.DialLeader(context.Background(), c.addrs(), c.opts(b, testenv.Admin()))
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		if conn.NodeID != c.leader.id {
			b.Fatalf("DialLeader reached %s, the leader is %s", conn.NodeID, c.leader.id)
		}
		conns[i] = conn
	}
	load := load1()
	start := time.Now()
	measured := start.Add(warmup)
	end := measured.Add(dur)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		writes = make([][]write, len(instances))
		before cpuSnapshot
		cpu0   map[string]time.Duration
		st0    *v1.ClusterStatusResponse
	)
	// Take the "before" samples when the warm-up ends, from a timer so
	// that the writers are not held up.
	sampled := make(chan struct{})
	time.AfterFunc(warmup, func() {
		before, cpu0 = takeCPUSnapshot(0), c.cpu()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st0, _ = c.leader.conn.Control.ClusterStatus(ctx, &v1.ClusterStatusRequest{})
		cancel()
		close(sampled)
	})
	for w, mine := range instances {
		wg.Go(func() {
			ctl := conns[w].Control
			ctx := context.Background()
			timed := func(call func() error) error {
				t := time.Now()
				err := call()
				writes[w] = append(writes[w], write{at: t.Sub(measured), lat: time.Since(t)})
				return err
			}
			for k := 0; time.Now().Before(end); k++ {
				in := mine[k%len(mine)]
				var job *v1.Job
				err := timed(func() error {
					r, err := ctl.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: in, Labels: map[string]string{"bench": "catalog-write"}})
					job = r.GetJob()
					return err
				})
				if err == nil {
					err = timed(func() error {
						_, err := ctl.CancelJob(ctx, &v1.CancelJobRequest{Id: job.GetId(), Reason: "benchmark"})
						return err
					})
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("writer %d: %w", w, err))
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(measured)
	<-sampled
	after, cpu1 := takeCPUSnapshot(0), c.cpu()
	st1 := c.status(b)
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}

	var lats []time.Duration
	quarters := [4]int{}
	for _, ws := range writes {
		for _, x := range ws {
			if x.at < 0 {
				continue
			}
			lats = append(lats, x.lat)
			quarters[min(3, int(4*x.at/dur))]++
		}
	}
	slices.Sort(lats)
	n := float64(len(lats))
	b.ReportMetric(n/wall.Seconds(), "writes/s")
	b.ReportMetric(percentileMs(lats, 0.50), "p50-ms")
	b.ReportMetric(percentileMs(lats, 0.99), "p99-ms")
	b.ReportMetric(percentileMs(lats, 1), "max-ms")
	b.ReportMetric(float64(quarters[0])/(dur.Seconds()/4), "first-quarter-writes/s")
	b.ReportMetric(float64(quarters[3])/(dur.Seconds()/4), "last-quarter-writes/s")
	b.ReportMetric(float64(st1.GetCommitIndex()-st0.GetCommitIndex())/wall.Seconds(), "raft-entries/s")
	b.ReportMetric(pctOfCore(cpu1[c.leader.id]-cpu0[c.leader.id], wall), "leader-cpu-%")
	var followers time.Duration
	for _, nd := range c.nodes {
		if nd != c.leader {
			followers += cpu1[nd.id] - cpu0[nd.id]
		}
	}
	b.ReportMetric(pctOfCore(followers, wall)/2, "follower-cpu-%")
	b.ReportMetric(pctOfCore(after.self-before.self, wall), "client-cpu-%")
	b.ReportMetric(othersCPU(before, after, cpu0, cpu1).Seconds(), "others-cpu-s")
	b.ReportMetric(load, "load1")
	b.Logf("%d writes in %s by %d writers, %d instance(s) each; %d jobs in the catalog", len(lats), wall.Round(time.Millisecond),
		len(instances), len(instances[0]), jobCount(b, c))
}

func jobCount(b *testing.B, c *ctlCluster) int {
	n := 0
	for tok := ""; ; {
		r, err := c.leader.conn.Control.ListJobs(context.Background(), &v1.ListJobsRequest{PageSize: 10000, PageToken: tok})
		if err != nil {
			b.Fatal(err)
		}
		n += len(r.GetJobs())
		if tok = r.GetNextPageToken(); tok == "" {
			return n
		}
	}
}

// ---------------------------------------------------------------------------
// BenchmarkAgents

// BenchmarkAgents connects TIDEMARK_BENCH_AGENTS (default 2000) simulated
// agents to a 3-node cluster and measures what the leader spends on them
// in steady state.
//
// Each agent follows agent.proto: it opens AgentService.Connect on one of
// the three nodes (agent i on node i%3, so two thirds start on a follower
// and are redirected to the leader by the FAILED_PRECONDITION Error),
// registers with labels, host capabilities and one instance, and then
// sends a Heartbeat (no running jobs) every Registered.heartbeat_interval
// (5 s, the default), the first at a random point of the first interval
// and the next ones jittered by ±10 %. A session that ends is reconnected
// (counted in "reconnects"; there should be none). All agents start at
// once, as after a controller restart.
//
// Once all are registered, the benchmark waits TIDEMARK_BENCH_SETTLE
// (default 15s), then measures over TIDEMARK_BENCH_WINDOW (default 60s):
// the leader's CPU (utime+stime from /proc/PID/stat, as % of one core),
// VmRSS and VmHWM (/proc/PID/status; VmHWM is the peak since the process
// started, registration included), the followers' CPU, and the Raft
// entries committed meanwhile (heartbeats must not reach the log).
func BenchmarkAgents(b *testing.B) {
	agents := envInt(b, "TIDEMARK_BENCH_AGENTS", 2000)
	window := envDuration(b, "TIDEMARK_BENCH_WINDOW", 60*time.Second)
	settle := envDuration(b, "TIDEMARK_BENCH_SETTLE", 15*time.Second)
	bin := buildTidemark(b)
	for range b.N {
		// Plaintext: thousands of simulated agents share a few
		// connections, which one agent certificate each cannot.
		measureAgents(b, startCluster(b, bin, false, false), agents, window, settle)
	}
}

func measureAgents(b *testing.B, c *ctlCluster, agents int, window, settle time.Duration) {
	pool := newConnPool(b, agents)
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{addrs: c.addrs(), pool: pool, registeredAll: make(chan struct{}), want: int64(agents), errs: make(chan error, 16)}
	load := load1()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range agents {
		wg.Go(func() { f.runAgent(ctx, i) })
	}
	defer func() {
		cancel()
		wg.Wait()
		pool.close()
	}()
	select {
	case <-f.registeredAll:
	case err := <-f.errs:
		b.Fatal(err)
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d agents registered in 5 minutes", f.registered.Load(), agents)
	}
	regTime := time.Since(start)
	b.Logf("%d agents registered in %s (%d redirected by a follower, %d retries)", agents, regTime.Round(time.Millisecond), f.redirects.Load(), f.retries.Load())

	wait := func(d time.Duration) {
		select {
		case err := <-f.errs:
			b.Fatal(err)
		case <-time.After(d):
		}
	}
	wait(settle)
	st0 := c.status(b)
	cpu0, before := c.cpu(), takeCPUSnapshot(0)
	hb0, rc0 := f.heartbeats.Load(), f.reconnects.Load()
	t0 := time.Now()
	wait(window)
	wall := time.Since(t0)
	cpu1, after := c.cpu(), takeCPUSnapshot(0)
	hb1, rc1 := f.heartbeats.Load(), f.reconnects.Load()
	st1 := c.status(b)
	pid := c.leader.child.Pid()
	rss, hwm := procStatusMiB(pid, "VmRSS:"), procStatusMiB(pid, "VmHWM:")

	connected := 0
	for tok := ""; ; {
		r, err := c.leader.conn.Control.ListAgents(context.Background(), &v1.ListAgentsRequest{PageSize: 10000, PageToken: tok})
		if err != nil {
			b.Fatal(err)
		}
		for _, a := range r.GetAgents() {
			if a.GetConnected() {
				connected++
			}
		}
		if tok = r.GetNextPageToken(); tok == "" {
			break
		}
	}
	if connected != agents {
		b.Errorf("the leader lists %d connected agents, want %d", connected, agents)
	}

	b.ReportMetric(regTime.Seconds(), "register-s")
	b.ReportMetric(pctOfCore(cpu1[c.leader.id]-cpu0[c.leader.id], wall), "leader-cpu-%")
	b.ReportMetric(rss, "leader-RSS-MiB")
	b.ReportMetric(hwm, "leader-HWM-MiB")
	var followers time.Duration
	for _, nd := range c.nodes {
		if nd != c.leader {
			followers += cpu1[nd.id] - cpu0[nd.id]
		}
	}
	b.ReportMetric(pctOfCore(followers, wall)/2, "follower-cpu-%")
	b.ReportMetric(float64(hb1-hb0)/wall.Seconds(), "heartbeats/s")
	b.ReportMetric(float64(st1.GetCommitIndex()-st0.GetCommitIndex()), "raft-entries")
	b.ReportMetric(float64(rc1-rc0), "reconnects")
	b.ReportMetric(pctOfCore(after.self-before.self, wall), "client-cpu-%")
	b.ReportMetric(othersCPU(before, after, cpu0, cpu1).Seconds(), "others-cpu-s")
	b.ReportMetric(load, "load1")
	b.Logf("window %s: %d heartbeats, %d agents connected, gRPC connections: %s", wall.Round(time.Millisecond), hb1-hb0, connected, pool)
}

// connPool hands out gRPC client connections to the simulated agents. A
// real agent has a TCP connection of its own, and the leader's memory
// grows with each (HTTP/2 transport buffers, goroutines), so every agent
// gets its own connection when the file descriptor limit allows it (this
// process and the leader each hold one descriptor per agent, plus a few
// hundred). Otherwise, or when TIDEMARK_BENCH_AGENT_CONNS is set, the
// agents share that many connections per node, multiplexed as HTTP/2
// streams: the leader then does the same work per message but holds fewer
// transports, so its memory is underestimated.
type connPool struct {
	shared int // connections per address; 0: one per agent session
	mu     sync.Mutex
	conns  map[string][]*grpc.ClientConn
}

func newConnPool(b *testing.B, agents int) *connPool {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	p := &connPool{conns: map[string][]*grpc.ClientConn{}}
	if n := os.Getenv("TIDEMARK_BENCH_AGENT_CONNS"); n != "" {
		p.shared = envInt(b, "TIDEMARK_BENCH_AGENT_CONNS", 0)
	} else if lim.Cur < uint64(agents)+512 {
		p.shared = 8
		b.Logf("open file limit %d is too low for a connection per agent: %d agents share %d connections per node (ulimit -n %d to give each its own)",
			lim.Cur, agents, p.shared, agents+512)
	}
	return p
}

func (p *connPool) dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// get returns a connection to addr for agent i and what to call when the
// session is over.
func (p *connPool) get(addr string, i int) (*grpc.ClientConn, func(), error) {
	if p.shared == 0 {
		cc, err := p.dial(addr)
		if err != nil {
			return nil, nil, err
		}
		return cc, func() { _ = cc.Close() }, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.conns[addr]
	if cs == nil {
		for range p.shared {
			cc, err := p.dial(addr)
			if err != nil {
				return nil, nil, err
			}
			cs = append(cs, cc)
		}
		p.conns[addr] = cs
	}
	return cs[i%len(cs)], func() {}, nil
}

func (p *connPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cs := range p.conns {
		for _, cc := range cs {
			_ = cc.Close()
		}
	}
}

func (p *connPool) String() string {
	if p.shared == 0 {
		return "one per agent"
	}
	return fmt.Sprintf("%d per node, shared", p.shared)
}

// fleet is the simulated agents and their counters.
type fleet struct {
	addrs         []string
	pool          *connPool
	want          int64
	registered    atomic.Int64
	registeredAll chan struct{}
	heartbeats    atomic.Int64
	reconnects    atomic.Int64
	redirects     atomic.Int64
	retries       atomic.Int64
	errs          chan error
}

func (f *fleet) fail(err error) {
	select {
	case f.errs <- err:
	default:
	}
}

// runAgent runs agent i until ctx ends: connect, follow redirects, then
// heartbeat; reconnect when the session ends.
func (f *fleet) runAgent(ctx context.Context, i int) {
	reg := simRegister("sim", i, 1)
	addr := f.addrs[i%len(f.addrs)]
	first := true
	for ctx.Err() == nil {
		next, err := f.session(ctx, i, addr, reg, &first)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errFatal):
			f.fail(err)
			return
		case next != "":
			f.redirects.Add(1)
			addr = next
			continue
		case err != nil:
			f.retries.Add(1)
			addr = f.addrs[rand.IntN(len(f.addrs))]
		}
		// Back off before trying again: a retry or a lost session.
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(100+rand.IntN(400)) * time.Millisecond):
		}
	}
}

var errFatal = errors.New("fatal")

// session is one Connect stream. It returns the address to go to when
// redirected; an error wrapping errFatal ends the agent.
func (f *fleet) session(ctx context.Context, i int, addr string, reg *v1.Register, first *bool) (string, error) {
	cc, release, err := f.pool.get(addr, i)
	if err != nil {
		return "", err
	}
	defer release()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := v1.NewAgentServiceClient(cc).Connect(sctx)
	if err != nil {
		return "", err
	}
	if err := st.Send(&v1.AgentMessage{Seq: 1, Msg: &v1.AgentMessage_Register{Register: reg}}); err != nil {
		return "", err
	}
	m, err := st.Recv()
	if err != nil {
		return "", err
	}
	if e := m.GetError(); e != nil {
		switch codes.Code(e.GetCode()) {
		case codes.FailedPrecondition:
			if e.GetLeader() != "" {
				return e.GetLeader(), nil
			}
			return "", errors.New(e.GetMessage())
		case codes.Unavailable:
			return "", errors.New(e.GetMessage())
		default:
			return "", fmt.Errorf("%w: agent %s: Register refused: %s (code %d)", errFatal, reg.GetName(), e.GetMessage(), e.GetCode())
		}
	}
	ok := m.GetRegistered()
	if ok == nil {
		return "", fmt.Errorf("%w: agent %s: Register answered with %v", errFatal, reg.GetName(), m)
	}
	if *first {
		*first = false
		if f.registered.Add(1) == f.want {
			close(f.registeredAll)
		}
	} else {
		f.reconnects.Add(1)
	}
	interval := ok.GetHeartbeatInterval().AsDuration()
	if interval <= 0 {
		return "", fmt.Errorf("%w: Registered without a heartbeat interval", errFatal)
	}

	ended := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				ended <- err
				return
			}
			switch {
			case m.GetError() != nil && m.GetError().GetSeq() == 0:
				// The session is over (leadership lost, silence); the
				// stream ends next.
			case m.GetAssignJob() != nil || m.GetCancelJob() != nil:
				f.fail(fmt.Errorf("%w: agent %s was sent %v", errFatal, reg.GetName(), m))
			}
		}
	}()
	seq := uint64(1)
	t := time.NewTimer(time.Duration(rand.Int64N(int64(interval))))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = st.CloseSend()
			return "", nil
		case err := <-ended:
			return "", err
		case <-t.C:
			seq++
			if err := st.Send(&v1.AgentMessage{Seq: seq, Msg: &v1.AgentMessage_Heartbeat{Heartbeat: &v1.Heartbeat{}}}); err != nil {
				return "", err
			}
			f.heartbeats.Add(1)
			t.Reset(time.Duration(float64(interval) * (0.9 + 0.2*rand.Float64())))
		}
	}
}

// othersCPU is the CPU time the machine spent on anything but this process
// and the controller processes (cpu0 and cpu1, by node) between two
// snapshots: non-zero means the figures were disturbed.
func othersCPU(before, after cpuSnapshot, cpu0, cpu1 map[string]time.Duration) time.Duration {
	var ours time.Duration
	for id := range cpu1 {
		ours += cpu1[id] - cpu0[id]
	}
	return max(0, (after.busy-before.busy)-(after.self-before.self)-ours)
}

func withProbe(o client.Options, d time.Duration) client.Options {
	o.ProbeTimeout = d
	return o
}

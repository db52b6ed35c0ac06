package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/policy"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// BenchmarkPolicies measures the leader's scheduler at fleet scale: three
// controller processes, TIDEMARK_BENCH_AGENTS simulated agents (default
// 2000, one instance each) under TIDEMARK_BENCH_POLICIES policies (default
// 20, each selecting its share by a `shard` label) with an @hourly backup
// and continuous binlog. The simulated agents complete every backup at
// once and keep every stream job running (its lease in their heartbeats).
//
// An hour is not waited for: the controllers read their time from
// --test-clock-file, which this process advances TIDEMARK_BENCH_SPEEDUP
// times faster than the wall clock (default 30: an hour in two minutes).
// The policies are applied at 00:50 (fake), so the first hourly run is due
// at 01:00 plus each instance's spread (up to 6 fake minutes): every
// instance's run falls due within 12 real seconds, a load 30 times denser
// than a real hour's. Reported:
//   - leader-cpu-% and leader RSS/HWM over the window from the apply to
//     the last backup of the hour succeeding (wall time);
//   - steady-cpu-%: the leader over TIDEMARK_BENCH_STEADY (default 20s)
//     after that, every stream running and no run due: heartbeats, lease
//     renewals, scheduler ticks and status evaluations;
//   - delay-p50/p99-ms: per run, job creation minus its due time, in
//     real milliseconds (fake time divided by the speed-up; the clock file
//     is rewritten every 20ms, so figures below ~20 ms are noise);
//   - streams-s: apply to every stream job running;
//   - recompute-ms: the new leader's rebuild of the scheduler's memory
//     from the catalog after kill -9 of the leader (from its log), and
//     takeover-s: kill to the new leader's first scheduler tick.
func BenchmarkPolicies(b *testing.B) {
	agents := envInt(b, "TIDEMARK_BENCH_AGENTS", 2000)
	policies := envInt(b, "TIDEMARK_BENCH_POLICIES", 20)
	speed := envInt(b, "TIDEMARK_BENCH_SPEEDUP", 30)
	bin := buildTidemark(b)
	for range b.N {
		measurePolicies(b, bin, agents, policies, speed)
	}
}

// fakeClock writes a time into a file every 20ms until stopped: t0 until
// start is called, then running speed times faster than the wall clock.
type fakeClock struct {
	path  string
	t0    time.Time
	wall0 atomic.Pointer[time.Time]
	speed int
}

func (c *fakeClock) start() { t := time.Now(); c.wall0.Store(&t) }

func (c *fakeClock) now() time.Time {
	w := c.wall0.Load()
	if w == nil {
		return c.t0
	}
	return c.t0.Add(time.Duration(c.speed) * time.Since(*w))
}

func (c *fakeClock) run(ctx context.Context) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		tmp := c.path + ".tmp"
		_ = os.WriteFile(tmp, []byte(c.now().Format(time.RFC3339Nano)), 0o600)
		_ = os.Rename(tmp, c.path)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func measurePolicies(b *testing.B, bin string, agents, policies, speed int) {
	dir := b.TempDir()
	day := time.Now().UTC().Truncate(24 * time.Hour)
	clk := &fakeClock{path: filepath.Join(dir, "clock"), t0: day.Add(50 * time.Minute), speed: speed}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { clk.run(ctx) })
	c := startCluster(b, bin, false, false, "--test-clock-file", clk.path)

	sim := &jobSim{addrs: c.addrs(), pool: newConnPool(b, agents), streams: map[string]bool{}}
	defer sim.pool.close()
	for i := range agents {
		wg.Go(func() { sim.runAgent(ctx, i, policies) })
	}
	testenv.WaitFor(b, "every agent registered", 5*time.Minute, func() error {
		if n := sim.registered.Load(); n < int64(agents) {
			return fmt.Errorf("%d of %d", n, agents)
		}
		return nil
	})
	var docs []string
	for p := range policies {
		docs = append(docs, fmt.Sprintf("name: shard-%02d\nselector: shard=s%02d\nbackups:\n  - schedule: \"@hourly\"\n    catch_up: 30m\nbinlog: {enabled: true, flush: 1s, rpo_target: 5m}\n", p, p))
	}
	cpu0 := c.cpu()
	clk.start()
	wall0 := time.Now()
	applied := clk.now()
	if _, err := c.leader.conn.Control.ApplyPolicies(context.Background(), &v1.ApplyPoliciesRequest{Yaml: strings.Join(docs, "---\n"), FileName: "bench.yaml"}); err != nil {
		b.Fatal(err)
	}
	testenv.WaitFor(b, "every stream running", 5*time.Minute, func() error {
		if n := sim.streamCount(); n < agents {
			return fmt.Errorf("%d of %d streams", n, agents)
		}
		return nil
	})
	streamsTook := time.Since(wall0)
	b.Logf("policies applied at %s (fake); %d streams running after %s", applied.Format("15:04:05"), agents, streamsTook.Round(time.Millisecond))
	testenv.WaitFor(b, "every instance's 01:00 backup to succeed", 10*time.Minute, func() error {
		if n := sim.backups.Load(); n < int64(agents) {
			return fmt.Errorf("%d of %d backups (fake time %s)", n, agents, clk.now().Format("15:04:05"))
		}
		return nil
	})
	wall := time.Since(wall0)
	cpu1 := c.cpu()
	pid := c.leader.child.Pid()
	rss, hwm := procStatusMiB(pid, "VmRSS:"), procStatusMiB(pid, "VmHWM:")
	// Steady state: every stream running, no run due (the next hour is
	// 50 fake minutes away), the scheduler ticking and evaluating.
	steady := envDuration(b, "TIDEMARK_BENCH_STEADY", 20*time.Second)
	cpuS0, steady0 := c.cpu(), time.Now()
	time.Sleep(steady)
	steadyCPU := pctOfCore(c.cpu()[c.leader.id]-cpuS0[c.leader.id], time.Since(steady0))

	// Delays, from the catalog: created_at - due, in real time.
	var delays []time.Duration
	for tok := ""; ; {
		r, err := c.leader.conn.Control.ListJobs(context.Background(), &v1.ListJobsRequest{Kind: v1.JobKind_JOB_KIND_BACKUP, PageSize: 10000, PageToken: tok})
		if err != nil {
			b.Fatal(err)
		}
		for _, j := range r.GetJobs() {
			if j.GetScheduledFor() == nil {
				continue
			}
			due := policy.DueAt(j.GetPolicy(), j.GetRunKey(), j.GetScheduledFor().AsTime(), time.Hour, "")
			delays = append(delays, j.GetCreatedAt().AsTime().Sub(due)/time.Duration(speed))
		}
		if tok = r.GetNextPageToken(); tok == "" {
			break
		}
	}
	slices.Sort(delays)
	if len(delays) != agents {
		b.Errorf("%d scheduled backup jobs, want %d (one per instance)", len(delays), agents)
	}

	// Leader change: kill -9, time the new leader's recompute.
	old := c.leader
	killed := time.Now()
	old.child.Kill()
	var recompute, takeover time.Duration
	re := regexp.MustCompile(`scheduler recomputed its last runs from the catalog.* targets=(\d+) took=(\S+)`)
	testenv.WaitFor(b, "a new leader's scheduler", time.Minute, func() error {
		for _, n := range c.nodes {
			if n == old {
				continue
			}
			if m := re.FindStringSubmatch(n.child.Log()); m != nil {
				d, err := time.ParseDuration(m[2])
				if err != nil {
					return err
				}
				recompute, takeover = d, time.Since(killed)
				b.Logf("new leader %s recomputed %s targets in %s", n.id, m[1], d)
				return nil
			}
		}
		return fmt.Errorf("no new leader's scheduler yet")
	})

	b.ReportMetric(pctOfCore(cpu1[old.id]-cpu0[old.id], wall), "leader-cpu-%")
	b.ReportMetric(steadyCPU, "steady-cpu-%")
	b.ReportMetric(rss, "leader-RSS-MiB")
	b.ReportMetric(hwm, "leader-HWM-MiB")
	b.ReportMetric(percentileMs(delays, 0.5), "delay-p50-ms")
	b.ReportMetric(percentileMs(delays, 0.99), "delay-p99-ms")
	b.ReportMetric(streamsTook.Seconds(), "streams-s")
	b.ReportMetric(float64(recompute)/float64(time.Millisecond), "recompute-ms")
	b.ReportMetric(takeover.Seconds(), "takeover-s")
	b.Logf("window %s (apply to the hour's last backup); %d backups", wall.Round(time.Millisecond), sim.backups.Load())
}

// jobSim is simulated agents that take jobs: a backup succeeds at once, a
// stream runs until cancelled (its lease renewed by the heartbeats).
type jobSim struct {
	addrs      []string
	pool       *connPool
	registered atomic.Int64
	backups    atomic.Int64
	mu         sync.Mutex
	streams    map[string]bool
}

func (s *jobSim) streamCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

func (s *jobSim) runAgent(ctx context.Context, i, policies int) {
	reg := simRegister("sim", i, 1)
	reg.Labels["shard"] = fmt.Sprintf("s%02d", i%policies)
	addr := s.addrs[i%len(s.addrs)]
	running := map[string]*v1.LeaseToken{}
	first := true
	for ctx.Err() == nil {
		next, err := s.session(ctx, i, addr, reg, running, &first)
		if next != "" {
			addr = next
			continue
		}
		if err != nil {
			addr = s.addrs[(i+int(time.Now().UnixNano()))%len(s.addrs)]
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *jobSim) session(ctx context.Context, i int, addr string, reg *v1.Register, running map[string]*v1.LeaseToken, first *bool) (string, error) {
	cc, release, err := s.pool.get(addr, i)
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
	reg.Running = nil
	for id, l := range running {
		reg.Running = append(reg.Running, &v1.RunningJob{JobId: id, Lease: l})
	}
	var sendMu sync.Mutex
	seq := uint64(0)
	send := func(m *v1.AgentMessage) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		seq++
		m.Seq = seq
		return st.Send(m)
	}
	if err := send(&v1.AgentMessage{Msg: &v1.AgentMessage_Register{Register: reg}}); err != nil {
		return "", err
	}
	m, err := st.Recv()
	if err != nil {
		return "", err
	}
	if e := m.GetError(); e != nil {
		return e.GetLeader(), fmt.Errorf("register: %s", e.GetMessage())
	}
	ok := m.GetRegistered()
	if ok == nil {
		return "", fmt.Errorf("register answered %v", m)
	}
	if *first {
		*first = false
		s.registered.Add(1)
	}
	var mu sync.Mutex // guards running
	ended := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				ended <- err
				return
			}
			switch {
			case m.GetAssignJob() != nil:
				asg := m.GetAssignJob()
				j := asg.GetJob()
				if j.GetKind() == v1.JobKind_JOB_KIND_BINLOG_STREAM {
					mu.Lock()
					running[j.GetId()] = asg.GetLease()
					mu.Unlock()
					s.mu.Lock()
					s.streams[j.GetId()] = true
					s.mu.Unlock()
					continue
				}
				bid := j.GetBackup().GetBackupId()
				if send(&v1.AgentMessage{Msg: &v1.AgentMessage_JobResult{JobResult: &v1.JobResultReport{
					JobId: j.GetId(), Lease: asg.GetLease(), Ok: true, BackupId: bid, ManifestKey: "manifests/" + bid, RepositoryUri: "file:///bench",
					Manifest: &v1.Manifest{BackupId: bid, Instance: j.GetInstance(), Engine: "logical", Fence: asg.GetLease(),
						StartedAt: timestamppb.Now(), FinishedAt: timestamppb.Now()},
				}}}) == nil && j.GetScheduledFor() != nil {
					s.backups.Add(1)
				}
			case m.GetCancelJob() != nil:
				mu.Lock()
				delete(running, m.GetCancelJob().GetJobId())
				mu.Unlock()
			}
		}
	}()
	interval := ok.GetHeartbeatInterval().AsDuration()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = st.CloseSend()
			return "", nil
		case err := <-ended:
			return "", err
		case <-t.C:
			hb := &v1.Heartbeat{}
			mu.Lock()
			for id, l := range running {
				hb.Running = append(hb.Running, &v1.RunningJob{JobId: id, Lease: l})
			}
			mu.Unlock()
			if err := send(&v1.AgentMessage{Msg: &v1.AgentMessage_Heartbeat{Heartbeat: hb}}); err != nil {
				return "", err
			}
		}
	}
}

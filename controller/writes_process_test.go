package controller_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// tcpProxy forwards connections to one address, and can cut them off
// (blackhole: bytes are swallowed both ways, connections stay open, as
// behind a dead link) or swallow the next reply and then close the
// connection (a reply lost after the server acted).
type tcpProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	blackhole atomic.Bool
	// swallowed counts the bytes the blackhole swallowed.
	swallowed atomic.Int64
	// dropNext is armed by dropNextReply: the first bytes the server sends
	// afterwards, and all after them on that connection, are swallowed,
	// and the connection is closed hold later.
	dropNext atomic.Bool
	hold     time.Duration
	dropped  chan struct{}

	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, ln: ln, target: target}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
}

// dropNextReply arms the proxy; the returned channel is closed once a
// reply was swallowed and its connection closed.
func (p *tcpProxy) dropNextReply(hold time.Duration) <-chan struct{} {
	p.hold = hold
	p.dropped = make(chan struct{})
	p.dropNext.Store(true)
	return p.dropped
}

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		var dropping atomic.Bool
		closeBoth := func() { _ = c.Close(); _ = s.Close() }
		go p.pipe(c, s, nil, closeBoth)
		go p.pipe(s, c, &dropping, closeBoth)
	}
}

// pipe copies src to dst; dropping is set for the server-to-client side.
func (p *tcpProxy) pipe(src, dst net.Conn, dropping *atomic.Bool, closeBoth func()) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			closeBoth()
			return
		}
		if dropping != nil && !dropping.Load() && p.dropNext.CompareAndSwap(true, false) {
			dropping.Store(true)
			done := p.dropped
			time.AfterFunc(p.hold, func() { closeBoth(); close(done) })
		}
		if p.blackhole.Load() {
			p.swallowed.Add(int64(n))
			continue
		}
		if dropping != nil && dropping.Load() {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			closeBoth()
			return
		}
	}
}

// writer is a client that loops over submit, consistent list, cancel on
// one instance, as a script would, each command with its own deadline.
type writer struct {
	name     string
	conn     *client.Conn
	instance string

	mu        sync.Mutex
	submitted []string
	errs      []error
	ops       atomic.Int64
	// slowest is the longest command, in nanoseconds.
	slowest atomic.Int64
}

func (w *writer) run(ctx context.Context, opTimeout time.Duration) {
	for ctx.Err() == nil {
		if err := w.once(opTimeout); err != nil {
			if ctx.Err() != nil {
				return
			}
			w.mu.Lock()
			w.errs = append(w.errs, fmt.Errorf("%s after %d rounds: %w", w.name, w.ops.Load(), err))
			w.mu.Unlock()
			return
		}
		w.ops.Add(1)
	}
}

// timed records how long the command that started at t0 took.
func (w *writer) timed(t0 time.Time) {
	d := int64(time.Since(t0))
	for {
		old := w.slowest.Load()
		if d <= old || w.slowest.CompareAndSwap(old, d) {
			return
		}
	}
}

func (w *writer) once(opTimeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	t0 := time.Now()
	defer w.timed(t0)
	r, err := w.conn.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: w.instance, Engine: "logical"})
	if err != nil {
		return fmt.Errorf("submit (%s): %w", time.Since(t0).Round(time.Millisecond), err)
	}
	id := r.GetJob().GetId()
	w.mu.Lock()
	w.submitted = append(w.submitted, id)
	w.mu.Unlock()
	ctx, cancel = context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	l, err := w.conn.Control.ListJobs(ctx, &v1.ListJobsRequest{Instance: w.instance, Consistent: true})
	if err != nil {
		return fmt.Errorf("list after submitting %s: %w", id, err)
	}
	if !slices.ContainsFunc(l.GetJobs(), func(j *v1.Job) bool { return j.GetId() == id }) {
		return fmt.Errorf("job %s submitted but not listed by the next read (%d jobs listed)", id, len(l.GetJobs()))
	}
	ctx, cancel = context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := w.conn.Control.CancelJob(ctx, &v1.CancelJobRequest{Id: id, Reason: "writer"}); err != nil {
		return fmt.Errorf("cancel %s: %w", id, err)
	}
	return nil
}

// progressed waits until every writer has finished n more rounds.
func progressed(t *testing.T, what string, n int64, ws ...*writer) {
	t.Helper()
	base := make([]int64, len(ws))
	for i, w := range ws {
		base[i] = w.ops.Load()
	}
	testenv.WaitFor(t, what, 30*time.Second, func() error {
		for i, w := range ws {
			w.mu.Lock()
			errs := errors.Join(w.errs...)
			w.mu.Unlock()
			if errs != nil {
				t.Fatalf("%s: %v", what, errs)
			}
			if got := w.ops.Load() - base[i]; got < n {
				return fmt.Errorf("%s: %d rounds, want %d", w.name, got, n)
			}
		}
		return nil
	})
}

// TestWritesRideOutElections: three controller processes while two
// clients loop over submit, consistent list and cancel: the leader is
// killed -9, then SIGSTOPped and continued, then cut off from a client by
// a proxy. No command fails, every submitted job is listed by the next
// read, and no job is made twice. Then: a reply lost after the leader
// committed a submit (the retry returns the first job), a key that
// survives leader changes, and `tidemark backup` right after a leader is
// killed.
func TestWritesRideOutElections(t *testing.T) {
	start := time.Now()
	step := func(what string) { t.Logf("%6.2fs %s", time.Since(start).Seconds(), what) }
	c1, c2, c3 := newNode(t, "c1"), newNode(t, "c2"), newNode(t, "c3")
	c1.start(true, "--bootstrap")
	c2.start(true, "--join", c1.grpcAddr)
	c3.start(true, "--join", c1.grpcAddr+","+c2.grpcAddr)
	all := []*node{c1, c2, c3}
	leader := leaderOf(t, all, 3, 10*time.Second)
	for _, in := range []string{"db1", "db2", "db3", "db4"} {
		a, err := connectAgent(t, addrsOf(all...), in)
		if err != nil {
			t.Fatal(err)
		}
		a.close() // jobs stay pending: cheap entries
	}
	proxies := map[*node]*tcpProxy{}
	for _, n := range all {
		proxies[n] = startProxy(t, n.grpcAddr)
	}
	step("cluster of three, leader " + leader.id)

	opts := leader.clientOpts()
	opts.AttemptTimeout = testenv.Wait(2 * time.Second)
	ctx := t.Context()
	// w1 dials as the CLI does (the leader first); w2 through the proxies,
	// the leader's first.
	conn1, err := client.DialLeader(ctx, addrsOf(all...), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn1.Close() }()
	proxied := []string{proxies[leader].addr()}
	for _, n := range all {
		if n != leader {
			proxied = append(proxied, proxies[n].addr())
		}
	}
	conn2, err := client.DialAny(ctx, proxied, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn2.Close() }()

	// A keyed submit before the leader changes, sent again after them.
	keyed := &v1.SubmitBackupRequest{Instance: "db3", Engine: "logical", IdempotencyKey: "before-the-elections"}
	first, err := conn1.Control.SubmitBackup(ctx, keyed)
	if err != nil {
		t.Fatal(err)
	}

	w1 := &writer{name: "w1 (leader first)", conn: conn1, instance: "db1"}
	w2 := &writer{name: "w2 (through proxies)", conn: conn2, instance: "db2"}
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range []*writer{w1, w2} {
		wg.Add(1)
		go func() { defer wg.Done(); w.run(wctx, testenv.Wait(15*time.Second)) }()
	}
	progressed(t, "writers running", 3, w1, w2)
	step("writers running")

	// kill -9 the leader, then bring it back.
	killed := leader
	killed.Kill()
	live := slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n == killed })
	leader = leaderOf(t, live, 3, 10*time.Second)
	progressed(t, "writes after kill -9", 3, w1, w2)
	step(fmt.Sprintf("kill -9 %s: new leader %s, writers on", killed.id, leader.id))
	killed.start(false)
	leader = leaderOf(t, all, 3, 15*time.Second)

	// SIGSTOP the leader: it hangs, it does not refuse.
	stopped := leader
	stopped.Stop()
	live = slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n == stopped })
	leader = leaderOf(t, live, 3, 10*time.Second)
	progressed(t, "writes with the old leader stopped", 3, w1, w2)
	step(fmt.Sprintf("SIGSTOP %s: new leader %s, writers on", stopped.id, leader.id))
	stopped.Signal(syscall.SIGCONT)
	leader = leaderOf(t, all, 3, 15*time.Second)

	// Cut the leader off from w2. First make the leader's proxy the one w2
	// calls first (the last that answered it) by cutting the others for a
	// round; then cut the leader's instead.
	cut := proxies[leader]
	for n, p := range proxies {
		p.blackhole.Store(n != leader)
	}
	progressed(t, "w2 through the leader's proxy", 1, w2)
	for n, p := range proxies {
		p.blackhole.Store(n == leader)
	}
	before := cut.swallowed.Load()
	progressed(t, "writes with the leader cut off from w2", 3, w1, w2)
	if cut.swallowed.Load() == before {
		t.Fatal("w2 sent nothing to the cut-off leader's proxy: the cut was not tested")
	}
	step("leader " + leader.id + " cut off from w2 by its proxy, writers on")
	cut.blackhole.Store(false)

	stopWriters()
	wg.Wait()
	for _, w := range []*writer{w1, w2} {
		if err := errors.Join(w.errs...); err != nil {
			t.Fatal(err)
		}
	}
	// No job twice: each instance has exactly the jobs its writer was
	// told about, all distinct.
	for _, w := range []*writer{w1, w2} {
		// One page holds them all (a run makes a few hundred; the
		// default page is 100).
		l, err := conn1.Control.ListJobs(ctx, &v1.ListJobsRequest{Instance: w.instance, Consistent: true, PageSize: 10000})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, j := range l.GetJobs() {
			ids = append(ids, j.GetId())
		}
		slices.Sort(ids)
		got := slices.Clone(w.submitted)
		slices.Sort(got)
		if !slices.Equal(ids, got) || len(slices.Compact(slices.Clone(ids))) != len(ids) {
			t.Fatalf("%s: catalog has %d jobs of %s, the writer submitted %d:\ncatalog %v\nwriter  %v", w.name, len(ids), w.instance, len(got), ids, got)
		}
		step(fmt.Sprintf("%s: %d rounds, %d jobs, none twice; slowest round %s", w.name, w.ops.Load(), len(ids), time.Duration(w.slowest.Load()).Round(time.Millisecond)))
	}

	// The key made before three leader changes still returns its job.
	again, err := conn2.Control.SubmitBackup(ctx, keyed)
	if err != nil || !again.GetReplayed() || again.GetJob().GetId() != first.GetJob().GetId() {
		t.Fatalf("keyed submit after the leader changes: %v, %v; want job %s replayed", again, err, first.GetJob().GetId())
	}
	if _, err := conn1.Control.CancelJob(ctx, &v1.CancelJobRequest{Id: first.GetJob().GetId()}); err != nil {
		t.Fatal(err)
	}

	t.Run("LostReply", func(t *testing.T) {
		// Only the leader's proxy: the retry goes back through it.
		p := proxies[leader]
		c, err := client.DialAny(ctx, []string{p.addr()}, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		dropped := p.dropNextReply(testenv.Wait(time.Second))
		sctx, cancel := context.WithTimeout(ctx, testenv.Wait(15*time.Second))
		defer cancel()
		r, err := c.Control.SubmitBackup(sctx, &v1.SubmitBackupRequest{Instance: "db3", Engine: "logical"})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-dropped:
		default:
			t.Fatal("the proxy dropped no reply")
		}
		l, err := c.Control.ListJobs(sctx, &v1.ListJobsRequest{Instance: "db3", Consistent: true, States: []v1.JobState{v1.JobState_JOB_STATE_PENDING}})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.GetJobs()) != 1 || l.GetJobs()[0].GetId() != r.GetJob().GetId() {
			t.Fatalf("after a lost reply and a retry: pending jobs of db3 %v, the retry returned %s", l.GetJobs(), r.GetJob().GetId())
		}
		// The first attempt committed before its reply was lost: the retry
		// is a replay of it.
		if !r.GetReplayed() {
			t.Fatalf("the retry after a lost reply was not a replay: %v", r)
		}
		step("reply lost after commit: the retry returned the first job " + r.GetJob().GetId())
	})

	t.Run("CLIBackupAfterLeaderKill", func(t *testing.T) {
		admin := testCA(t).Files(t, testenv.Admin())
		killed := leader
		killed.Kill()
		// The dead leader first, as a script's list would have it.
		addrs := []string{killed.grpcAddr}
		for _, n := range all {
			if n != killed {
				addrs = append(addrs, n.grpcAddr)
			}
		}
		out, errOut, code := run(t, 60*time.Second, "backup", "--instance", "db4", "--controller", strings.Join(addrs, ","),
			"--tls-ca", admin.CA, "--tls-cert", admin.Cert, "--tls-key", admin.Key)
		if code != 0 {
			t.Fatalf("tidemark backup right after a leader kill: exit %d: %s", code, errOut)
		}
		id := strings.TrimSpace(out)
		if id == "" || strings.Contains(id, "\n") {
			t.Fatalf("tidemark backup printed %q, want one job id", out)
		}
		live := slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n == killed })
		l, err := live[0].conn.Control.ListJobs(ctx, &v1.ListJobsRequest{Instance: "db4", Consistent: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.GetJobs()) != 1 || l.GetJobs()[0].GetId() != id {
			t.Fatalf("jobs of db4 after one `tidemark backup`: %v, printed %s", l.GetJobs(), id)
		}
		step("tidemark backup right after kill -9 of " + killed.id + ": " + id)
	})

	t.Run("NoQuorum", func(t *testing.T) {
		// One node left of three: the write fails at the deadline, naming
		// every address and what each said.
		var last *node
		for _, n := range all {
			if !n.Exited() {
				if last == nil {
					last = n
				} else {
					n.Kill()
				}
			}
		}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		t0 := time.Now()
		_, err := conn1.Control.SubmitBackup(sctx, &v1.SubmitBackupRequest{Instance: "db4", Engine: "logical"})
		took := time.Since(t0)
		var ce *client.CallError
		if !errors.As(err, &ce) {
			t.Fatalf("write without a quorum: %v (%T), want a *client.CallError", err, err)
		}
		msg := status.Convert(err).Message()
		if status.Code(err) != codes.Unavailable || !strings.HasPrefix(msg, "SubmitBackup failed at every controller tried within 3") {
			t.Fatalf("write without a quorum: %v", err)
		}
		for _, n := range all {
			want := "): unreachable: dial tcp " + n.grpcAddr + ": connect: connection refused"
			if n == last {
				want = "): node " + n.id + " knows no leader"
			}
			if !strings.Contains(msg, n.grpcAddr+" (") || !strings.Contains(msg, want) {
				t.Errorf("the error does not name %s (%s) with %q: %s", n.id, n.grpcAddr, want, msg)
			}
		}
		if took > testenv.Wait(5*time.Second) {
			t.Errorf("a call with a 3 s deadline took %s", took)
		}
		t.Logf("without a quorum, after %s: %s", took.Round(time.Millisecond), msg)
	})
}

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
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// raftNet is the Raft network of a test cluster: a proxy in front of each
// node's Raft port, which the node advertises (--raft-advertise-addr), so
// that every Raft connection goes through one. A proxy learns which node
// dialled each connection it accepts (testenv.ConnOwner: on loopback every
// process dials from 127.0.0.1), so links are per pair of nodes: isolate
// cuts one node off from all the others, both directions, and leaves
// their links to each other alone.
type raftNet struct {
	t     *testing.T
	nodes []*node
	lns   map[*node]net.Listener

	mu     sync.Mutex
	cut    string // the isolated node's id; "" for none
	links  []*raftLink
	closed bool
	// fwd and lost count the bytes forwarded and swallowed per link,
	// "from>to".
	fwd, lost map[string]int64
	// orphans counts connections whose dialer was none of the nodes
	// (dropped: an unknown link could not be cut).
	orphans int
}

// raftLink is one proxied connection from one node to another's Raft
// port.
type raftLink struct {
	from, to         string
	client, upstream net.Conn
	swallowed        atomic.Int64
}

func (l *raftLink) close() { _ = l.client.Close(); _ = l.upstream.Close() }

// newRaftNet starts one proxy per node; a node's proxy address is
// raftNet.addr(node).
func newRaftNet(t *testing.T, nodes []*node) *raftNet {
	rn := &raftNet{t: t, nodes: nodes, lns: map[*node]net.Listener{}, fwd: map[string]int64{}, lost: map[string]int64{}}
	for _, n := range nodes {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		rn.lns[n] = ln
		go testenv.ProxyAccept(ln, n.raftAddr, func(c, u net.Conn) bool { return rn.accept(n, c, u) })
	}
	t.Cleanup(rn.close)
	return rn
}

func (rn *raftNet) addr(n *node) string { return rn.lns[n].Addr().String() }

// accept starts forwarding one connection to node to, once it knows which
// node dialled it.
func (rn *raftNet) accept(to *node, c, u net.Conn) bool {
	pids := map[int]string{}
	var list []int
	for _, n := range rn.nodes {
		if !n.Exited() {
			pids[n.Pid()] = n.id
			list = append(list, n.Pid())
		}
	}
	pid, err := testenv.ConnOwner(c, list)
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if rn.closed {
		return false
	}
	if err != nil {
		rn.orphans++
		_ = c.Close()
		_ = u.Close()
		return true
	}
	l := &raftLink{from: pids[pid], to: to.id, client: c, upstream: u}
	rn.links = append(rn.links, l)
	go rn.pipe(l, c, u, l.from+">"+l.to)
	go rn.pipe(l, u, c, l.to+">"+l.from)
	return true
}

// pipe copies src to dst while the link is not cut; while it is, the
// bytes are swallowed and the connection stays open, as behind a dead
// link (the kernel still acknowledges, nothing arrives).
func (rn *raftNet) pipe(l *raftLink, src, dst net.Conn, dir string) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			l.close()
			return
		}
		rn.mu.Lock()
		cut := rn.cut != "" && (l.from == rn.cut || l.to == rn.cut)
		if cut {
			rn.lost[dir] += int64(n)
		} else {
			rn.fwd[dir] += int64(n)
		}
		rn.mu.Unlock()
		if cut {
			l.swallowed.Add(int64(n))
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			l.close()
			return
		}
	}
}

// isolate cuts n off from every other node, both directions, on the
// connections open now and on every new one.
func (rn *raftNet) isolate(n *node) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.cut = n.id
}

// heal lets everything through again and closes the connections that
// lost bytes (their TLS streams cannot go on), as TCP would time them out
// after a long outage; Raft dials again.
func (rn *raftNet) heal() {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.cut = ""
	for _, l := range rn.links {
		if l.swallowed.Load() > 0 {
			l.close()
		}
	}
}

// bytes returns the bytes forwarded and swallowed from one node to
// another so far.
func (rn *raftNet) bytes(from, to *node) (fwd, lost int64) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.fwd[from.id+">"+to.id], rn.lost[from.id+">"+to.id]
}

func (rn *raftNet) close() {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.closed = true
	for _, ln := range rn.lns {
		_ = ln.Close()
	}
	for _, l := range rn.links {
		l.close()
	}
}

// catalogOn is a node's own catalog (a stale read): every job, "id=state"
// sorted.
func catalogOn(n *node) ([]string, error) {
	ctx, cancel := context.WithTimeout(client.Direct(context.Background()), 3*time.Second)
	defer cancel()
	r, err := n.conn.Control.ListJobs(ctx, &v1.ListJobsRequest{Stale: true, PageSize: 10000})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, j := range r.GetJobs() {
		out = append(out, j.GetId()+"="+j.GetState().String())
	}
	slices.Sort(out)
	return out, nil
}

// attempts counts a client's call attempts (every retry too) per address
// and method, from the moment it is reset: a gRPC stats handler, so it
// sees what the retry interceptor sends, not only the calls' outcome.
type attempts struct {
	mu sync.Mutex
	n  map[string]int // "addr method"
}

func (a *attempts) reset() { a.mu.Lock(); a.n = map[string]int{}; a.mu.Unlock() }

func (a *attempts) to(addr string) (n int, methods []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, c := range a.n {
		if at, m, _ := strings.Cut(k, " "); at == addr {
			n += c
			methods = append(methods, m)
		}
	}
	slices.Sort(methods)
	return n, methods
}

func (a *attempts) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (a *attempts) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (a *attempts) HandleConn(context.Context, stats.ConnStats) {}
func (a *attempts) HandleRPC(_ context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.OutHeader); ok && h.Client && h.RemoteAddr != nil {
		a.mu.Lock()
		if a.n != nil {
			a.n[h.RemoteAddr.String()+" "+h.FullMethod[strings.LastIndexByte(h.FullMethod, '/')+1:]]++
		}
		a.mu.Unlock()
	}
}

// directStatus is what a node says of itself, bounded.
func directStatus(n *node) (*v1.NodeStatusResponse, error) {
	ctx, cancel := context.WithTimeout(client.Direct(context.Background()), 2*time.Second)
	defer cancel()
	return n.conn.Cluster.NodeStatus(ctx, &v1.NodeStatusRequest{})
}

// TestLeaderPartitioned: three controller processes whose Raft traffic
// goes through proxies of the test's (each node advertises its proxy with
// --raft-advertise-addr), while two clients with every gRPC address loop
// over submit, consistent list and cancel. The proxies cut the leader off
// from both other nodes, both ways, and leave the clients' gRPC to it
// alone. The other two elect a leader; the old one steps down, refuses a
// write and a consistent read of its own (a write it took into its log
// just before it noticed never commits), and the clients' calls to it
// fail over. No command fails, every job is listed by the next read, none
// is made twice. Healed, the old leader follows the new one with the same
// catalog, and after a restart with only --data-dir it still advertises
// its proxy.
func TestLeaderPartitioned(t *testing.T) {
	start := time.Now()
	step := func(what string) { t.Logf("%6.2fs %s", time.Since(start).Seconds(), what) }
	c1, c2, c3 := newNode(t, "c1"), newNode(t, "c2"), newNode(t, "c3")
	all := []*node{c1, c2, c3}
	rn := newRaftNet(t, all)
	c1.start(true, "--bootstrap", "--raft-advertise-addr", rn.addr(c1))
	c2.start(true, "--join", c1.grpcAddr, "--raft-advertise-addr", rn.addr(c2))
	// c3 also publishes its gRPC address under another name
	// (--grpc-advertise-addr), which the clients learn from the members.
	published := map[*node]string{c1: c1.grpcAddr, c2: c2.grpcAddr, c3: "localhost:" + c3.grpcAddr[strings.LastIndexByte(c3.grpcAddr, ':')+1:]}
	c3.start(true, "--join", c1.grpcAddr+","+c2.grpcAddr, "--raft-advertise-addr", rn.addr(c3), "--grpc-advertise-addr", published[c3])
	leader := leaderOf(t, all, 3, 10*time.Second)
	byID := map[string]*node{}
	for _, n := range all {
		byID[n.id] = n
	}
	// Every member is known by its proxy, and Raft flows through them.
	st, err := c2.conn.Control.ClusterStatus(t.Context(), &v1.ClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.GetMembers() {
		if n := byID[m.GetId()]; n == nil || m.GetRaftAddress() != rn.addr(n) || m.GetAddress() != published[n] {
			t.Fatalf("member %v: want raft address %s (its proxy), gRPC %s", m, rn.addr(n), published[n])
		}
	}
	for _, n := range all {
		if st := n.nodeStatus(t); st.GetRaftAddress() != rn.addr(n) || st.GetAddress() != published[n] {
			t.Fatalf("%s says its addresses are %s and raft %s, want %s and its proxy %s", n.id, st.GetAddress(), st.GetRaftAddress(), published[n], rn.addr(n))
		}
		if n == leader {
			continue
		}
		if fwd, _ := rn.bytes(leader, n); fwd == 0 {
			t.Fatalf("no Raft bytes from the leader %s to %s went through the proxies", leader.id, n.id)
		}
	}
	for _, in := range []string{"db1", "db2", "db3"} {
		a, err := connectAgent(t, addrsOf(all...), in)
		if err != nil {
			t.Fatal(err)
		}
		a.close() // jobs stay pending: cheap entries
	}
	step("cluster of three behind Raft proxies, leader " + leader.id)

	opts := leader.clientOpts()
	opts.AttemptTimeout = testenv.Wait(2 * time.Second)
	ctx := t.Context()
	// Both clients know every address and call the leader first: w1 as
	// the CLI dials, w2 with the leader's address first in its list.
	sent := [2]*attempts{{}, {}}
	opts.DialOptions = []grpc.DialOption{grpc.WithStatsHandler(sent[0])}
	conn1, err := client.DialLeader(ctx, addrsOf(all...), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn1.Close() }()
	first := append([]string{leader.grpcAddr}, addrsOf(slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n == leader })...)...)
	opts.DialOptions = []grpc.DialOption{grpc.WithStatsHandler(sent[1])}
	conn2, err := client.DialAny(ctx, first, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn2.Close() }()
	w1 := &writer{name: "w1 (dialled as the CLI)", conn: conn1, instance: "db1"}
	w2 := &writer{name: "w2 (leader first)", conn: conn2, instance: "db2"}
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range []*writer{w1, w2} {
		wg.Go(func() { w.run(wctx, testenv.Wait(15*time.Second)) })
	}
	defer func() { stopWriters(); wg.Wait() }()
	progressed(t, "writers running", 3, w1, w2)
	step("writers running")

	// Cut the leader off from both peers.
	old := leader
	live := slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n == old })
	// Calls sent to the old leader itself (Direct: no retry elsewhere), a
	// write and a consistent read at once, each must be refused
	// (Unavailable), never answered: the write may go into the old
	// leader's log, but no quorum hears of it.
	callOld := func(when, key string) {
		t.Helper()
		var errs [2]error
		var took [2]time.Duration
		var cw sync.WaitGroup
		for i, do := range []func(context.Context) error{
			func(ctx context.Context) error {
				_, err := old.conn.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "db3", Engine: "logical", IdempotencyKey: key})
				return err
			},
			func(ctx context.Context) error {
				_, err := old.conn.Control.ListJobs(ctx, &v1.ListJobsRequest{Instance: "db1"})
				return err
			},
		} {
			cw.Go(func() {
				ctx, cancel := context.WithTimeout(client.Direct(ctx), testenv.Wait(8*time.Second))
				defer cancel()
				t0 := time.Now()
				errs[i] = do(ctx)
				took[i] = time.Since(t0)
			})
		}
		cw.Wait()
		for i, what := range []string{"a write", "a consistent read"} {
			if status.Code(errs[i]) != codes.Unavailable {
				t.Fatalf("%s on %s %s: %v, want Unavailable", what, when, old.id, errs[i])
			}
			step(fmt.Sprintf("%s on %s %s refused after %s: %s", what, when, old.id, took[i].Round(time.Millisecond), status.Convert(errs[i]).Message()))
		}
	}

	before, err := directStatus(old)
	if err != nil {
		t.Fatal(err)
	}
	rn.isolate(old)
	cutAt := time.Now()
	for _, a := range sent {
		a.reset()
	}
	stepped := make(chan time.Duration, 1)
	go func() {
		for time.Since(cutAt) < testenv.Wait(10*time.Second) {
			if st, err := directStatus(old); err == nil && st.GetState() != v1.MemberState_MEMBER_STATE_LEADER {
				stepped <- time.Since(cutAt)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		close(stepped)
	}()
	firstKey := "sent-to-the-cut-off-leader"
	callOld("the cut-off leader", firstKey)
	down, ok := <-stepped
	if !ok {
		t.Fatalf("%s still says it leads 10 s after it was cut off", old.id)
	}
	leader = leaderOf(t, live, 3, 10*time.Second)
	step(fmt.Sprintf("%s stepped down %s after the cut; new leader %s after %s", old.id, down.Round(time.Millisecond), leader.id, time.Since(cutAt).Round(time.Millisecond)))
	callOld("the deposed leader", "sent-to-the-deposed-leader")
	dctx, cancel := context.WithTimeout(client.Direct(ctx), testenv.Wait(5*time.Second))
	sr, err := old.conn.Control.ListJobs(dctx, &v1.ListJobsRequest{Instance: "db1", Stale: true})
	cancel()
	if err != nil || !sr.GetRead().GetStale() || sr.GetRead().GetNodeId() != old.id {
		t.Fatalf("a stale read on the deposed leader: %v, %v", sr.GetRead(), err)
	}

	progressed(t, "writes with the leader cut off", 3, w1, w2)
	// The clients did call the deposed leader (the address that answered
	// them last) and went on elsewhere.
	for i, w := range []*writer{w1, w2} {
		n, methods := sent[i].to(old.grpcAddr)
		if n == 0 {
			t.Errorf("%s sent nothing to the deposed leader %s after the cut: its failover was not tested", w.name, old.id)
		}
		step(fmt.Sprintf("%s: %d attempts at the deposed leader after the cut (%s)", w.name, n, strings.Join(methods, ", ")))
	}
	for _, n := range live {
		if _, lost := rn.bytes(old, n); lost == 0 {
			t.Errorf("nothing %s sent to %s was swallowed: the cut was not tested", old.id, n.id)
		}
		if _, lost := rn.bytes(n, old); lost == 0 {
			t.Errorf("nothing %s sent to %s was swallowed: the cut was not tested", n.id, old.id)
		}
	}
	if fwd, _ := rn.bytes(leader, live[slices.IndexFunc(live, func(n *node) bool { return n != leader })]); fwd == 0 {
		t.Errorf("the new leader's Raft traffic did not go through the proxies")
	}
	step("writers on with the leader cut off")

	// Cut off, the old leader campaigned only in pre-votes, which raise no
	// term: its return cannot depose the new leader with a higher term.
	if st, err := directStatus(old); err != nil || st.GetTerm() != before.GetTerm() {
		t.Errorf("the cut-off %s went from term %d to %v (%v): its return would force an election", old.id, before.GetTerm(), st.GetTerm(), err)
	}

	// Heal: the old leader follows the new one.
	rn.heal()
	healed := time.Now()
	follows := func(what string) {
		t.Helper()
		testenv.WaitFor(t, what, 15*time.Second, func() error {
			st, err := directStatus(old)
			if err != nil {
				return err
			}
			if st.GetState() != v1.MemberState_MEMBER_STATE_FOLLOWER || st.GetLeaderId() == "" || st.GetLeaderId() == old.id {
				return fmt.Errorf("%s is %s and knows %q as leader (term %d)", old.id, st.GetState(), st.GetLeaderId(), st.GetTerm())
			}
			return nil
		})
		// On this loaded 2-core machine with a 150 ms leader lease, the
		// leader may step down for a slow heartbeat now and then; that
		// is no failure here, a deposed leader's return raising the term
		// (checked above) would be.
		if l := leaderOf(t, all, 3, 10*time.Second); l != leader {
			t.Logf("the leadership moved from %s to %s", leader.id, l.id)
			leader = l
		}
	}
	follows(old.id + " to follow a leader")
	step(fmt.Sprintf("healed: %s follows %s after %s", old.id, leader.id, time.Since(healed).Round(time.Millisecond)))
	progressed(t, "writes after healing", 2, w1, w2)
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
		l, err := conn1.Control.ListJobs(ctx, &v1.ListJobsRequest{Instance: w.instance, PageSize: 10000})
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
	// The writes sent to the deposed leader never took effect: db3 has no
	// job, and the first key, sent again, makes a new one.
	l, err := conn1.Control.ListJobs(ctx, &v1.ListJobsRequest{Instance: "db3"})
	if err != nil || len(l.GetJobs()) != 0 {
		t.Fatalf("jobs of db3 after the refused writes: %v, %v; want none", l.GetJobs(), err)
	}
	again, err := conn2.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "db3", Engine: "logical", IdempotencyKey: firstKey})
	if err != nil || again.GetReplayed() {
		t.Fatalf("the refused write's key sent again: %v, %v; want a new job, not a replay", again, err)
	}

	// Every node holds the same catalog.
	sameCatalogs := func(what string) {
		t.Helper()
		testenv.WaitFor(t, what, 15*time.Second, func() error {
			want, err := catalogOn(leader)
			if err != nil {
				return err
			}
			for _, n := range all {
				got, err := catalogOn(n)
				if err != nil {
					return fmt.Errorf("%s: %w", n.id, err)
				}
				if !slices.Equal(got, want) {
					return fmt.Errorf("%s holds %d jobs, the leader %s %d", n.id, len(got), leader.id, len(want))
				}
			}
			return nil
		})
	}
	sameCatalogs("the three catalogs to agree")
	step("the three catalogs agree")

	// Restarted with --data-dir only, the old leader still advertises its
	// proxy (node.json remembers it) and rejoins through it.
	old.Kill()
	old.start(false)
	testenv.WaitFor(t, old.id+" to serve again", 10*time.Second, func() error {
		st, err := directStatus(old)
		if err != nil {
			return err
		}
		if st.GetRaftAddress() != rn.addr(old) {
			t.Fatalf("restarted %s advertises %s, want its proxy %s", old.id, st.GetRaftAddress(), rn.addr(old))
		}
		return nil
	})
	follows(old.id + " to follow a leader after its restart")
	sameCatalogs(old.id + " to catch up after its restart")
	rn.mu.Lock()
	orphans := rn.orphans
	rn.mu.Unlock()
	if orphans != 0 {
		t.Errorf("%d Raft connections came from no node", orphans)
	}
	if !strings.Contains(old.Log(), "raft_advertised="+rn.addr(old)) {
		t.Errorf("%s's log does not name its advertised address", old.id)
	}
	step(old.id + " restarted with --data-dir only: advertises its proxy, caught up")
}

package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// handOffElection is the Raft heartbeat and election timeout of the
// hand-off test: long enough that a leader found by an election (at least
// one timeout after the old one went quiet) is told apart from one handed
// the leadership (a round trip).
const handOffElection = 1500 * time.Millisecond

// startSlow starts n like start, with handOffElection as its Raft timeouts
// (after the package's timing flags, so they win).
func (n *node) startSlow(first bool, args ...string) {
	n.t.Helper()
	full := []string{"controller", "--data-dir", n.dataDir}
	if first {
		full = append(full, "--node-id", n.id, "--grpc-addr", n.grpcAddr, "--raft-addr", n.raftAddr)
	}
	slow := []string{"--raft-heartbeat-timeout", handOffElection.String(), "--raft-election-timeout", handOffElection.String(),
		"--raft-leader-lease-timeout", (handOffElection / 2).String()}
	n.Args = slices.Concat(full, args, timing, slow, n.tls)
	n.Start()
	testenv.WaitFor(n.t, n.id+" to serve gRPC", 10*time.Second, func() error {
		if n.Exited() {
			return fmt.Errorf("%s exited:\n%s", n.id, n.LogTail())
		}
		c, err := client.DialAny(n.t.Context(), []string{n.grpcAddr}, withProbe(n.clientOpts(), time.Second))
		if err == nil {
			n.conn = c
		}
		return err
	})
}

// newLeaderAfter polls nodes until one of them, other than old, says it
// leads, and returns it with the time that took.
func newLeaderAfter(t *testing.T, nodes []*node, old string, since time.Time, d time.Duration) (*node, time.Duration) {
	t.Helper()
	deadline := since.Add(d)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			st, err := n.conn.Cluster.NodeStatus(ctx, &v1.NodeStatusRequest{})
			cancel()
			if err == nil && st.GetState() == v1.MemberState_MEMBER_STATE_LEADER && n.id != old {
				return n, time.Since(since)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no node other than %s led within %s", old, d)
	return nil, 0
}

// TestLeadershipHandOff runs three controller processes with 1.5 s Raft
// timeouts: `tidemark cluster transfer-leadership NODE` moves the
// leadership to NODE, and SIGTERM to the leader makes another node lead
// well within an election timeout (the stopping leader hands it off).
func TestLeadershipHandOff(t *testing.T) {
	c1, c2, c3 := newNode(t, "c1"), newNode(t, "c2"), newNode(t, "c3")
	c1.startSlow(true, "--bootstrap")
	c2.startSlow(true, "--join", c1.grpcAddr)
	c3.startSlow(true, "--join", c1.grpcAddr+","+c2.grpcAddr)
	all := []*node{c1, c2, c3}
	leader := leaderOf(t, all, 3, 20*time.Second)
	admin := testCA(t).Files(t, testenv.Admin())
	cli := func(args ...string) (string, string, int) {
		return run(t, 20*time.Second, append(args, "--controller", strings.Join(addrsOf(all...), ","), "--credentials", filepath.Dir(admin.CA))...)
	}

	// To a named node, through the CLI.
	target := c2
	if leader == c2 {
		target = c3
	}
	start := time.Now()
	out, errOut, code := cli("cluster", "transfer-leadership", target.id, "-o", "json")
	if code != 0 {
		t.Fatalf("transfer-leadership %s: exit %d: %s", target.id, code, errOut)
	}
	var tr map[string]any
	if err := json.Unmarshal([]byte(out), &tr); err != nil || tr["leader"] != target.id || tr["previous_leader"] != leader.id {
		t.Fatalf("transfer-leadership -o json: %q %v", out, err)
	}
	t.Logf("transfer-leadership %s -> %s: %s (CLI process included)", leader.id, target.id, time.Since(start).Round(time.Millisecond))
	if l := leaderOf(t, all, 3, 10*time.Second); l != target {
		t.Fatalf("leader after the transfer: %s, want %s", l.id, target.id)
	}
	// Refusals name what was wrong.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cluster", "transfer-leadership", "c9"}, `controller node "c9" is not a voting member`},
		{[]string{"cluster", "transfer-leadership", target.id}, "node " + target.id + " already leads"},
	} {
		if _, errOut, code := cli(tc.args...); code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("tidemark %v: exit %d, %q; want %q", tc.args, code, errOut, tc.want)
		}
	}

	// SIGTERM to the leader: another node leads within a round trip or
	// two, not after an election timeout.
	leader = target
	others := slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n == leader })
	start = time.Now()
	leader.Signal(syscall.SIGTERM)
	next, gap := newLeaderAfter(t, others, leader.id, start, 10*handOffElection)
	t.Logf("SIGTERM to leader %s: %s leads after %s (election timeout %s)", leader.id, next.id, gap.Round(time.Millisecond), handOffElection)
	if gap >= handOffElection {
		t.Errorf("a new leader after %s: no faster than an election (timeout %s); the stopping leader did not hand off", gap, handOffElection)
	}
	select {
	case <-leader.Done():
	case <-time.After(testenv.Wait(15 * time.Second)):
		t.Fatalf("%s did not exit after SIGTERM", leader.id)
	}
	if !strings.Contains(leader.Log(), "leadership handed off before stopping") {
		t.Errorf("%s's log does not say it handed off:\n%s", leader.id, leader.LogTail())
	}
	// The remaining two keep a working cluster: leadership moves on once
	// more, to the other live node.
	if l := leaderOf(t, others, 3, 10*time.Second); l != next {
		t.Errorf("leader after the hand-off: %s, want %s", l.id, next.id)
	}
	last := others[0]
	if last == next {
		last = others[1]
	}
	if _, errOut, code := cli("cluster", "transfer-leadership", last.id); code != 0 {
		t.Errorf("transfer-leadership on the two left: exit %d: %s", code, errOut)
	}
}

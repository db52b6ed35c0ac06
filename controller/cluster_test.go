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

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// leaderOf waits until every node in nodes answers ClusterStatus with the
// same leader, which is one of them and says it leads, and all members
// reachable as expected; it returns the leader.
func leaderOf(t *testing.T, nodes []*node, members int, d time.Duration) *node {
	t.Helper()
	var leader *node
	testenv.WaitFor(t, "an agreed leader", d, func() error {
		leader = nil
		var id string
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := n.conn.Control.ClusterStatus(ctx, &v1.ClusterStatusRequest{})
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", n.id, err)
			}
			if st.GetLeaderId() == "" || (id != "" && st.GetLeaderId() != id) {
				return fmt.Errorf("%s sees leader %q, others %q", n.id, st.GetLeaderId(), id)
			}
			id = st.GetLeaderId()
			if len(st.GetMembers()) != members {
				return fmt.Errorf("%s sees %d members, want %d", n.id, len(st.GetMembers()), members)
			}
			for _, m := range st.GetMembers() {
				if !m.GetVoter() || m.GetAddress() == "" {
					return fmt.Errorf("%s sees member %v", n.id, m)
				}
			}
		}
		for _, n := range nodes {
			if n.id == id {
				leader = n
			}
		}
		if leader == nil {
			return fmt.Errorf("leader %s is not among the live nodes", id)
		}
		st, err := leader.conn.Cluster.NodeStatus(context.Background(), &v1.NodeStatusRequest{})
		if err != nil || st.GetState() != v1.MemberState_MEMBER_STATE_LEADER {
			return fmt.Errorf("leader %s says %v: %w", id, st.GetState(), err)
		}
		return nil
	})
	return leader
}

func addrsOf(nodes ...*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.grpcAddr)
	}
	return out
}

// runBackup submits a backup through via and has agent a complete it.
func runBackup(t *testing.T, via *node, a *fakeAgent, instance string) *v1.Job {
	t.Helper()
	job := submitBackup(t, via.conn, instance)
	asg := a.assignment(10 * time.Second)
	if asg.GetJob().GetId() != job.GetId() {
		t.Fatalf("assigned %s, submitted %s", asg.GetJob().GetId(), job.GetId())
	}
	a.progress(asg, 10)
	if ans := a.succeed(asg, asg.GetLease()); ans.GetAck() == nil {
		t.Fatalf("result of %s answered %v", job.GetId(), ans)
	}
	a.setRunning(job.GetId(), nil)
	return job
}

// jobsOn lists the jobs in a node's local catalog (a stale read),
// "id=state" sorted.
func jobsOn(n *node) ([]string, error) {
	r, err := n.conn.Control.ListJobs(context.Background(), &v1.ListJobsRequest{Stale: true})
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

// TestCluster runs three controller processes on loopback: election and
// agreement, forwarding, kill -9 of the leader, a restart that catches up
// from a snapshot and the log, and a node cut off from the others.
func TestCluster(t *testing.T) {
	start := time.Now()
	step := func(what string) { t.Logf("%6.2fs %s", time.Since(start).Seconds(), what) }
	c1, c2, c3 := newNode(t, "c1"), newNode(t, "c2"), newNode(t, "c3")
	c1.start(true, "--bootstrap")
	c2.start(true, "--join", c1.grpcAddr)
	c3.start(true, "--join", c1.grpcAddr+","+c2.grpcAddr)
	all := []*node{c1, c2, c3}
	leader := leaderOf(t, all, 3, 10*time.Second)
	step("leader " + leader.id + " agreed by all three")

	followers := slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n == leader })
	t.Run("StatusCLI", func(t *testing.T) {
		admin := testCA(t).Files(t, testenv.Admin())
		// A dead address first: the CLI tries the next one.
		out, errOut, code := run(t, 20*time.Second, "cluster", "status", "--controller", testenv.FreeAddr(t)+","+followers[0].grpcAddr, "-o", "json", "--tls-ca", admin.CA, "--tls-cert", admin.Cert, "--tls-key", admin.Key)
		if code != 0 {
			t.Fatalf("cluster status: exit %d: %s", code, errOut)
		}
		var st struct {
			Leader  string `json:"leader"`
			Members []struct {
				ID, State string
			} `json:"members"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if st.Leader != leader.id || len(st.Members) != 3 {
			t.Fatalf("cluster status JSON %s", out)
		}
		out, _, code = run(t, 20*time.Second, "cluster", "status", "--controller", followers[1].grpcAddr, "--credentials", filepath.Dir(admin.CA))
		if code != 0 || !strings.Contains(out, "leader "+leader.id) || strings.Count(out, "follower") != 2 {
			t.Fatalf("cluster status text (exit %d):\n%s", code, out)
		}
	})

	// Writes through a follower: the agent is sent to the leader, the
	// submission is forwarded to it.
	a, err := connectAgent(t, []string{followers[0].grpcAddr}, "db1")
	if err != nil {
		t.Fatal(err)
	}
	if a.addr != leader.grpcAddr {
		t.Fatalf("agent session on %s, want the leader %s", a.addr, leader.grpcAddr)
	}
	// Watch through the other follower: it proxies the leader's stream,
	// progress included.
	watched := make(chan []*v1.Job, 1)
	job1 := submitBackup(t, followers[1].conn, "db1")
	go func() {
		var seen []*v1.Job
		defer func() { watched <- seen }()
		w, err := followers[0].conn.Control.WatchJob(context.Background(), &v1.WatchJobRequest{Id: job1.GetId()})
		if err != nil {
			return
		}
		for {
			m, err := w.Recv()
			if err != nil {
				return
			}
			seen = append(seen, m.GetJob())
		}
	}()
	asg := a.assignment(10 * time.Second)
	a.progress(asg, 10)
	testenv.WaitFor(t, "progress on the leader", 5*time.Second, func() error {
		if getJob(t, leader.conn, job1.GetId()).GetProgress().GetBytesDone() != 10 {
			return fmt.Errorf("no progress yet")
		}
		return nil
	})
	if ans := a.succeed(asg, asg.GetLease()); ans.GetAck() == nil {
		t.Fatalf("result answered %v", ans)
	}
	a.setRunning(job1.GetId(), nil)
	seen := <-watched
	if len(seen) < 2 || seen[len(seen)-1].GetState() != v1.JobState_JOB_STATE_SUCCEEDED ||
		!slices.ContainsFunc(seen, func(j *v1.Job) bool { return j.GetProgress().GetBytesDone() == 10 }) {
		t.Fatalf("watch through a follower saw %v", seen)
	}
	ags, err := followers[1].conn.Control.ListAgents(context.Background(), &v1.ListAgentsRequest{})
	if err != nil || len(ags.GetAgents()) != 1 || !ags.GetAgents()[0].GetConnected() {
		t.Fatalf("ListAgents on a follower: %v, %v", ags, err)
	}
	r, err := followers[0].conn.Control.GetJob(context.Background(), &v1.GetJobRequest{Id: job1.GetId(), Consistent: true})
	if err != nil || r.GetJob().GetState() != v1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("consistent read on a follower: %v, %v", r, err)
	}
	step("backup through a follower recorded")

	// An instance whose agent is gone: jobs for it stay pending, which
	// makes cheap log entries.
	b, err := connectAgent(t, addrsOf(all...), "db2")
	if err != nil {
		t.Fatal(err)
	}
	b.close()

	// kill -9 the leader.
	killed := leader
	killed.Kill()
	killedAt := time.Now()
	a.close()
	live := slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n == killed })
	leader = leaderOf(t, live, 3, 10*time.Second)
	failover := time.Since(killedAt)
	step(fmt.Sprintf("kill -9 %s: new leader %s after %s", killed.id, leader.id, failover.Round(time.Millisecond)))
	if failover > testenv.Wait(5*time.Second) {
		t.Errorf("failover took %s", failover)
	}
	a, err = connectAgent(t, addrsOf(all...), "db1")
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	job2 := runBackup(t, live[0], a, "db1")
	if j := getJob(t, leader.conn, job1.GetId()); j.GetState() != v1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job before the failover is %v", j)
	}
	step("writes continue: " + job2.GetId())

	// While the old leader is down, enough entries for a snapshot that
	// truncates the log past where it stopped.
	for range 12 {
		j := submitBackup(t, live[1].conn, "db2")
		if _, err := live[0].conn.Control.CancelJob(context.Background(), &v1.CancelJobRequest{Id: j.GetId(), Reason: "filler"}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := leader.conn.Cluster.TakeSnapshot(context.Background(), &v1.TakeSnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	step(fmt.Sprintf("leader snapshot at index %d", snap.GetIndex()))

	killed.start(false) // same data dir, no flags
	want, err := jobsOn(leader)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, killed.id+" to catch up", 10*time.Second, func() error {
		got, err := jobsOn(killed)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("%d jobs, want %d", len(got), len(want))
		}
		return nil
	})
	st, err := killed.conn.Cluster.NodeStatus(context.Background(), &v1.NodeStatusRequest{})
	if err != nil || st.GetLastSnapshotIndex() == 0 {
		t.Fatalf("restarted node status %v, %v: no snapshot", st, err)
	}
	leader = leaderOf(t, all, 3, 10*time.Second)
	step(fmt.Sprintf("%s restarted and caught up (snapshot index %d, applied %d)", killed.id, st.GetLastSnapshotIndex(), st.GetAppliedIndex()))

	// Cut the leader off: stop the other two.
	cut := leader
	others := slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n == cut })
	for _, n := range others {
		n.Stop()
	}
	before := cut.nodeStatus(t)
	for i := range 2 {
		// Direct: this node's own answer, not the client's retries.
		ctx, cancel := context.WithTimeout(client.Direct(context.Background()), 8*time.Second)
		t0 := time.Now()
		_, err := cut.conn.Control.SubmitBackup(ctx, &v1.SubmitBackupRequest{Instance: "db2"})
		cancel()
		code := status.Code(err)
		if code != codes.Unavailable && code != codes.DeadlineExceeded {
			t.Fatalf("write %d on a cut-off node: %v", i, err)
		}
		t.Logf("write %d on cut-off %s refused after %s: %v", i, cut.id, time.Since(t0).Round(time.Millisecond), err)
		if i == 1 && (code != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "knows no leader")) {
			t.Fatalf("second write on a cut-off node: %v", err)
		}
	}
	// Nothing was committed while it was cut off. (The first write may
	// still commit later, under the next leader: a refused write's fate is
	// unknown in Raft, and the error says so.)
	if after := cut.nodeStatus(t); after.GetCommitIndex() != before.GetCommitIndex() {
		t.Fatalf("commit index moved from %d to %d on a cut-off node", before.GetCommitIndex(), after.GetCommitIndex())
	}
	for _, n := range others {
		n.Signal(syscall.SIGCONT)
	}
	leader = leaderOf(t, all, 3, 15*time.Second)
	runBackup(t, leader, reconnect(t, a, all), "db1")
	step("cut-off node refused writes; cluster recovered with leader " + leader.id)

	// Remove a follower through another follower, with the CLI.
	gone := slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return n == leader })
	admin := testCA(t).Files(t, testenv.Admin())
	out, errOut, code := run(t, 20*time.Second, "cluster", "remove-member", gone[0].id, "--controller", gone[1].grpcAddr, "-o", "json",
		"--tls-ca", admin.CA, "--tls-cert", admin.Cert, "--tls-key", admin.Key)
	var rm struct {
		Removed string `json:"removed"`
		Members []struct {
			ID string `json:"id"`
		} `json:"members"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rm) != nil || rm.Removed != gone[0].id || len(rm.Members) != 2 {
		t.Fatalf("cluster remove-member %s -o json: exit %d: %q %s", gone[0].id, code, out, errOut)
	}
	for _, m := range rm.Members {
		if m.ID == gone[0].id {
			t.Fatalf("cluster remove-member %s -o json: still a member: %q", gone[0].id, out)
		}
	}
	gone[0].Kill()
	leaderOf(t, []*node{leader, gone[1]}, 2, 10*time.Second)
	step("removed " + gone[0].id)
}

// reconnect replaces an agent whose session may have died with the
// leadership it was on.
func reconnect(t *testing.T, a *fakeAgent, all []*node) *fakeAgent {
	t.Helper()
	a.close()
	var n *fakeAgent
	testenv.WaitFor(t, "the agent to register again", 10*time.Second, func() error {
		var err error
		n, err = connectAgent(t, addrsOf(all...), a.name)
		return err
	})
	t.Cleanup(n.close)
	return n
}

func (n *node) nodeStatus(t *testing.T) *v1.NodeStatusResponse {
	t.Helper()
	st, err := n.conn.Cluster.NodeStatus(context.Background(), &v1.NodeStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

package controller_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// startThree starts three controller processes and returns them with the
// leader they agree on.
func startThree(t *testing.T) ([]*node, *node) {
	t.Helper()
	c1, c2, c3 := newNode(t, "c1"), newNode(t, "c2"), newNode(t, "c3")
	c1.start(true, "--bootstrap")
	c2.start(true, "--join", c1.grpcAddr)
	c3.start(true, "--join", c1.grpcAddr+","+c2.grpcAddr)
	all := []*node{c1, c2, c3}
	return all, leaderOf(t, all, 3, 15*time.Second)
}

func others(all []*node, not ...*node) []*node {
	return slices.DeleteFunc(slices.Clone(all), func(n *node) bool { return slices.Contains(not, n) })
}

// adminCLI is the CLI's credential flag for an admin.
func adminCLI(t *testing.T) []string {
	return []string{"--credentials", filepath.Dir(testCA(t).Files(t, testenv.Admin()).CA)}
}

// parkedInstance registers an instance whose agent then goes away, so
// that jobs submitted for it stay pending: cheap writes.
func parkedInstance(t *testing.T, all []*node, name string) {
	t.Helper()
	a, err := connectAgent(t, addrsOf(all...), name)
	if err != nil {
		t.Fatal(err)
	}
	a.close()
}

// TestReadYourWrites: a write acknowledged through one follower is seen by
// the very next read through the other follower (gRPC, no flags), and by
// the CLI pointed at a follower only, every time; and by the CLI's next read
// after the leader is SIGSTOPped, answered by the next leader.
func TestReadYourWrites(t *testing.T) {
	all, leader := startThree(t)
	fs := others(all, leader)
	parkedInstance(t, all, "db2")

	// gRPC: the read is forwarded by the follower to the leader, which
	// confirms its leadership and has applied the submission.
	rounds := 50
	if testing.Short() {
		rounds = 20
	}
	for i := range rounds {
		j := submitBackup(t, fs[0].conn, "db2")
		r, err := fs[1].conn.Control.ListJobs(context.Background(), &v1.ListJobsRequest{Instance: "db2"})
		if err != nil {
			t.Fatalf("round %d: ListJobs through %s: %v", i, fs[1].id, err)
		}
		if !slices.ContainsFunc(r.GetJobs(), func(x *v1.Job) bool { return x.GetId() == j.GetId() }) {
			t.Fatalf("round %d: job %s, submitted through %s, not listed by %s (read %v)", i, j.GetId(), fs[0].id, fs[1].id, r.GetRead())
		}
		if rd := r.GetRead(); rd.GetStale() || rd.GetNodeId() != leader.id {
			t.Fatalf("round %d: consistent read answered with %v, want the leader %s", i, rd, leader.id)
		}
		g, err := fs[1].conn.Control.GetJob(context.Background(), &v1.GetJobRequest{Id: j.GetId()})
		if err != nil || g.GetJob().GetState() != v1.JobState_JOB_STATE_PENDING {
			t.Fatalf("round %d: GetJob through %s: %v, %v", i, fs[1].id, g, err)
		}
		if _, err := fs[1].conn.Control.CancelJob(context.Background(), &v1.CancelJobRequest{Id: j.GetId(), Reason: "round"}); err != nil {
			t.Fatal(err)
		}
		g, err = fs[0].conn.Control.GetJob(context.Background(), &v1.GetJobRequest{Id: j.GetId()})
		if err != nil || g.GetJob().GetState() != v1.JobState_JOB_STATE_CANCELLED {
			t.Fatalf("round %d: GetJob through %s after the cancel: %v, %v", i, fs[0].id, g, err)
		}
	}

	// The CLI, given only a follower's address: submit, then list.
	creds := adminCLI(t)
	cliRounds := 20
	if testing.Short() {
		cliRounds = 8
	}
	for i := range cliRounds {
		out, errOut, code := run(t, 30*time.Second, append([]string{"backup", "--instance", "db2", "--controller", fs[i%2].grpcAddr}, creds...)...)
		if code != 0 {
			t.Fatalf("round %d: backup: exit %d: %s", i, code, errOut)
		}
		id := strings.TrimSpace(out)
		out, errOut, code = run(t, 30*time.Second, append([]string{"jobs", "--instance", "db2", "-o", "json", "--controller", fs[i%2].grpcAddr}, creds...)...)
		if code != 0 {
			t.Fatalf("round %d: jobs: exit %d: %s", i, code, errOut)
		}
		var jobs []struct{ ID, State string }
		if err := json.Unmarshal([]byte(out), &jobs); err != nil {
			t.Fatalf("round %d: %v: %s", i, err, out)
		}
		if !slices.ContainsFunc(jobs, func(j struct{ ID, State string }) bool { return j.ID == id && j.State == "pending" }) {
			t.Fatalf("round %d: job %s not listed as pending by the next read:\n%s", i, id, out)
		}
		if errOut != "" {
			t.Fatalf("round %d: a consistent read wrote on stderr: %q", i, errOut)
		}
		if _, err := leader.conn.Control.CancelJob(context.Background(), &v1.CancelJobRequest{Id: id, Reason: "round"}); err != nil {
			t.Fatal(err)
		}
	}

	// A write, then the leader SIGSTOPped (its connections stay open and
	// silent): the next read, given every address, waits out the election
	// and is answered by the new leader, with the write.
	j := submitBackup(t, fs[0].conn, "db2")
	leader.Stop()
	t.Cleanup(func() { leader.Signal(syscall.SIGCONT) })
	t0 := time.Now()
	out, errOut, code := run(t, 30*time.Second, append([]string{"jobs", "--instance", "db2", "-o", "json", "--controller", strings.Join(addrsOf(all...), ",")}, creds...)...)
	if code != 0 || !strings.Contains(out, j.GetId()) {
		t.Fatalf("read after the leader was stopped: exit %d after %s, stderr %q, stdout:\n%s", code, time.Since(t0), errOut, out)
	}
	t.Logf("read after the leader was stopped answered in %s", time.Since(t0).Round(time.Millisecond))
}

// TestStaleAndNoQuorumReads cuts a follower off (its two peers SIGSTOPped):
// a --stale read still answers from its catalog and says it is stale and
// how long ago it heard from the leader; a consistent read fails within
// --timeout with an error naming the node, and prints no answer.
func TestStaleAndNoQuorumReads(t *testing.T) {
	all, leader := startThree(t)
	cut := others(all, leader)[0]
	parkedInstance(t, all, "db2")
	j := submitBackup(t, leader.conn, "db2")
	testenv.WaitFor(t, cut.id+" to apply the job", 5*time.Second, func() error {
		r, err := cut.conn.Control.GetJob(context.Background(), &v1.GetJobRequest{Id: j.GetId(), Stale: true})
		if err != nil {
			return err
		}
		if rd := r.GetRead(); !rd.GetStale() || rd.GetNodeId() != cut.id || rd.GetLeaderId() != leader.id || rd.GetSinceLeaderContact() == nil {
			return fmt.Errorf("stale read answered with %v", rd)
		}
		return nil
	})

	stopped := others(all, cut)
	for _, n := range stopped {
		n.Stop()
	}
	t.Cleanup(func() {
		for _, n := range stopped {
			n.Signal(syscall.SIGCONT)
		}
	})
	time.Sleep(1500 * time.Millisecond)
	creds := adminCLI(t)

	out, errOut, code := run(t, 30*time.Second, append([]string{"jobs", "--stale", "--controller", cut.grpcAddr}, creds...)...)
	if code != 0 || !strings.Contains(out, j.GetId()) {
		t.Fatalf("stale read of a cut-off node: exit %d, stdout:\n%s\nstderr: %s", code, out, errOut)
	}
	if !strings.Contains(errOut, "stale read from node "+cut.id) || !strings.Contains(errOut, "last heard from") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("stale read's note on stderr: %q", errOut)
	}
	out, errOut, code = run(t, 30*time.Second, append([]string{"jobs", "--stale", "-o", "json", "--controller", cut.grpcAddr}, creds...)...)
	var note struct {
		Read struct {
			NodeID  string   `json:"node_id"`
			Stale   bool     `json:"stale"`
			Applied uint64   `json:"applied_index"`
			Since   *float64 `json:"since_leader_contact_seconds"`
		} `json:"read"`
	}
	if code != 0 || json.Unmarshal([]byte(errOut), &note) != nil || !json.Valid([]byte(out)) {
		t.Fatalf("stale read -o json: exit %d, stdout %s, stderr %s", code, out, errOut)
	}
	if r := note.Read; r.NodeID != cut.id || !r.Stale || r.Applied == 0 || r.Since == nil || *r.Since < 1.5 {
		t.Fatalf("stale read's JSON note %s: want node %s, stale, an applied index and at least 1.5 s since the leader's last contact", errOut, cut.id)
	}

	t0 := time.Now()
	out, errOut, code = run(t, 30*time.Second, append([]string{"jobs", "--timeout", "3s", "--controller", cut.grpcAddr}, creds...)...)
	took := time.Since(t0)
	if code != 5 || out != "" || !strings.Contains(errOut, "no consistent read within 3s") || !strings.Contains(errOut, cut.id+" ("+cut.grpcAddr+")") ||
		!strings.Contains(errOut, "--stale") {
		t.Fatalf("consistent read of a node without quorum: exit %d after %s, stdout %q, stderr %q", code, took, out, errOut)
	}
	t.Logf("consistent read without quorum refused after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(errOut))
	// The API: Unavailable, never the local catalog.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := cut.conn.Control.ListJobs(ctx, &v1.ListJobsRequest{})
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("consistent ListJobs on a node without quorum: %v", err)
	}
}

// syncBuffer is a bytes.Buffer a process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestJobWatchAcrossLeaderChanges follows a running backup with `tidemark
// job watch` while the leader is killed -9 twice (each restarted
// afterwards, to keep a quorum), then SIGSTOPped (its connections stay
// open, silent); the agent reconnects to each new leader with its running
// attempt and finishes it after the third change. The
// watch neither ends early nor reports anything but the committed end: the
// backup id on stdout, exit 0.
func TestJobWatchAcrossLeaderChanges(t *testing.T) {
	all, leader := startThree(t)
	addrs := addrsOf(all...)
	a, err := connectAgent(t, addrs, "db1")
	if err != nil {
		t.Fatal(err)
	}
	job := submitBackup(t, leader.conn, "db1")
	asg := a.assignment(10 * time.Second)
	a.progress(asg, 10)
	waitJobState(t, leader.conn, job.GetId(), v1.JobState_JOB_STATE_RUNNING, 10*time.Second)

	watch := func(id string) (*exec.Cmd, *syncBuffer, *syncBuffer) {
		cmd := exec.Command(tidemarkBin, append([]string{"job", "watch", id, "--controller", strings.Join(addrs, ",")}, adminCLI(t)...)...)
		var out, errb syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		testenv.WaitFor(t, "the watch to see the job running", 15*time.Second, func() error {
			if !strings.Contains(errb.String(), "running") {
				return fmt.Errorf("stderr so far: %q", errb.String())
			}
			return nil
		})
		return cmd, &out, &errb
	}
	cmd, out, errb := watch(job.GetId())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()

	// changeLeader kill -9s (or SIGSTOPs) the leader, waits for another,
	// and brings the agent back with its running attempt.
	changeLeader := func(live []*node, stopOnly bool) *node {
		t.Helper()
		old := leaderOf(t, live, 3, 15*time.Second)
		if stopOnly {
			old.Stop()
			t.Cleanup(func() { old.Signal(syscall.SIGCONT) })
		} else {
			old.Kill()
		}
		a.close()
		// The new leader gives running attempts one lease (2 s here) from
		// its election to come back: reconnect as soon as it leads, to it
		// first (a follower may still hint the old one).
		nl, took := newLeaderAfter(t, others(live, old), old.id, time.Now(), 15*time.Second)
		t.Logf("leader %s %s; %s leads after %s", old.id, map[bool]string{true: "SIGSTOPped", false: "killed -9"}[stopOnly], nl.id, took.Round(time.Millisecond))
		a, err = connectAgent(t, []string{nl.grpcAddr}, "db1", &v1.RunningJob{JobId: job.GetId(), Lease: asg.GetLease()})
		if err != nil {
			t.Fatal(err)
		}
		a.setRunning(job.GetId(), asg.GetLease())
		select {
		case <-done:
			t.Fatalf("the watch ended after a leader change: stdout %q, stderr:\n%s", out.String(), errb.String())
		default:
		}
		return old
	}
	first := changeLeader(all, false)
	first.start(false)
	leaderOf(t, all, 3, 15*time.Second)
	second := changeLeader(all, false)
	second.start(false)
	leaderOf(t, all, 3, 15*time.Second)
	// A stopped leader keeps its connections open: the watch notices that
	// it no longer answers.
	changeLeader(all, true)
	defer a.close()
	a.progress(asg, 20)
	final := asg
	if ans := a.succeed(asg, asg.GetLease()); ans.GetAck() == nil {
		// The attempt's lease (2 s here) can run out across three
		// changes: the job is then pending again and the agent runs the
		// next attempt. The watch must report that one's end.
		t.Logf("the first attempt's result after the changes answered %v; running the next attempt", ans)
		final = a.assignment(15 * time.Second)
		if ans := a.succeed(final, final.GetLease()); ans.GetAck() == nil {
			t.Fatalf("the second attempt's result answered %v", ans)
		}
	}
	select {
	case <-done:
	case <-time.After(testenv.Wait(30 * time.Second)):
		t.Fatalf("the watch did not end after the job did; stderr:\n%s", errb.String())
	}
	bid := final.GetJob().GetBackup().GetBackupId()
	if code := cmd.ProcessState.ExitCode(); code != 0 || strings.TrimSpace(out.String()) != bid {
		t.Fatalf("job watch: exit %d, stdout %q (want the backup id %s), stderr:\n%s", code, out.String(), bid, errb.String())
	}
	if !strings.Contains(errb.String(), "watching again") || !strings.Contains(errb.String(), "succeeded") {
		t.Fatalf("job watch's stderr:\n%s", errb.String())
	}
	t.Logf("job watch's stderr:\n%s", errb.String())
}

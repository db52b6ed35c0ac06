package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// buildFakeBinlog builds testdata/fakebinlog: tidemark with a double of the
// binlog engine's streamer wired in (the engine is wired by cmd/tidemark).
func buildFakeBinlog(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tidemark-fakebinlog")
	build := exec.Command("go", "build", "-o", bin, "./e2e/testdata/fakebinlog")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the fake-binlog tidemark: %v\n%s", err, out)
	}
	return bin
}

// instanceBinlog is the "binlog" object of instance name in `tidemark
// instances -o json` (nil: no stream).
func (c *cluster) instanceBinlog(name string) map[string]any {
	c.t.Helper()
	list := decode[[]map[string]any](c.t, must(c.t, 10*time.Second, append([]string{"instances", "-o", "json"}, c.ctl()...)...))
	for _, in := range list {
		if in["name"] == name {
			b, _ := in["binlog"].(map[string]any)
			return b
		}
	}
	c.t.Fatalf("instance %s not listed: %v", name, list)
	return nil
}

// waitGTID waits until `tidemark instances` shows the stream of db durable
// at the server's current GTID position, and returns how long that took.
func (c *cluster) waitGTID(db *testenv.MariaDB, d time.Duration) time.Duration {
	c.t.Helper()
	var want string
	if err := db.DB(c.t).QueryRow("SELECT @@gtid_binlog_pos").Scan(&want); err != nil {
		c.t.Fatal(err)
	}
	start := time.Now()
	testenv.WaitFor(c.t, "instances to show the stream at "+want, d, func() error {
		b := c.instanceBinlog("db")
		if b == nil || b["gtid_position"] != want || b["rpo_seconds"] == nil {
			return fmt.Errorf("binlog %v", b)
		}
		return nil
	})
	return time.Since(start)
}

func runsStarted(agent *testenv.Child) int {
	return strings.Count(agent.Log(), "fakebinlog: run started")
}

// TestBinlogStreamProcesses runs a binlog stream job through three
// controller processes and two agent processes serving a `cluster` label
// group of two servers (with a streamer double that reports the real
// server's position as durable): the stream is one for the group and gets
// both servers; the watermark reaches `tidemark instances` within seconds of
// a commit, Raft commits it at most once per interval, a leader's death does
// not restart the stream (one run, same lease), an agent restart resumes it
// at once, and `binlog stop` ends it.
func TestBinlogStreamProcesses(t *testing.T) {
	fake := buildFakeBinlog(t)
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "binlog"})
	sql := db.DB(t)
	if _, err := sql.Exec("CREATE DATABASE shop"); err != nil {
		t.Fatal(err)
	}
	if _, err := sql.Exec("CREATE TABLE shop.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT)"); err != nil {
		t.Fatal(err)
	}
	insert := func() {
		t.Helper()
		if _, err := sql.Exec("INSERT INTO shop.t (v) VALUES (1)"); err != nil {
			t.Fatal(err)
		}
	}
	const commitEvery = time.Second
	c := startCluster(t, db, clusterOpts{extra: []string{"--watermark-commit-interval", commitEvery.String()}})
	// The agent again, as the binary with the streamer double.
	c.agent.Kill()
	testenv.WaitFor(t, "the killed agent's session to end", 10*time.Second, func() error {
		r := must(t, 10*time.Second, append([]string{"agents", "-o", "json"}, c.ctl()...)...)
		if strings.Contains(r.out, `"connected":true`) {
			return fmt.Errorf("agents: %s", r.out)
		}
		return nil
	})
	c.agent.Path = fake
	c.agent.Args = append(c.agent.Args, "--labels", "cluster=g1")
	c.agent.Start()
	// A second server of the group, on its own agent.
	db2 := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "binlog2"})
	a2 := newProc(t, "agent2", append([]string{"agent", "--controller", c.addrs, "--name", "db2", "--mysql", db2.DSN, "--repo", c.repo,
		"--labels", "cluster=g1", "--log-level", "debug"}, testenv.Args(c.ca.Files(t, testenv.Agent("db2")))...)...)
	a2.Path = fake
	a2.Start()
	testenv.WaitFor(t, "both agents to connect", 20*time.Second, func() error {
		r := must(t, 10*time.Second, append([]string{"agents", "-o", "json"}, c.ctl()...)...)
		if strings.Count(r.out, `"connected":true`) != 2 {
			return fmt.Errorf("agents: %s", r.out)
		}
		return nil
	})

	r := must(t, 20*time.Second, append([]string{"binlog", "start", "--instance", "db", "--flush", "200ms"}, c.ctl()...)...)
	id := lastLine(r.out)
	if r := tm(t, 20*time.Second, append([]string{"binlog", "start", "--instance", "db2"}, c.ctl()...)...); r.code == 0 || !strings.Contains(r.err, id) {
		t.Errorf("a second stream in the group: exit %d, stderr %q (want a refusal naming %s)", r.code, r.err, id)
	}
	j := c.waitState(id, 20*time.Second, v1.JobState_JOB_STATE_RUNNING)
	lease := j.GetLease()
	if l := c.agent.Log(); !strings.Contains(l, fmt.Sprintf("servers=127.0.0.1:%d,127.0.0.1:%d", db.Port, db2.Port)) {
		t.Errorf("the stream was not given both servers of the group (own first); agent log:\n%s", c.agent.LogTail())
	}
	insert()
	t.Logf("a commit reached `tidemark instances` in %s (flush 200ms, heartbeat 200ms)", c.waitGTID(db, 10*time.Second).Round(time.Millisecond))

	// Raft entries while the stream flushes five times a second: at most
	// one per commit interval (the leader's entries are all there is).
	leader := c.leader()
	st0, err := leader.conn.Control.ClusterStatus(t.Context(), &v1.ClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	const window = 4 * time.Second
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		insert()
	}
	st1, err := leader.conn.Control.ClusterStatus(t.Context(), &v1.ClusterStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	entries := st1.GetCommitIndex() - st0.GetCommitIndex()
	t.Logf("%s of streaming (40 commits, 20 flushes) took %d Raft entries (commit interval %s)", window, entries, commitEvery)
	if limit := uint64(window/commitEvery) + 2; entries > limit || entries < 2 {
		t.Errorf("%d Raft entries in %s: want between 2 and %d", entries, window, limit)
	}

	// The leader dies: the stream goes on, same run, same lease.
	runs := runsStarted(c.agent)
	leader.Kill()
	nl := c.leader()
	insert()
	t.Logf("%s killed; %s leads; the stream reached the new position %s later", leader.id, nl.id, c.waitGTID(db, 20*time.Second).Round(time.Millisecond))
	if j := c.job(id); j.GetState() != v1.JobState_JOB_STATE_RUNNING || j.GetAttempt() != 1 || j.GetLease().GetIndex() != lease.GetIndex() {
		t.Errorf("after the leader's death the job is %s, attempt %d, lease %v (was %v)", j.GetState(), j.GetAttempt(), j.GetLease(), lease)
	}
	if n := runsStarted(c.agent); n != runs {
		t.Errorf("the streamer was started %d times more across the leader's death", n-runs)
	}

	// The agent dies and comes back: the stream resumes at once, same
	// attempt (the controller sends the running job back on Register).
	c.agent.Kill()
	killed := time.Now()
	c.agent.Start()
	testenv.WaitFor(t, "the streamer to run again", 20*time.Second, func() error {
		if runsStarted(c.agent) != runs+1 {
			return fmt.Errorf("%d runs", runsStarted(c.agent))
		}
		return nil
	})
	t.Logf("stream resumed %s after the agent was killed", time.Since(killed).Round(time.Millisecond))
	insert()
	c.waitGTID(db, 10*time.Second)
	if j := c.job(id); j.GetAttempt() != 1 {
		t.Errorf("after the agent's restart: attempt %d, want 1 (the same attempt resumed)", j.GetAttempt())
	}

	st := decode[map[string]any](t, must(t, 10*time.Second, append([]string{"binlog", "status", "--instance", "db", "-o", "json"}, c.ctl()...)...))
	if srcs, _ := st["sources"].([]any); st["job_id"] != id || st["streaming"] != true || st["gtid_position"] == "" ||
		st["last_event_time"] == nil || st["rpo_seconds"] == nil || len(srcs) != 2 {
		t.Errorf("binlog status: %v", st)
	}
	// The group's other member shows the same stream.
	if b := c.instanceBinlog("db2"); b == nil || b["job_id"] != id {
		t.Errorf("db2's binlog in instances: %v", b)
	}
	text := must(t, 10*time.Second, append([]string{"instances"}, c.ctl()...)...).out
	if !strings.Contains(text, "RPO") {
		t.Errorf("instances has no RPO column:\n%s", text)
	}

	must(t, 20*time.Second, append([]string{"binlog", "stop", "--instance", "db"}, c.ctl()...)...)
	c.waitState(id, 10*time.Second, v1.JobState_JOB_STATE_CANCELLED)
	testenv.WaitFor(t, "the stream's run to end", 10*time.Second, func() error {
		// The log of the agent process now running (the killed one's run
		// never ended).
		l := c.agent.Log()
		l = l[strings.LastIndex(l, "agent starting"):]
		if s, e := strings.Count(l, "fakebinlog: run started"), strings.Count(l, "fakebinlog: run ended"); s != 1 || e != 1 {
			return fmt.Errorf("%d runs started, %d ended", s, e)
		}
		return nil
	})
	if b := c.instanceBinlog("db"); b != nil {
		t.Errorf("a stopped stream still listed: %v", b)
	}
	if out := must(t, 10*time.Second, append([]string{"instances"}, c.ctl()...)...).out; !strings.Contains(out, "no stream") {
		t.Errorf("instances after the stop:\n%s", out)
	}
}

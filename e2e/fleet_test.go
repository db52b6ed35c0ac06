package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// lease is the controllers' lease duration in these tests; heartbeats
// come every 200ms.
const lease = 2 * time.Second

// timing is the flags every controller gets: loopback-fast Raft and short
// leases, so that each scenario takes seconds.
var timing = []string{
	"--raft-heartbeat-timeout", "300ms", "--raft-election-timeout", "300ms", "--raft-leader-lease-timeout", "150ms",
	"--raft-commit-timeout", "10ms", "--heartbeat-interval", "200ms", "--lease-duration", lease.String(),
	"--apply-timeout", "3s", "--join-timeout", "10s", "--raft-log-level", "info", "--log-level", "debug",
}

// cluster is three `tidemark controller` processes and one `tidemark
// agent` (named db, serving the shared server) writing to a file
// repository.
type cluster struct {
	t     *testing.T
	nodes []*ctlNode
	agent *testenv.Child
	// agentMetrics is the agent's --metrics-addr (clusterOpts.metrics).
	agentMetrics string
	repo         string
	addrs        string // every node's gRPC address, comma-separated
	ca           *testenv.TestCA
}

type ctlNode struct {
	*testenv.Child
	id      string
	addr    string
	dataDir string
	conn    *client.Conn
	tls     []string // the node's --tls-* flags, given at every start
	metrics string   // --metrics-addr (clusterOpts.metrics)
}

func (c *cluster) ctl() []string { return []string{"--controller", c.addrs} }

// clusterOpts varies startCluster.
type clusterOpts struct {
	extra []string // flags for every controller
	// relayTo, when set, makes a prefix of its bucket every controller's
	// --repo, and the agent's repository relay:// to the controllers. The
	// agent gets no S3 credentials: only the relay can reach the bucket.
	relayTo *testenv.MinIO
	// metrics gives every node and the agent a --metrics-addr.
	metrics bool
}

// startCluster starts the cluster.
func startCluster(t *testing.T, db *testenv.MariaDB, opts clusterOpts) *cluster {
	t.Helper()
	dir := t.TempDir()
	c := &cluster{t: t, repo: "file://" + filepath.Join(dir, "repo")}
	extra, agentRepo, agentEnv := opts.extra, c.repo, []string(nil)
	if m := opts.relayTo; m != nil {
		c.repo = fmt.Sprintf("s3://%s/%s?endpoint=%s&tls=false", m.Bucket, filepath.Base(dir), m.Endpoint)
		// Controllers and CLI runs inherit these; the agent has them unset.
		t.Setenv("AWS_ACCESS_KEY_ID", m.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", m.SecretKey)
		agentEnv = []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "MINIO_ACCESS_KEY=", "MINIO_SECRET_KEY="}
		extra = append(slices.Clone(extra), "--repo", c.repo)
	}
	must(t, 20*time.Second, "repo", "init", "--repo", c.repo)
	// The operator's own CA: every node, the agent and the CLI get a
	// certificate of it.
	c.ca = testenv.NewTestCA(t)
	admin := c.ca.Files(t, testenv.Admin())
	setCredentials(t, filepath.Dir(admin.CA))
	var addrs []string
	for i := range 3 {
		id := fmt.Sprintf("c%d", i+1)
		grpc := testenv.FreeAddr(t)
		dataDir := filepath.Join(dir, id)
		args := []string{"controller", "--data-dir", dataDir, "--node-id", id, "--grpc-addr", grpc, "--raft-addr", testenv.FreeAddr(t)}
		if i == 0 {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", addrs[0])
		}
		tlsArgs := testenv.Args(c.ca.Files(t, testenv.Controller(id)))
		var metricsAddr string
		if opts.metrics {
			metricsAddr = testenv.FreeAddr(t)
			args = append(args, "--metrics-addr", metricsAddr)
		}
		n := &ctlNode{Child: startProc(t, id, append(append(append(args, timing...), extra...), tlsArgs...)...), id: id, addr: grpc, dataDir: dataDir, tls: tlsArgs, metrics: metricsAddr}
		testenv.WaitFor(t, id+" to serve", 15*time.Second, func() error {
			if n.Exited() {
				t.Fatalf("%s exited:\n%s", id, n.LogTail())
			}
			conn, err := client.DialAny(t.Context(), []string{grpc}, client.Options{TLS: c.ca.Source(t, testenv.Admin()).ClientConfig(), ProbeTimeout: time.Second})
			if err == nil {
				n.conn = conn
				t.Cleanup(func() { _ = conn.Close() })
			}
			return err
		})
		c.nodes = append(c.nodes, n)
		addrs = append(addrs, grpc)
	}
	c.addrs = strings.Join(addrs, ",")
	testenv.WaitFor(t, "three voters and a leader", 15*time.Second, func() error {
		st, err := c.nodes[0].conn.Control.ClusterStatus(t.Context(), &v1.ClusterStatusRequest{})
		if err != nil {
			return err
		}
		if st.GetLeaderId() == "" || len(st.GetMembers()) != 3 {
			return fmt.Errorf("leader %q, %d members", st.GetLeaderId(), len(st.GetMembers()))
		}
		return nil
	})
	if opts.relayTo != nil {
		agentRepo = "relay://" + c.addrs
	}
	agentArgs := []string{"agent", "--controller", c.addrs, "--name", "db", "--mysql", db.DSN, "--repo", agentRepo, "--parallel", "1", "--log-level", "debug"}
	if opts.metrics {
		c.agentMetrics = testenv.FreeAddr(t)
		agentArgs = append(agentArgs, "--metrics-addr", c.agentMetrics)
	}
	c.agent = newProc(t, "agent", append(agentArgs, testenv.Args(c.ca.Files(t, testenv.Agent("db")))...)...)
	c.agent.Env = append(c.agent.Env, agentEnv...)
	c.agent.Start()
	testenv.WaitFor(t, "the agent to connect", 20*time.Second, func() error {
		r := tm(t, 10*time.Second, append([]string{"agents", "-o", "json"}, c.ctl()...)...)
		if r.code != 0 || !strings.Contains(r.out, `"connected":true`) {
			return fmt.Errorf("agents: %s %s", r.out, r.err)
		}
		return nil
	})
	return c
}

// leader returns the node that leads now.
func (c *cluster) leader() *ctlNode {
	c.t.Helper()
	var l *ctlNode
	testenv.WaitFor(c.t, "a leader", 15*time.Second, func() error {
		for _, n := range c.nodes {
			if n.Exited() {
				continue
			}
			st, err := n.conn.Cluster.NodeStatus(c.t.Context(), &v1.NodeStatusRequest{})
			if err == nil && st.GetState() == v1.MemberState_MEMBER_STATE_LEADER {
				l = n
				return nil
			}
		}
		return fmt.Errorf("no live node leads")
	})
	return l
}

// submit submits a backup of db without waiting and returns the job id.
func (c *cluster) submit() string {
	c.t.Helper()
	r := must(c.t, 20*time.Second, append([]string{"backup", "--instance", "db"}, c.ctl()...)...)
	return lastLine(r.out)
}

func (c *cluster) job(id string) *v1.Job {
	c.t.Helper()
	var j *v1.Job
	testenv.WaitFor(c.t, "job "+id, 15*time.Second, func() error {
		for _, n := range c.nodes {
			if n.Exited() {
				continue
			}
			r, err := n.conn.Control.GetJob(c.t.Context(), &v1.GetJobRequest{Id: id, Consistent: true})
			if err == nil {
				j = r.GetJob()
				return nil
			}
		}
		return fmt.Errorf("no node answers")
	})
	return j
}

func (c *cluster) waitState(id string, d time.Duration, states ...v1.JobState) *v1.Job {
	c.t.Helper()
	var j *v1.Job
	testenv.WaitFor(c.t, fmt.Sprintf("job %s to be %v", id, states), d, func() error {
		j = c.job(id)
		if !slices.Contains(states, j.GetState()) {
			return fmt.Errorf("job is %s (%s)", j.GetState(), j.GetReason())
		}
		return nil
	})
	return j
}

// catalogOf summarises what one node's catalog holds about backups and
// jobs, read locally.
func catalogOf(ctx context.Context, n *ctlNode) (string, error) {
	bs, err := n.conn.Control.ListBackups(ctx, &v1.ListBackupsRequest{})
	if err != nil {
		return "", err
	}
	js, err := n.conn.Control.ListJobs(ctx, &v1.ListJobsRequest{})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, x := range bs.GetBackups() {
		fmt.Fprintf(&b, "backup %s %s job %s\n", x.GetId(), x.GetStatus(), x.GetJobId())
	}
	for _, x := range js.GetJobs() {
		fmt.Fprintf(&b, "job %s %s attempt %d result %q reason %q\n", x.GetId(), x.GetState(), x.GetAttempt(), x.GetResult().GetBackupId(), x.GetReason())
	}
	return b.String(), nil
}

// sameCatalog waits until every live node holds the same backups and jobs,
// and returns that catalog.
func (c *cluster) sameCatalog() string {
	c.t.Helper()
	var cat string
	testenv.WaitFor(c.t, "every node to hold the same catalog", 15*time.Second, func() error {
		var first string
		for i, n := range c.nodes {
			if n.Exited() {
				continue
			}
			got, err := catalogOf(c.t.Context(), n)
			if err != nil {
				return fmt.Errorf("%s: %w", n.id, err)
			}
			if i > 0 && first != "" && got != first {
				return fmt.Errorf("catalogs differ:\n%s\n%s:\n%s", first, n.id, got)
			}
			if first == "" {
				first = got
			}
		}
		cat = first
		return nil
	})
	return cat
}

// completeBackups lists the catalog's complete backups of a job, once
// every live node agrees on them (a follower applies the log a little
// after the leader).
func (c *cluster) completeBackups(jobID string) []string {
	c.t.Helper()
	var out []string
	testenv.WaitFor(c.t, "the nodes to agree on the complete backups of job "+jobID, 10*time.Second, func() error {
		out = nil
		for i, n := range c.nodes {
			if n.Exited() {
				continue
			}
			bs, err := n.conn.Control.ListBackups(c.t.Context(), &v1.ListBackupsRequest{Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE})
			if err != nil {
				return fmt.Errorf("%s: %w", n.id, err)
			}
			ids := []string{}
			for _, b := range bs.GetBackups() {
				if b.GetJobId() == jobID {
					ids = append(ids, b.GetId())
				}
			}
			if i > 0 && out != nil && !slices.Equal(ids, out) {
				return fmt.Errorf("%s holds %v, another node %v", n.id, ids, out)
			}
			out = ids
		}
		return nil
	})
	return out
}

// repoManifests lists the backups stored in the repository (the
// standalone listing reads the manifests themselves).
func (c *cluster) repoManifests() []string {
	c.t.Helper()
	list := decode[[]map[string]any](c.t, must(c.t, 20*time.Second, "backups", "--repo", c.repo, "-o", "json"))
	var ids []string
	for _, m := range list {
		ids = append(ids, m["id"].(string))
	}
	slices.Sort(ids)
	return ids
}

// TestFleetProcesses runs the fleet as processes: three controllers and an
// agent on one real MariaDB holding a million narrow rows (a backup with one
// worker takes a few seconds), a fresh cluster and repository per scenario.
func TestFleetProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the fleet scenarios need a million rows to back up")
	}
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "fleet"})
	loadBig(t, db, 1000000)

	// The plain backup goes through the relay into MinIO: the agent has no
	// credentials, the controllers write the bucket.
	t.Run("backup", func(t *testing.T) {
		c := startCluster(t, db, clusterOpts{relayTo: testenv.StartMinIO(t)})
		var (
			wg   sync.WaitGroup
			wait result
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait = tm(t, 60*time.Second, append([]string{"backup", "--instance", "db", "--wait"}, c.ctl()...)...)
		}()
		var active string
		testenv.WaitFor(t, "the backup job to be running", 20*time.Second, func() error {
			jobs := decode[[]map[string]any](t, must(t, 10*time.Second, append([]string{"jobs", "-o", "json"}, c.ctl()...)...))
			if len(jobs) == 1 && jobs[0]["state"] == "running" {
				active = jobs[0]["id"].(string)
				return nil
			}
			return fmt.Errorf("jobs: %v", jobs)
		})
		// A second backup of the instance is refused, naming the running job.
		r := tm(t, 20*time.Second, append([]string{"backup", "--instance", "db"}, c.ctl()...)...)
		if r.code == 0 || !strings.Contains(r.err, active) {
			t.Errorf("second backup while %s runs: exit %d, stderr %q", active, r.code, r.err)
		}
		wg.Wait()
		if wait.code != 0 {
			t.Fatalf("backup --wait: exit %d\n%s", wait.code, wait.err)
		}
		id := lastLine(wait.out)
		if !strings.HasPrefix(id, active) {
			t.Errorf("backup --wait printed %q, want a backup of job %s", id, active)
		}
		if !strings.Contains(wait.err, "running") {
			t.Errorf("backup --wait stderr shows no progress:\n%s", wait.err)
		}
		cat := c.sameCatalog()
		if !strings.Contains(cat, "backup "+id+" BACKUP_STATUS_COMPLETE") {
			t.Errorf("catalog lacks backup %s:\n%s", id, cat)
		}
		for _, n := range c.nodes {
			list := decode[[]map[string]any](t, must(t, 10*time.Second, "backups", "--instance", "db", "-o", "json", "--controller", n.addr))
			if len(list) != 1 || list[0]["id"] != id {
				t.Errorf("%s lists %v", n.id, list)
			}
		}
		if got := c.repoManifests(); !slices.Equal(got, []string{id}) {
			t.Errorf("repository holds %v, want [%s]", got, id)
		}
		// The catalog records the bucket, where the data is, not the relay.
		bs, err := c.nodes[0].conn.Control.ListBackups(t.Context(), &v1.ListBackupsRequest{Consistent: true})
		if err != nil || len(bs.GetBackups()) != 1 || bs.GetBackups()[0].GetRepositoryUri() != c.repo {
			t.Errorf("catalog backups %v (%v), want one in %s", bs.GetBackups(), err, c.repo)
		}
		if !strings.Contains(c.agent.Log(), "relay://") {
			t.Errorf("the agent's log does not show its relay:// repository")
		}
	})

	t.Run("kill leader mid-backup", func(t *testing.T) {
		c := startCluster(t, db, clusterOpts{})
		id := c.submit()
		c.waitState(id, 20*time.Second, v1.JobState_JOB_STATE_RUNNING)
		// A watch started before the leader dies follows the job to its end
		// through another node.
		var (
			wg    sync.WaitGroup
			watch result
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			watch = tm(t, 60*time.Second, append([]string{"job", "watch", id}, c.ctl()...)...)
		}()
		time.Sleep(300 * time.Millisecond)
		old := c.leader()
		if j := c.job(id); j.GetState() != v1.JobState_JOB_STATE_RUNNING {
			t.Fatalf("job %s is %s before the leader is killed: the sample is too small for this test", id, j.GetState())
		}
		old.Kill()
		killed := time.Now()
		nl := c.leader()
		t.Logf("%s killed; %s leads after %s", old.id, nl.id, time.Since(killed).Round(time.Millisecond))
		if time.Since(killed) > testenv.Wait(10*time.Second) {
			t.Errorf("no new leader for %s", time.Since(killed))
		}
		j := c.waitState(id, 40*time.Second, v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_FAILED)
		t.Logf("job %s ended %s after the leader's death (attempt %d, reason %q)", id, j.GetState(), j.GetAttempt(), j.GetReason())
		done := c.completeBackups(id)
		wg.Wait()
		if ok := j.GetState() == v1.JobState_JOB_STATE_SUCCEEDED; (watch.code == 0) != ok || (ok && lastLine(watch.out) != j.GetResult().GetBackupId()) {
			t.Errorf("job watch across the leader's death: exit %d, stdout %q, stderr:\n%s", watch.code, watch.out, watch.err)
		}
		switch j.GetState() {
		case v1.JobState_JOB_STATE_SUCCEEDED:
			if len(done) != 1 || done[0] != j.GetResult().GetBackupId() {
				t.Errorf("job succeeded with backup %s; complete backups of the job: %v", j.GetResult().GetBackupId(), done)
			}
		default:
			if len(done) != 0 {
				t.Errorf("job failed, yet complete backups: %v", done)
			}
		}
		c.sameCatalog()
		// The killed node comes back and catches up.
		old.Args = append(append([]string{"controller", "--data-dir", old.dataDir}, timing...), old.tls...)
		old.Start()
		c.sameCatalog()
		if got := c.repoManifests(); !slices.Equal(got, done) {
			t.Errorf("repository holds %v, catalog's complete backups %v", got, done)
		}
	})

	t.Run("kill agent mid-backup", func(t *testing.T) {
		c := startCluster(t, db, clusterOpts{extra: []string{"--max-attempts", "1"}})
		id := c.submit()
		c.waitState(id, 20*time.Second, v1.JobState_JOB_STATE_RUNNING)
		c.agent.Kill()
		start := time.Now()
		j := c.waitState(id, 4*lease+5*time.Second, v1.JobState_JOB_STATE_FAILED)
		t.Logf("job failed %s after the agent's death: %s", time.Since(start).Round(time.Millisecond), j.GetReason())
		if !strings.Contains(j.GetReason(), "lease expired") {
			t.Errorf("job failed for %q, want a lease expiry", j.GetReason())
		}
		if done := c.completeBackups(id); len(done) != 0 {
			t.Errorf("complete backups of the failed job: %v", done)
		}
		if got := c.repoManifests(); len(got) != 0 {
			t.Errorf("repository holds manifests %v", got)
		}
		w := tm(t, 20*time.Second, append([]string{"job", "watch", id}, c.ctl()...)...)
		if w.code == 0 || !strings.Contains(w.err, "lease expired") {
			t.Errorf("job watch of the failed job: exit %d, stderr %q", w.code, w.err)
		}
		c.sameCatalog()
	})

	t.Run("pause agent past its lease", func(t *testing.T) {
		c := startCluster(t, db, clusterOpts{})
		id := c.submit()
		c.waitState(id, 20*time.Second, v1.JobState_JOB_STATE_RUNNING)
		c.agent.Stop()
		time.Sleep(2 * lease)
		j := c.job(id)
		if j.GetAttempt() != 1 || len(j.GetPreviousAttempts()) != 1 || !strings.Contains(j.GetPreviousAttempts()[0].GetError(), "lease expired") {
			t.Errorf("after the agent slept through its lease: attempt %d, previous %v", j.GetAttempt(), j.GetPreviousAttempts())
		}
		c.agent.Signal(syscall.SIGCONT)
		j = c.waitState(id, 40*time.Second, v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_FAILED)
		if j.GetState() != v1.JobState_JOB_STATE_SUCCEEDED || j.GetAttempt() != 2 {
			t.Fatalf("job %s ended %s at attempt %d (%s), want succeeded at attempt 2", id, j.GetState(), j.GetAttempt(), j.GetReason())
		}
		done := c.completeBackups(id)
		if len(done) != 1 || done[0] != id+"-a2" {
			t.Errorf("complete backups of job %s: %v, want [%s-a2]", id, done, id)
		}
		// The woken first attempt never leaves a manifest behind.
		testenv.WaitFor(t, "only the second attempt's manifest in the repository", 10*time.Second, func() error {
			if got := c.repoManifests(); !slices.Equal(got, done) {
				return fmt.Errorf("repository holds %v", got)
			}
			return nil
		})
		c.sameCatalog()
		// The woken attempt was stopped by the controller, or its result
		// refused as stale (the agent logs which).
		if l := c.agent.Log(); !strings.Contains(l, "job cancelled by the controller") && !strings.Contains(l, "refused the job's result as stale") {
			t.Errorf("the agent's log shows no refusal of the woken attempt")
		}
	})
}

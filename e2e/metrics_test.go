package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// scraper reads a daemon's metrics listener as Prometheus would: HTTPS,
// verifying the daemon under serverName, presenting a certificate of the
// cluster CA (here the admin's; any identity of the CA will do).
type scraper struct {
	t      *testing.T
	client *http.Client
}

func newScraper(t *testing.T, c *cluster, serverName string) *scraper {
	src := c.ca.Source(t, testenv.Admin())
	return &scraper{t: t, client: &http.Client{Timeout: testenv.Wait(10 * time.Second), Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: src.Roots(), ServerName: serverName, MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return src.Current() },
	}}}}
}

func (s *scraper) get(addr, path string) (int, string, error) {
	resp, err := s.client.Get("https://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metrics scrapes addr and parses the text format.
func (s *scraper) metrics(addr string) map[string]*dto.MetricFamily {
	s.t.Helper()
	code, body, err := s.get(addr, "/metrics")
	if err != nil || code != 200 {
		s.t.Fatalf("scraping %s: %d %v\n%s", addr, code, err, body)
	}
	// A zero TextParser panics: it needs a validation scheme.
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		s.t.Fatalf("parsing the metrics of %s: %v", addr, err)
	}
	return fams
}

// series returns the series of fam whose labels include want, or nil.
func series(fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	mf := fams[name]
	if mf == nil {
		return nil
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

func valueOf(m *dto.Metric) float64 {
	switch {
	case m == nil:
		return -1
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return -1
}

// TestMetricsProcesses: three controllers and an agent with
// --metrics-addr; after a backup and a failed backup their /metrics show
// it with the right labels; /readyz of a follower turns 503 while the
// cluster has no leader and 200 again once it has; grpc.health.v1 answers
// without a client certificate.
func TestMetricsProcesses(t *testing.T) {
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "metrics"})
	loadBig(t, db, 2000)
	c := startCluster(t, db, clusterOpts{metrics: true})
	agentScr := newScraper(t, c, tlsx.AgentServerName)
	ctlScr := newScraper(t, c, tlsx.ControllerServerName)

	ok := c.submit()
	c.waitState(ok, 60*time.Second, v1.JobState_JOB_STATE_SUCCEEDED)
	// A backup that fails: the server is down while it runs.
	db.Stop()
	sr, err := c.leader().conn.Control.SubmitBackup(t.Context(), &v1.SubmitBackupRequest{Instance: "db", Engine: "logical"})
	if err != nil {
		t.Fatal(err)
	}
	c.waitState(sr.GetJob().GetId(), 60*time.Second, v1.JobState_JOB_STATE_FAILED)
	db.Restart(t)

	t.Run("agent", func(t *testing.T) {
		// The agent counts a job before it reports the result, so the
		// scrape after the job's end sees it.
		fams := agentScr.metrics(c.agentMetrics)
		for _, w := range []struct {
			name   string
			labels map[string]string
			min    float64
		}{
			{"tidemark_jobs_total", map[string]string{"kind": "backup", "engine": "logical", "outcome": "ok"}, 1},
			// An engine name the agent does not know is folded into
			{"tidemark_jobs_total", map[string]string{"kind": "backup", "engine": "logical", "outcome": "failed"}, 1},
			{"tidemark_job_duration_seconds", map[string]string{"kind": "backup", "engine": "logical", "outcome": "ok"}, 1},
			{"tidemark_job_duration_seconds", map[string]string{"kind": "backup", "engine": "logical", "outcome": "failed"}, 1},
			{"tidemark_backup_bytes_total", map[string]string{"engine": "logical", "state": "logical"}, 100_000},
			{"tidemark_backup_bytes_total", map[string]string{"engine": "logical", "state": "stored"}, 1},
			{"tidemark_backup_lock_seconds", map[string]string{"engine": "logical"}, 1},
			{"tidemark_storage_operations_total", map[string]string{"backend": "file", "op": "put", "outcome": "ok"}, 2},
			{"tidemark_storage_operation_duration_seconds", map[string]string{"backend": "file", "op": "put"}, 2},
		} {
			if v := valueOf(series(fams, w.name, w.labels)); v < w.min {
				t.Errorf("agent: %s%v = %v, want at least %v", w.name, w.labels, v, w.min)
			}
		}
		if v := valueOf(series(fams, "tidemark_jobs_total", map[string]string{"kind": "backup", "engine": "logical", "outcome": "failed"})); v != 1 {
			t.Errorf("failed logical backups counted: %v, want 1", v)
		}
		if code, body, err := agentScr.get(c.agentMetrics, "/readyz"); err != nil || code != 200 {
			t.Errorf("agent /readyz: %d %v %s", code, err, body)
		}
		// Every line of a job carries its id, instance and attempt.
		for _, l := range strings.Split(c.agent.Log(), "\n") {
			tagged := strings.Contains(l, "job="+ok) && strings.Contains(l, "instance=db") && strings.Contains(l, "attempt=1")
			if strings.Contains(l, `msg="job succeeded"`) && !tagged {
				t.Errorf("job line without job, instance or attempt: %s", l)
			}
		}
		if !strings.Contains(c.agent.Log(), `msg="job succeeded" agent=db job=`+ok) {
			t.Errorf("no success line for job %s in the agent's log", ok)
		}
	})

	leader := c.leader()
	// hashicorp/raft's lines go through the node's slog handler.
	if !strings.Contains(leader.Log(), `msg="entering leader state" node=`) || !strings.Contains(leader.Log(), "logger=raft") {
		t.Errorf("raft's lines are not in the node's slog format:\n%s", leader.LogTail())
	}
	t.Run("leader", func(t *testing.T) {
		fams := ctlScr.metrics(leader.metrics)
		for _, w := range []struct {
			name   string
			labels map[string]string
			want   func(float64) bool
		}{
			{"tidemark_catalog_jobs", map[string]string{"kind": "backup", "state": "succeeded"}, func(v float64) bool { return v == 1 }},
			{"tidemark_catalog_jobs", map[string]string{"kind": "backup", "state": "failed"}, func(v float64) bool { return v == 1 }},
			{"tidemark_agents_connected", nil, func(v float64) bool { return v == 1 }},
			{"tidemark_catalog_instances", nil, func(v float64) bool { return v == 1 }},
			{"tidemark_instance_last_backup_timestamp_seconds", map[string]string{"instance": "db"}, func(v float64) bool {
				return v > float64(time.Now().Add(-10*time.Minute).Unix()) && v <= float64(time.Now().Unix()+1)
			}},
			{"tidemark_raft_node_state", map[string]string{"state": "leader"}, func(v float64) bool { return v == 1 }},
			{"tidemark_raft_node_applied_index", nil, func(v float64) bool { return v > 0 }},
		} {
			if v := valueOf(series(fams, w.name, w.labels)); !w.want(v) {
				t.Errorf("leader: %s%v = %v", w.name, w.labels, v)
			}
		}
		// hashicorp/raft's own metrics, through the go-metrics sink.
		if series(fams, "tidemark_raft_commitTime", nil) == nil && series(fams, "tidemark_raft_fsm_apply", nil) == nil {
			var names []string
			for n := range fams {
				if strings.HasPrefix(n, "tidemark_raft") {
					names = append(names, n)
				}
			}
			t.Errorf("raft's go-metrics are missing; tidemark_raft* families: %v", names)
		}
	})

	// The dashboard's expressions name only metrics the daemons export:
	// seen in these scrapes, or defined (a vector with no series yet, such
	// as retries, is not in a scrape).
	t.Run("dashboard", func(t *testing.T) {
		known := map[string]bool{}
		for _, n := range controller.DefinedMetrics() {
			known[n] = true
		}
		for _, addr := range []string{c.agentMetrics} {
			for n := range agentScr.metrics(addr) {
				known[n] = true
			}
		}
		for n := range ctlScr.metrics(leader.metrics) {
			known[n] = true
		}
		names := dashboardMetrics(t)
		if len(names) < 10 {
			t.Fatalf("only %d metric names found in the dashboard: %v", len(names), names)
		}
		for _, n := range names {
			if !known[n] {
				t.Errorf("deploy/grafana/tidemark.json uses %s, which no daemon exports", n)
			}
		}
	})

	t.Run("follower readiness", func(t *testing.T) {
		var follower *ctlNode
		for _, n := range c.nodes {
			if n != leader {
				follower = n
				break
			}
		}
		fams := ctlScr.metrics(follower.metrics)
		if series(fams, "tidemark_catalog_jobs", nil) != nil || series(fams, "tidemark_agents_connected", nil) != nil {
			t.Error("a follower exports the leader-only gauges (dashboards would count them twice)")
		}
		if v := valueOf(series(fams, "tidemark_raft_node_state", map[string]string{"state": "follower"})); v != 1 {
			t.Errorf("follower state gauge %v", v)
		}
		// /readyz and /healthz answer without a client certificate (a
		// kubelet's probe has none); /metrics does not.
		anon := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: c.ca.Source(t, testenv.Admin()).Roots(), ServerName: tlsx.ControllerServerName}}}
		for path, want := range map[string]int{"/readyz": 200, "/healthz": 200, "/metrics": 401} {
			resp, err := anon.Get("https://" + follower.metrics + path)
			if err != nil {
				t.Fatalf("%s without a certificate: %v", path, err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("%s without a certificate: %d, want %d", path, resp.StatusCode, want)
			}
		}
		health := healthClient(t, c, follower.addr)
		if st := healthStatus(t, health); st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("follower health before the kill: %s", st)
		}

		// Both followers are watched: the one that wins the election may
		// never be without a leader for longer than a poll (the other
		// refuses its pre-vote until its own timeout, so the loser always
		// is).
		var followers []*ctlNode
		for _, n := range c.nodes {
			if n != leader {
				followers = append(followers, n)
			}
		}
		leader.Kill()
		sawNotReady := ""
		testenv.WaitFor(t, "a follower's /readyz to turn 503", 15*time.Second, func() error {
			for _, f := range followers {
				code, body, err := ctlScr.get(f.metrics, "/readyz")
				if err == nil && code == http.StatusServiceUnavailable {
					sawNotReady = f.id + ": " + body
					return nil
				}
			}
			return fmt.Errorf("both followers' /readyz still 200")
		})
		if !strings.Contains(sawNotReady, "leader") && !strings.Contains(sawNotReady, "candidate") {
			t.Errorf("not-ready body does not say why: %q", sawNotReady)
		}
		for _, f := range followers {
			testenv.WaitFor(t, f.id+"'s /readyz to be 200 under a new leader", 20*time.Second, func() error {
				code, body, err := ctlScr.get(f.metrics, "/readyz")
				if err == nil && code == 200 {
					return nil
				}
				return fmt.Errorf("/readyz: %d %w %s", code, err, body)
			})
		}
		testenv.WaitFor(t, "grpc.health.v1 to answer SERVING again", 10*time.Second, func() error {
			if st := healthStatus(t, health); st != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("health %s", st)
			}
			return nil
		})
	})
}

// metricRE finds metric names in PromQL.
var metricRE = regexp.MustCompile(`\btidemark_[A-Za-z0-9_]+`)

// dashboardMetrics returns the metric names the dashboard's expressions
// use, with a histogram's or summary's _bucket, _sum and _count suffixes
// taken off.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "tidemark.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("deploy/grafana/tidemark.json: %v", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range metricRE.FindAllString(tg.Expr, -1) {
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					n = strings.TrimSuffix(n, suf)
				}
				if !seen[n] {
					seen[n] = true
					out = append(out, n)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// TestMetricsReadme: the README's metrics table lists exactly the metrics
// the code defines (its tidemark_raft_* row stands for raft's own).
func TestMetricsReadme(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "| metric | type | labels | meaning |")
	if !ok {
		t.Fatal("README.md has no metrics table (header | metric | type | labels | meaning |)")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	listed := map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		if !strings.HasPrefix(name, "tidemark_") || strings.Contains(name, "*") {
			continue
		}
		if listed[name] {
			t.Errorf("README lists %s twice", name)
		}
		listed[name] = true
	}
	defined := append(controller.DefinedMetrics(), metrics.StandaloneNames()...)
	for _, n := range defined {
		if !listed[n] {
			t.Errorf("metric %s is not in the README's table", n)
		}
		delete(listed, n)
	}
	for n := range listed {
		t.Errorf("the README's table lists %s, which the code does not define", n)
	}
	if len(defined) < 15 {
		t.Errorf("only %d metrics defined: %v", len(defined), defined)
	}
}

// healthClient dials a controller for grpc.health.v1 with the CA only, no
// client certificate, as grpc_health_probe -tls -tls-ca-cert would.
func healthClient(t *testing.T, c *cluster, addr string) healthpb.HealthClient {
	t.Helper()
	tc := &tls.Config{RootCAs: c.ca.Source(t, testenv.Admin()).Roots(), ServerName: tlsx.ControllerServerName, MinVersion: tls.VersionTLS13}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(grpccreds.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return healthpb.NewHealthClient(cc)
}

func healthStatus(t *testing.T, h healthpb.HealthClient) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := contextWithTimeout(t, 5*time.Second)
	defer cancel()
	r, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("grpc.health.v1 Check: %v", err)
	}
	return r.GetStatus()
}

// TestDevMetrics: `tidemark dev --metrics-addr` serves the controller's and
// the agent's metrics from one registry on one address, over the dev
// cluster's TLS, and /readyz waits for both; its logs are JSON with
// --log-format json, raft's and gRPC's lines included.
func TestDevMetrics(t *testing.T) {
	db := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "devmetrics"})
	testenv.LoadSample(t, db.DB(t), "shop", 500)
	dir := filepath.Join(t.TempDir(), "dev")
	addr, maddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	dev := startDev(t, dir, db.DSN, addr, "--metrics-addr", maddr, "--log-format", "json", "--log-level", "debug")
	if !strings.Contains(dev.Log(), "metrics "+maddr+"\n") {
		t.Errorf("tidemark dev does not print its metrics address:\n%s", dev.LogTail())
	}
	admin := filepath.Join(dir, "controller", "tls", "admin")
	src, err := tlsx.FromFiles(tlsx.Files{CA: filepath.Join(admin, "ca.pem"), Cert: filepath.Join(admin, "cert.pem"), Key: filepath.Join(admin, "key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	scr := &scraper{t: t, client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: src.Roots(), ServerName: tlsx.ControllerServerName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return src.Current() },
	}}}}
	testenv.WaitFor(t, "dev's /readyz", 20*time.Second, func() error {
		code, body, err := scr.get(maddr, "/readyz")
		if err != nil || code != 200 {
			return fmt.Errorf("%d %w %s", code, err, body)
		}
		return nil
	})
	// A viewer's access token stands in for a client certificate.
	tok := strings.TrimSpace(lastLine(must(t, 20*time.Second, "token", "create", "--role", "viewer", "--user", "prometheus", "--controller", addr).out))
	anon := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: src.Roots(), ServerName: tlsx.ControllerServerName}}}
	for bearer, want := range map[string]int{tok: 200, tok + "x": http.StatusForbidden} {
		req, _ := http.NewRequest(http.MethodGet, "https://"+maddr+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := anon.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("dev /metrics with an access token: %d, want %d", resp.StatusCode, want)
		}
	}
	must(t, 60*time.Second, "backup", "--instance", "local", "--wait", "--controller", addr)
	fams := scr.metrics(maddr)
	if v := valueOf(series(fams, "tidemark_jobs_total", map[string]string{"kind": "backup", "engine": "logical", "outcome": "ok"})); v != 1 {
		t.Errorf("agent side: tidemark_jobs_total{backup,logical,ok} = %v, want 1", v)
	}
	if v := valueOf(series(fams, "tidemark_catalog_jobs", map[string]string{"kind": "backup", "state": "succeeded"})); v != 1 {
		t.Errorf("controller side: tidemark_catalog_jobs{backup,succeeded} = %v, want 1", v)
	}
	if v := valueOf(series(fams, "tidemark_agents_connected", nil)); v != 1 {
		t.Errorf("tidemark_agents_connected = %v, want 1", v)
	}
	var logLines, raftLines int
	for _, l := range strings.Split(dev.Log(), "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("a log line is not JSON: %s", l)
			continue
		}
		logLines++
		if m["logger"] == "raft" {
			raftLines++
		}
	}
	if logLines == 0 {
		t.Errorf("no JSON log lines:\n%s", dev.LogTail())
	}
	for _, l := range strings.Split(dev.Log(), "\n") {
		if strings.Contains(l, "level=") && strings.Contains(l, "msg=") {
			t.Errorf("a text log line under --log-format json: %s", l)
		}
	}
	t.Logf("%d JSON log lines, %d from raft", logLines, raftLines)
}

// TestMetricsAddrInUse: a daemon whose --metrics-addr is taken fails at
// start, naming the address and the flag.
func TestMetricsAddrInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	busy := l.Addr().String()
	dir := t.TempDir()
	r := tm(t, 30*time.Second, "controller", "--insecure", "--data-dir", filepath.Join(dir, "c"), "--node-id", "c1", "--bootstrap",
		"--grpc-addr", testenv.FreeAddr(t), "--raft-addr", testenv.FreeAddr(t), "--metrics-addr", busy)
	if r.code == 0 || !strings.Contains(r.err, "--metrics-addr "+busy) || !strings.Contains(r.err, "already in use") {
		t.Errorf("controller with --metrics-addr in use: exit %d, stderr %q", r.code, r.err)
	}

	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte("metrics_addr: "+busy+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = tm(t, 30*time.Second, "agent", "--insecure", "--config", cfg, "--controller", testenv.FreeAddr(t), "--name", "a1",
		"--mysql", "root@tcp(127.0.0.1:1)/")
	if r.code == 0 || !strings.Contains(r.err, "metrics_addr") || !strings.Contains(r.err, busy) || !strings.Contains(r.err, "already in use") {
		t.Errorf("agent with metrics_addr in use: exit %d, stderr %q", r.code, r.err)
	}
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), testenv.Wait(d))
}

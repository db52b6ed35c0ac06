package controller

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// readyApplyLag is how far the applied index may trail the commit index
// this node knows of while it still counts as ready: a node replaying a
// long log after a restart is not, a node one batch behind is.
const readyApplyLag = 1024

// Ready reports whether the node can serve: Raft runs, a leader is known,
// the node is a member of the configuration, and it has applied the log up
// to about what it knows is committed. The reason names what is missing. It
// reads in-memory Raft state only, so probes may call it often.
func (s *Server) Ready() error {
	switch st := s.raft.State(); st {
	case raft.Shutdown:
		return errors.New("node is shutting down")
	case raft.Candidate:
		return fmt.Errorf("node %s is a candidate in an election: no leader known", s.id.NodeID)
	}
	addr, id := s.raft.LeaderWithID()
	if addr == "" || id == "" {
		return fmt.Errorf("node %s knows no leader", s.id.NodeID)
	}
	// A follower still names a leader that died until its own heartbeat
	// timeout: silence for half of it is already not ready (leaders send
	// heartbeats ten times per timeout).
	if s.raft.State() == raft.Follower {
		if lc := s.raft.LastContact(); !lc.IsZero() && time.Since(lc) > s.cfg.Raft.HeartbeatTimeout/2 {
			return fmt.Errorf("node %s has not heard from leader %s for %s: it may be gone (an election follows)", s.id.NodeID, id, time.Since(lc).Round(time.Millisecond))
		}
	}
	if !s.isMember() {
		return fmt.Errorf("node %s is not a member of the cluster's configuration", s.id.NodeID)
	}
	if applied, commit := s.raft.AppliedIndex(), s.raft.CommitIndex(); applied+readyApplyLag < commit {
		return fmt.Errorf("node %s is catching up: applied %d of %d committed entries", s.id.NodeID, applied, commit)
	}
	return nil
}

// isMember reports whether the latest Raft configuration lists this node
// (a cheap read of raft's copy).
func (s *Server) isMember() bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == s.id.NodeID {
			return true
		}
	}
	return false
}

// healthLoop keeps grpc.health.v1's overall status ("") in step with
// Ready, checking four times a second.
func (s *Server) healthLoop() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	// Start set NOT_SERVING: a node starting without a leader is no news.
	last := healthpb.HealthCheckResponse_NOT_SERVING
	for {
		st := healthpb.HealthCheckResponse_SERVING
		err := s.Ready()
		if err != nil {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		if st != last {
			s.health.SetServingStatus("", st)
			if err != nil {
				s.log.Warn("node not ready", "reason", err.Error())
			} else {
				s.log.Info("node ready")
			}
			last = st
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// setupMetrics registers the node's collector, readiness check and raft's
// go-metrics sink in cfg.Metrics, and starts the --metrics-addr listener.
func (s *Server) setupMetrics() error {
	if s.cfg.Metrics == nil && s.cfg.MetricsAddr != "" {
		s.cfg.Metrics = metrics.New()
	}
	m := s.cfg.Metrics
	if m == nil {
		return nil
	}
	if _, err := metrics.InstallRaftSink(m); err != nil {
		s.log.Warn("raft's own metrics are not exported", "err", err)
	}
	s.collector = newNodeCollector(s)
	m.MustRegister(s.collector)
	m.AddReadyCheck("controller", s.Ready)
	if s.cfg.MetricsAddr == "" {
		return nil
	}
	p := metrics.ServeParams{Addr: s.cfg.MetricsAddr, Flag: "--metrics-addr", Pprof: s.cfg.Pprof, Logger: s.log}
	if s.tls != nil {
		tc := s.tls.ServerConfig()
		tc.NextProtos = []string{"h2", "http/1.1"}
		p.TLS = tc
		p.CheckPeer = func(cert *x509.Certificate) error {
			id, err := tlsx.IdentityOf(cert)
			switch {
			case err != nil:
				return err
			case s.revoked(id):
				return fmt.Errorf("%s is revoked", id)
			}
			return nil
		}
		// A scraper may also present a CLI access token (viewer or
		// above; the profiler: admin) instead of a certificate.
		p.Authorize = func(r *http.Request) error {
			id, err := s.bearerFromHeader(r.Header.Get("Authorization"))
			switch {
			case err != nil:
				return err
			case s.revoked(id):
				return fmt.Errorf("%s is revoked", id)
			case strings.HasPrefix(r.URL.Path, "/debug/pprof") && !id.Role.Allows(tlsx.RoleAdmin):
				return fmt.Errorf("%s may not profile the process: it needs the admin role", id)
			case !id.Role.Allows(tlsx.RoleViewer):
				return fmt.Errorf("%s may not read metrics: it needs the viewer role", id)
			}
			return nil
		}
	}
	srv, err := metrics.Serve(m, p)
	if err != nil {
		return err
	}
	s.metricsSrv = srv
	return nil
}

// MetricsAddr is the address --metrics-addr is bound to ("" without).
func (s *Server) MetricsAddr() string {
	if s.metricsSrv == nil {
		return ""
	}
	return s.metricsSrv.Addr()
}

// nodeCollector computes the controller's gauges at scrape time from Raft
// and, on the leader, from the catalog (CatalogCollector) and the agent
// hub: nothing is counted twice.
type nodeCollector struct {
	s   *Server
	cat *CatalogCollector

	raftState, raftTerm, raftCommit, raftApplied, raftLast, agents *prometheus.Desc
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

func newNodeCollector(s *Server) *nodeCollector {
	c := &nodeCollector{s: s,
		raftState:   desc("tidemark_raft_node_state", "1 for the Raft state this node is in (follower, candidate, leader, shutdown), 0 for the others.", "state"),
		raftTerm:    desc("tidemark_raft_node_term", "This node's current Raft term."),
		raftCommit:  desc("tidemark_raft_node_commit_index", "The highest Raft log index this node knows is committed."),
		raftApplied: desc("tidemark_raft_node_applied_index", "The highest Raft log index this node applied to its catalog."),
		raftLast:    desc("tidemark_raft_node_last_index", "The last index in this node's Raft log."),
		agents:      desc("tidemark_agents_connected", "Agents holding a session with this leader (leader only)."),
	}
	c.cat = NewCatalogCollector(func() *catalog.Read {
		if s == nil || s.raft.State() != raft.Leader {
			return nil
		}
		return s.fsm.Store().Read()
	})
	return c
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.raftState, c.raftTerm, c.raftCommit, c.raftApplied, c.raftLast, c.agents} {
		ch <- d
	}
	c.cat.Describe(ch)
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.s.raft
	state := r.State()
	for _, st := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if st == state {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.raftState, prometheus.GaugeValue, v, stateName(st))
	}
	ch <- prometheus.MustNewConstMetric(c.raftTerm, prometheus.GaugeValue, float64(r.CurrentTerm()))
	ch <- prometheus.MustNewConstMetric(c.raftCommit, prometheus.GaugeValue, float64(r.CommitIndex()))
	ch <- prometheus.MustNewConstMetric(c.raftApplied, prometheus.GaugeValue, float64(r.AppliedIndex()))
	ch <- prometheus.MustNewConstMetric(c.raftLast, prometheus.GaugeValue, float64(r.LastIndex()))
	if state == raft.Leader {
		ch <- prometheus.MustNewConstMetric(c.agents, prometheus.GaugeValue, float64(c.s.agents.sessionCount()))
	}
	c.cat.Collect(ch)
}

// CatalogCollector emits the leader's catalog gauges (jobs by kind and
// state, instances, each instance's last complete backup time and binlog
// RPO) from one read snapshot per scrape: one pass over the jobs, the
// backups and the binlog streams, so 2,000 instances cost one scan each.
type CatalogCollector struct {
	read func() *catalog.Read
	// Now is the clock RPO is measured against (time.Now by default).
	Now func() time.Time

	jobs, instances, lastBackup, rpo *prometheus.Desc
}

// NewCatalogCollector collects from the catalog read returns at each
// scrape; a nil read (a follower) emits nothing.
func NewCatalogCollector(read func() *catalog.Read) *CatalogCollector {
	return &CatalogCollector{read: read, Now: time.Now,
		jobs:       desc("tidemark_catalog_jobs", "Jobs in the catalog by kind and state (leader only).", "kind", "state"),
		instances:  desc("tidemark_catalog_instances", "Instances in the catalog (leader only)."),
		lastBackup: desc("tidemark_instance_last_backup_timestamp_seconds", "Unix time the newest complete backup of the instance finished (leader only; absent for an instance with none).", "instance"),
		rpo:        desc("tidemark_instance_binlog_rpo_seconds", "Seconds since the last binlog event the instance's stream made durable, as of its last committed watermark (leader only; absent without a stream).", "instance"),
	}
}

// Describe implements prometheus.Collector.
func (c *CatalogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.jobs, c.instances, c.lastBackup, c.rpo} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *CatalogCollector) Collect(ch chan<- prometheus.Metric) {
	rd := c.read()
	if rd == nil {
		return
	}
	now := c.Now()
	type ks struct {
		kind  v1.JobKind
		state v1.JobState
	}
	counts := map[ks]int{}
	rd.EachJobKindState(func(k v1.JobKind, s v1.JobState) { counts[ks{k, s}]++ })
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(n), kindName(k.kind), catalog.StateName(k.state))
	}
	ch <- prometheus.MustNewConstMetric(c.instances, prometheus.GaugeValue, float64(len(rd.Instances())))
	// From the backups' index entries: a scrape decodes no backup.
	for in, t := range rd.LastCompleteBackups() {
		ch <- prometheus.MustNewConstMetric(c.lastBackup, prometheus.GaugeValue, float64(t)/1e9, in)
	}
	for _, st := range rd.BinlogStreams() {
		wm := st.GetWatermark()
		if wm.GetLastEventTime() == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.rpo, prometheus.GaugeValue, max(0, now.Sub(wm.GetLastEventTime().AsTime()).Seconds()), st.GetInstance())
	}
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	case raft.Leader:
		return "leader"
	}
	return "shutdown"
}

// kindName is a job kind's label value: "backup", "restore",
// "binlog_stream".
func kindName(k v1.JobKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "JOB_KIND_"))
}

// DefinedMetrics lists every tidemark_* metric a controller process
// defines (its node collector and the process registry's), sorted, for the
// tests that hold the README's table and the Grafana dashboard to the code.
// Raft's own go-metrics are not listed: they appear as raft emits them.
func DefinedMetrics() []string {
	r := metrics.New()
	r.MustRegister(newNodeCollector(nil))
	return r.Names()
}

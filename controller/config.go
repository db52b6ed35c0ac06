package controller

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/controller/scheduler"
	"github.com/tidemark-backup/tidemark/engines/selection"
	"github.com/tidemark-backup/tidemark/internal/agentlink"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
)

// Config is a controller node's configuration. It flows one way: defaults
// (DefaultConfig), then flags, then Validate; the server never reads
// globals.
type Config struct {
	// NodeID is the node's Raft server id, unique in the cluster. On a
	// restart it may be left empty: the data directory remembers it.
	NodeID string
	// DataDir holds the Raft log, stable store, snapshots and node.json.
	DataDir string
	// GRPCAddr is the gRPC listen address (host:port), and the address
	// agents, the CLI and the other nodes are told to dial (the member
	// record, a follower's leader hint) unless GRPCAdvertiseAddr is set.
	GRPCAddr string
	// GRPCAdvertiseAddr, when set, is the gRPC address published in the
	// cluster instead of GRPCAddr (NAT, a proxy, a wildcard bind). A new
	// node whose GRPCAddr is a wildcard needs it.
	GRPCAdvertiseAddr string
	// RaftAddr is the Raft transport's listen address (host:port). It is
	// also the address the other nodes are told to dial unless
	// RaftAdvertiseAddr is set, and then it must not be a wildcard.
	RaftAddr string
	// RaftAdvertiseAddr, when set, is the Raft address the other nodes are
	// told to dial (it goes into the Raft configuration and the member
	// record) while the transport listens on RaftAddr: a NAT, a container's
	// published port, a proxy in front of the node, or a wildcard bind.
	// Empty: RaftAddr.
	RaftAdvertiseAddr string
	// Bootstrap starts a new cluster with this node as its only member.
	Bootstrap bool
	// Join lists gRPC addresses of existing members; a fresh node asks them
	// (in turn) to add it.
	Join []string
	// JoinTimeout bounds how long a join keeps retrying while the cluster
	// has no leader.
	JoinTimeout time.Duration
	// Repo is the default repository URI given to agents for backups (no
	// credentials: agents take theirs from their own environment). Empty:
	// agents use their own --repo. The node also serves it, over
	// RelayService, to agents whose repository is relay://.
	Repo string

	Raft RaftConfig

	// TLS secures every connection of the node (see TLSConfig).
	TLS TLSConfig

	// HeartbeatInterval is how often agents heartbeat.
	HeartbeatInterval time.Duration
	// LeaseDuration is how long a job lease, and an agent session, lives
	// without a heartbeat.
	LeaseDuration time.Duration
	// TakeoverGrace is added to LeaseDuration for the first lease window of
	// every job a new leader inherits: the time its agent may need to
	// notice the old leader is gone and register with the new one
	// (agentlink.ReconnectAllowance: keepalive detection, one connect
	// timeout, one capped backoff). Later windows are LeaseDuration again.
	TakeoverGrace time.Duration
	// MaxAttempts is the attempts a job gets (one more per lost lease).
	MaxAttempts uint32
	// WatermarkCommitInterval is the least time between two commits of the
	// binlog streams' watermarks: agents report a stream's watermark in
	// every heartbeat, the leader keeps the latest in memory and writes
	// every stream that moved in one Raft entry at most this often. A
	// leader change loses at most this much of the committed RPO history
	// (the agents report the latest again at once).
	WatermarkCommitInterval time.Duration
	// LogicalBelow: engine selection ranks the logical engine first for an
	// instance with less data than this (selection.Preferences.SmallBytes);
	// 0 ranks by engine alone.
	LogicalBelow uint64
	// ApplyTimeout bounds a write: enqueueing it into Raft and waiting for
	// its commit. With no quorum a write fails after at most this long.
	ApplyTimeout time.Duration

	// ScheduleInterval is how often the leader's scheduler looks for due
	// runs (and a policy change makes it look at once).
	ScheduleInterval time.Duration
	// StatusInterval is how often the leader evaluates the policies for
	// alerts (Webhooks).
	StatusInterval time.Duration
	// RetentionInterval is how often the leader applies the policies'
	// retention (and their copies' retention); a policy change makes it
	// apply at once.
	RetentionInterval time.Duration
	// JobHistoryMax bounds the finished job records the catalog keeps (0:
	// no bound by count); JobHistoryAge drops those that finished longer
	// ago (0: no bound by age). BackupTombstoneAge is how long a DELETED
	// backup record (its manifest is gone) stays in the catalog (ListBackups
	// with status DELETED) before it is removed. The leader applies them every
	// PruneInterval, in PruneCatalog entries stamped with its clock.
	JobHistoryMax      uint32
	JobHistoryAge      time.Duration
	BackupTombstoneAge time.Duration
	PruneInterval      time.Duration
	// CopyInterval is how often the leader looks for complete backups a
	// policy's copies still lack and submits their copy jobs.
	CopyInterval time.Duration
	// ReconcileInterval is how often the leader looks for backup jobs whose
	// refused or superseded attempts may have left a manifest and submits
	// the reconcile jobs that delete them; 0 turns the sweep off.
	ReconcileInterval time.Duration
	// ReconcileGrace is how long after a backup job ended the sweep leaves
	// its attempts' manifests alone.
	ReconcileGrace time.Duration
	// CopyGrace is how long after a backup finished its missing copy is
	// reported as "copy behind" by the policy status.
	CopyGrace time.Duration
	// Webhooks are URLs the leader POSTs a JSON alert to on a job failure,
	// an RPO breach, a binlog gap (once per gap), a binlog stream newly
	// failing and a policy newly unmet.
	Webhooks []string
	// Clock is the leader's time for the scheduler and retention; nil is
	// the wall clock. Tests set a fake one (in-process), or
	// --test-clock-file (processes). The FSM never reads one: the leader
	// stamps what it read into the commands.
	Clock scheduler.Clock

	// Logger receives the controller's structured logs; nil discards them.
	Logger *slog.Logger
	// RaftLogOutput, when set, receives hashicorp/raft's own log lines as
	// plain text (tests). Unset, they go through Logger (same handler, so
	// JSON under --log-format json). Either way at RaftLogLevel ("debug",
	// "info", "warn", "error").
	RaftLogOutput io.Writer
	RaftLogLevel  string

	// Metrics is the process's metrics registry: the node registers its
	// collectors (Raft, jobs, agents, per-instance backup age and RPO) and
	// its readiness check there. Nil: no metrics.
	Metrics *metrics.Registry
	// MetricsAddr, when set, serves Metrics on HOST:PORT (/metrics,
	// /healthz, /readyz, and /debug/pprof with Pprof) with the node's TLS
	// (plain HTTP under --insecure). It needs Metrics.
	MetricsAddr string
	Pprof       bool
}

// RaftConfig tunes hashicorp/raft. The defaults are raft's own, fit for a
// LAN; tests on loopback shorten the timeouts.
type RaftConfig struct {
	// A follower that hears nothing from the leader for HeartbeatTimeout
	// starts an election.
	HeartbeatTimeout time.Duration
	// A candidate that wins no election within ElectionTimeout retries.
	ElectionTimeout time.Duration
	// A leader that cannot reach a quorum for LeaderLeaseTimeout steps
	// down (this is what makes a cut-off leader refuse writes).
	LeaderLeaseTimeout time.Duration
	// CommitTimeout: the longest the leader waits before sending an
	// AppendEntries with nothing new (and so the commit latency floor when
	// idle).
	CommitTimeout time.Duration
	// Snapshot once this many entries are in the log since the last one,
	// checking every SnapshotInterval (with jitter).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// Entries kept in the log after a snapshot, so a follower a little
	// behind catches up from the log instead of a snapshot.
	TrailingLogs uint64
	// Snapshots kept on disk.
	SnapshotRetain int
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		JoinTimeout:             30 * time.Second,
		HeartbeatInterval:       5 * time.Second,
		LeaseDuration:           20 * time.Second,
		TakeoverGrace:           agentlink.ReconnectAllowance(),
		MaxAttempts:             2,
		WatermarkCommitInterval: 5 * time.Second,
		LogicalBelow:            selection.DefaultSmallBytes,
		ApplyTimeout:            10 * time.Second,
		ScheduleInterval:        500 * time.Millisecond,
		StatusInterval:          15 * time.Second,
		RetentionInterval:       10 * time.Minute,
		CopyInterval:            30 * time.Second,
		JobHistoryMax:           100000,
		JobHistoryAge:           90 * 24 * time.Hour,
		BackupTombstoneAge:      30 * 24 * time.Hour,
		PruneInterval:           10 * time.Minute,
		CopyGrace:               time.Hour,
		ReconcileInterval:       10 * time.Minute,
		ReconcileGrace:          15 * time.Minute,
		RaftLogLevel:            "info",
		TLS:                     TLSConfig{CertValidity: 30 * 24 * time.Hour, AgentCertValidity: 90 * 24 * time.Hour},
		Raft: RaftConfig{
			HeartbeatTimeout:   time.Second,
			ElectionTimeout:    time.Second,
			LeaderLeaseTimeout: 500 * time.Millisecond,
			CommitTimeout:      50 * time.Millisecond,
			SnapshotThreshold:  8192,
			SnapshotInterval:   2 * time.Minute,
			TrailingLogs:       10240,
			SnapshotRetain:     2,
		},
	}
}

// Validate checks the configuration as given (before the data directory
// fills in a restarted node's identity), one precise message per bad field.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.DataDir == "" {
		bad("--data-dir is required: the directory for the Raft log, snapshots and the node's identity")
	}
	if c.Bootstrap && len(c.Join) > 0 {
		bad("give --bootstrap (start a new cluster) or --join ADDR (join an existing one), not both")
	}
	if c.NodeID != "" && !validNodeID(c.NodeID) {
		bad("--node-id %q: use letters, digits, '.', '_' and '-' (at most 64)", c.NodeID)
	}
	for _, a := range []struct{ flag, v string }{{"--grpc-addr", c.GRPCAddr}, {"--grpc-advertise-addr", c.GRPCAdvertiseAddr}, {"--raft-addr", c.RaftAddr}, {"--raft-advertise-addr", c.RaftAdvertiseAddr}} {
		if a.v == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a.v)
		wildcard := err == nil && (host == "" || net.ParseIP(host).IsUnspecified())
		switch {
		case err != nil:
			bad("%s %q: want HOST:PORT (%v)", a.flag, a.v, err)
		case port == "" || port == "0":
			bad("%s %q: needs a fixed port: other nodes and agents dial it", a.flag, a.v)
		case a.flag == "--raft-advertise-addr" && wildcard:
			bad("--raft-advertise-addr %q: needs a concrete host, not a wildcard: the other nodes dial it", a.v)
		case a.flag == "--grpc-advertise-addr" && wildcard:
			bad("--grpc-advertise-addr %q: needs a concrete host, not a wildcard: agents, the CLI and the other nodes dial it", a.v)
		case a.flag == "--raft-addr" && wildcard && c.RaftAdvertiseAddr == "":
			bad("--raft-addr %q: a wildcard needs --raft-advertise-addr HOST:PORT, the address the other nodes dial (without it --raft-addr is advertised)", a.v)
		}
	}
	if c.GRPCAddr != "" && c.GRPCAddr == c.RaftAddr {
		bad("--grpc-addr and --raft-addr must differ (both are %s)", c.GRPCAddr)
	}
	if grpc := c.grpcAdvertise(); grpc != "" && grpc == c.RaftAdvertiseAddr {
		bad("the advertised gRPC and Raft addresses must differ (both are %s): the other nodes would send Raft traffic to the gRPC listener", grpc)
	}
	if c.Repo != "" {
		if loc, err := location.Parse(c.Repo); err != nil {
			bad("--repo: %v", err)
		} else if loc.Scheme == "relay" {
			bad("--repo %s: a controller's repository must be a backend of its own (file:// or s3://); relay:// is for agents", c.Repo)
		} else if location.Redact(c.Repo) != c.Repo {
			bad("--repo %s carries credentials: the catalog records the URI, so give agents their credentials through their environment", location.Redact(c.Repo))
		}
	}
	if c.HeartbeatInterval <= 0 {
		bad("--heartbeat-interval must be positive")
	}
	if c.LeaseDuration < 2*c.HeartbeatInterval {
		bad("--lease-duration %s must be at least twice --heartbeat-interval %s, or one late heartbeat loses a lease", c.LeaseDuration, c.HeartbeatInterval)
	}
	if c.TakeoverGrace < 0 {
		bad("--takeover-grace %s must not be negative", c.TakeoverGrace)
	}
	if c.MaxAttempts < 1 {
		bad("--max-attempts must be at least 1")
	}
	if c.WatermarkCommitInterval < 10*time.Millisecond {
		bad("--watermark-commit-interval %s: must be at least 10ms (a few seconds keeps the Raft log small)", c.WatermarkCommitInterval)
	}
	if c.ApplyTimeout <= 0 {
		bad("--apply-timeout must be positive")
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			bad("--metrics-addr %q: want HOST:PORT (%v)", c.MetricsAddr, err)
		}
		if c.MetricsAddr == c.GRPCAddr || c.MetricsAddr == c.RaftAddr {
			bad("--metrics-addr %s must differ from --grpc-addr and --raft-addr", c.MetricsAddr)
		}
	}
	if c.Pprof && c.MetricsAddr == "" {
		bad("--pprof needs --metrics-addr: the profiles are served there")
	}
	if c.ScheduleInterval < 10*time.Millisecond {
		bad("--schedule-interval %s: must be at least 10ms", c.ScheduleInterval)
	}
	if c.RetentionInterval < 10*time.Millisecond {
		bad("--retention-interval %s: must be at least 10ms", c.RetentionInterval)
	}
	if c.CopyInterval < 10*time.Millisecond {
		bad("--copy-interval %s: must be at least 10ms", c.CopyInterval)
	}
	if c.ReconcileInterval != 0 && c.ReconcileInterval < 10*time.Millisecond {
		bad("--reconcile-interval %s: must be at least 10ms, or 0 to turn the sweep off", c.ReconcileInterval)
	}
	if c.ReconcileGrace < 0 {
		bad("--reconcile-grace %s: must not be negative", c.ReconcileGrace)
	}
	if c.JobHistoryAge < 0 {
		bad("--job-history-age %s: must not be negative (0 keeps finished jobs of any age)", c.JobHistoryAge)
	}
	if c.BackupTombstoneAge < 0 {
		bad("--backup-tombstone-age %s: must not be negative (0 removes a deleted backup's record at once)", c.BackupTombstoneAge)
	}
	if c.PruneInterval < 10*time.Millisecond {
		bad("--prune-interval %s: must be at least 10ms", c.PruneInterval)
	}
	if c.CopyGrace < 0 {
		bad("--copy-grace %s: must not be negative", c.CopyGrace)
	}
	if c.StatusInterval < 10*time.Millisecond {
		bad("--status-interval %s: must be at least 10ms", c.StatusInterval)
	}
	for _, u := range c.Webhooks {
		if err := checkWebhookURL(u); err != nil {
			bad("--webhook %s: %v", u, err)
		}
	}
	if c.JoinTimeout <= 0 {
		bad("--join-timeout must be positive")
	}
	if err := c.TLS.validate(); err != nil {
		errs = append(errs, err)
	}
	r := c.Raft
	switch {
	case r.HeartbeatTimeout < 5*time.Millisecond:
		bad("--raft-heartbeat-timeout %s is below 5ms", r.HeartbeatTimeout)
	case r.ElectionTimeout < r.HeartbeatTimeout:
		bad("--raft-election-timeout %s must be at least --raft-heartbeat-timeout %s", r.ElectionTimeout, r.HeartbeatTimeout)
	case r.LeaderLeaseTimeout < 5*time.Millisecond || r.LeaderLeaseTimeout > r.HeartbeatTimeout:
		bad("--raft-leader-lease-timeout %s must be between 5ms and --raft-heartbeat-timeout %s", r.LeaderLeaseTimeout, r.HeartbeatTimeout)
	}
	if r.CommitTimeout < time.Millisecond {
		bad("raft commit timeout %s is below 1ms", r.CommitTimeout)
	}
	if r.SnapshotThreshold < 1 || r.SnapshotInterval < 5*time.Millisecond {
		bad("--raft-snapshot-threshold must be at least 1 and --raft-snapshot-interval at least 5ms")
	}
	if r.SnapshotRetain < 1 {
		bad("raft snapshot retain must be at least 1")
	}
	switch strings.ToLower(c.RaftLogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("--raft-log-level %q: use debug, info, warn or error", c.RaftLogLevel)
	}
	return errors.Join(errs...)
}

// grpcAdvertise is the gRPC address the flags publish.
func (c *Config) grpcAdvertise() string {
	if c.GRPCAdvertiseAddr != "" {
		return c.GRPCAdvertiseAddr
	}
	return c.GRPCAddr
}

func validNodeID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '.' && r != '_' && r != '-' {
			return false
		}
	}
	return true
}

package cli

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/controller/client"
	"github.com/tidemark-backup/tidemark/controller/scheduler"
	"github.com/tidemark-backup/tidemark/internal/logadapt"
	"github.com/tidemark-backup/tidemark/internal/metrics"
)

func newControllerCmd(s *streams) *cobra.Command {
	cfg := controller.DefaultConfig()
	var (
		join      string
		joinToken string
		logLevel  string
		logFormat string
		cfgFile   string
		// memoryLimitFlag: --memory-limit (memlimit.go).
		memoryLimitFlag string
		// testClockFile: the hidden --test-clock-file.
		testClockFile string
	)
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run a controller node: the Raft-replicated catalog, job scheduling and the agents' endpoint",
		Long: `Run one controller node. The first node of a cluster starts it with
--bootstrap; the others --join the gRPC address of any running node. The data
directory remembers the node's id and addresses, so a restart needs only
--data-dir. Three or five nodes tolerate the loss of one or two.

--raft-addr is where the Raft transport listens and, by default, the
address the other nodes dial. Where they must dial another one (NAT, a
container's published port, a proxy in front of the node), give it as
--raft-advertise-addr; --raft-addr may then be a wildcard (0.0.0.0:7401).
The advertised address is in the cluster's configuration: changing it
later is a membership change (tidemark cluster remove-member, then join
from an empty --data-dir), not a flag. Likewise --grpc-addr is where the
gRPC server listens and, by default, the address the cluster tells agents,
the CLI and the other nodes (a follower names the leader's); give
--grpc-advertise-addr when they must dial another one, and always with a
wildcard --grpc-addr.

  tidemark controller --node-id c1 --data-dir /var/lib/tidemark/c1 \
      --grpc-addr 10.0.0.1:7400 --raft-addr 10.0.0.1:7401 --bootstrap
  tidemark controller --node-id c2 --data-dir /var/lib/tidemark/c2 \
      --grpc-addr 10.0.0.2:7400 --raft-addr 10.0.0.2:7401 --join 10.0.0.1:7400

Every connection is mutual TLS. Either the cluster makes its own CA at
--bootstrap, its key sealed with --ca-key-file (created when missing; give
every node the same file and nobody else), and writes an admin credential for
the CLI under DATA_DIR/tls/admin; or every node gets --tls-ca/--tls-cert/--tls-key
from your own CA, its certificate naming tidemark://controller/NODE_ID.
--insecure (plaintext) is refused unless every address is loopback.

Configuration, in rising precedence: the defaults, --config FILE (YAML, or
JSON), the environment, the flags. Every flag is a key of the file, its name
with _ for - (node_id, data_dir, raft_election_timeout, tls_ca, ...; join
takes a list), and an environment variable, TIDEMARK_ and the key in upper
case (TIDEMARK_DATA_DIR; the credential flags keep TIDEMARK_CREDENTIALS and
TIDEMARK_TLS_*). An unknown key, a value of the wrong kind or a key given
twice is refused with its line and key.

Logs go to stderr. SIGTERM stops the node: a leader first hands its
leadership to another voter (at most 5 s), so writes pause for a round trip
rather than an election timeout. A stopped node stays a member; remove one
that is gone for good with tidemark cluster remove-member.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyControllerConfig(cmd, cfgFile); err != nil {
				return &UserError{Msg: "invalid controller configuration: " + strings.ReplaceAll(err.Error(), "\n", "; "), Err: err, Code: ExitUsage}
			}
			tuneControllerGC()
			memLimit, err := resolveMemoryLimit(memoryLimitFlag, os.Getenv, "/")
			if err != nil {
				return &UserError{Msg: err.Error(), Err: err, Code: ExitUsage}
			}
			memLimit.apply()
			log, err := newLogger(s, logLevel, logFormat)
			if err != nil {
				return err
			}
			if memLimit.set && memLimit.bytes != math.MaxInt64 {
				log.Info("soft memory limit", "limit", bytesFlagText(uint64(memLimit.bytes)), "from", memLimit.from)
			} else {
				log.Info("soft memory limit", "limit", "none", "from", memLimit.from)
			}
			cfg.Join = client.Addrs(join)
			if join == "" {
				cfg.Join = nil // no fallback to $TIDEMARK_CONTROLLER: joining is explicit
			}
			files, ok, err := s.tls.resolve()
			if err != nil {
				return userErr(err)
			}
			if ok {
				cfg.TLS.Files = files
			}
			cfg.TLS.Insecure = s.tls.insecure
			if cfg.TLS.JoinToken, err = readTokenFile("--join-token", joinToken); err != nil {
				return err
			}
			cfg.Logger = log
			logadapt.RouteGRPC(log)
			// Raft's lines go through log (cfg.RaftLogOutput unset).
			if testClockFile != "" {
				cfg.Clock = scheduler.NewFileClock(testClockFile)
				log.Warn("the scheduler reads its time from --test-clock-file: for tests only", "file", testClockFile)
			}
			if cfg.MetricsAddr != "" {
				cfg.Metrics = metrics.New()
			}
			if err := cfg.Validate(); err != nil {
				return &UserError{Msg: err.Error(), Err: err, Code: ExitUsage}
			}
			srv, err := controller.Start(cmd.Context(), cfg)
			if err != nil {
				return userErr(err)
			}
			fmt.Fprintf(s.err, "controller %s serving on %s\n", srv.NodeID(), srv.Addr())
			if a := srv.MetricsAddr(); a != "" {
				fmt.Fprintf(s.err, "controller %s metrics on %s\n", srv.NodeID(), a)
			}
			<-cmd.Context().Done()
			// A leader hands its leadership to another voter before it
			// goes, so the cluster accepts writes again within a round
			// trip instead of after an election timeout.
			hctx, cancel := context.WithTimeout(context.Background(), handOffTimeout)
			if to, err := srv.HandOff(hctx); err != nil {
				log.Warn("leadership not handed off; the other nodes will elect a leader after the election timeout", "err", err)
			} else if to != "" {
				log.Info("leadership handed off before stopping", "leader", to)
			}
			cancel()
			srv.Shutdown()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.NodeID, "node-id", "", "this node's id, unique in the cluster (remembered in --data-dir)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the Raft log, snapshots and the node's identity")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", "", "HOST:PORT the gRPC server listens on, for agents, the CLI and other nodes; also the address the cluster tells them unless --grpc-advertise-addr is given (remembered)")
	f.StringVar(&cfg.GRPCAdvertiseAddr, "grpc-advertise-addr", "",
		"HOST:PORT the cluster tells agents, the CLI and the other nodes to dial for this node when it is not --grpc-addr (NAT, a proxy; needed when --grpc-addr is a wildcard); not a wildcard (remembered; default: --grpc-addr)")
	f.StringVar(&cfg.RaftAddr, "raft-addr", "", "HOST:PORT the Raft transport listens on, and the address the other nodes dial unless --raft-advertise-addr is given (remembered)")
	f.StringVar(&cfg.RaftAdvertiseAddr, "raft-advertise-addr", "",
		"HOST:PORT the other nodes dial for Raft when it is not --raft-addr (NAT, a published container port, a proxy; --raft-addr may then be a wildcard such as 0.0.0.0:7401); not a wildcard (remembered; default: --raft-addr)")
	f.BoolVar(&cfg.Bootstrap, "bootstrap", false, "start a new cluster with this node as its first member (new data dir only)")
	f.StringVar(&join, "join", "", "join the cluster through this gRPC address (comma-separated list: tried in turn; new data dir only)")
	f.DurationVar(&cfg.JoinTimeout, "join-timeout", cfg.JoinTimeout, "how long --join keeps trying while the cluster has no leader or cannot be reached")
	f.StringVar(&cfg.Repo, "repo", "", "default repository URI for backups, sent to agents (no credentials), and served to relay:// agents; give every node the same; empty: each agent's own --repo")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "how often agents heartbeat")
	f.DurationVar(&cfg.LeaseDuration, "lease-duration", cfg.LeaseDuration, "how long a job lease and an agent session live without a heartbeat")
	f.DurationVar(&cfg.TakeoverGrace, "takeover-grace", cfg.TakeoverGrace,
		"added to --lease-duration for the leases a new leader inherits: the time agents may need to notice the old leader's death and reconnect")
	f.Uint32Var(&cfg.MaxAttempts, "max-attempts", cfg.MaxAttempts, "attempts per job (a lost lease starts the next one)")
	f.DurationVar(&cfg.WatermarkCommitInterval, "watermark-commit-interval", cfg.WatermarkCommitInterval,
		"least time between two Raft commits of the binlog streams' watermarks (agents report them with every heartbeat)")
	f.Var((*sizeFlag)(&cfg.LogicalBelow), "logical-below", "engine selection ranks the logical engine first for an instance with less data than this (0: rank by engine alone)")
	f.DurationVar(&cfg.ApplyTimeout, "apply-timeout", cfg.ApplyTimeout, "longest a write waits for a Raft commit before it fails as unavailable")
	f.DurationVar(&cfg.Raft.HeartbeatTimeout, "raft-heartbeat-timeout", cfg.Raft.HeartbeatTimeout, "Raft: follower timeout before an election")
	f.DurationVar(&cfg.Raft.ElectionTimeout, "raft-election-timeout", cfg.Raft.ElectionTimeout, "Raft: candidate timeout before a new election")
	f.DurationVar(&cfg.Raft.LeaderLeaseTimeout, "raft-leader-lease-timeout", cfg.Raft.LeaderLeaseTimeout, "Raft: a leader without quorum contact for this long steps down")
	f.DurationVar(&cfg.Raft.CommitTimeout, "raft-commit-timeout", cfg.Raft.CommitTimeout, "Raft: longest wait before an idle AppendEntries")
	f.Uint64Var(&cfg.Raft.SnapshotThreshold, "raft-snapshot-threshold", cfg.Raft.SnapshotThreshold, "Raft: snapshot after this many new log entries")
	f.DurationVar(&cfg.Raft.SnapshotInterval, "raft-snapshot-interval", cfg.Raft.SnapshotInterval, "Raft: how often to check the snapshot threshold")
	f.Uint64Var(&cfg.Raft.TrailingLogs, "raft-trailing-logs", cfg.Raft.TrailingLogs, "Raft: log entries kept after a snapshot")
	f.StringArrayVar(&cfg.Webhooks, "webhook", nil, "URL the leader POSTs a JSON alert to on a job failure, an RPO breach, a binlog gap (once per gap, with its range), a binlog stream newly failing and a policy newly unmet (repeatable; retried with backoff)")
	f.DurationVar(&cfg.ScheduleInterval, "schedule-interval", cfg.ScheduleInterval, "how often the leader's scheduler looks for due policy runs")
	f.DurationVar(&cfg.RetentionInterval, "retention-interval", cfg.RetentionInterval, "how often the leader applies the policies' retention and their copies' retention (and at once when a policy changes)")
	f.DurationVar(&cfg.ReconcileInterval, "reconcile-interval", cfg.ReconcileInterval, "how often the leader submits reconcile jobs deleting the manifests that refused or superseded backup attempts left (0: never)")
	f.DurationVar(&cfg.ReconcileGrace, "reconcile-grace", cfg.ReconcileGrace, "how long after a backup job ended its attempts' manifests are left alone by the reconcile sweep")
	f.DurationVar(&cfg.CopyInterval, "copy-interval", cfg.CopyInterval, "how often the leader submits the copy jobs the policies' copies still need")
	f.Uint32Var(&cfg.JobHistoryMax, "job-history-max", cfg.JobHistoryMax, "finished job records the catalog keeps, newest first (0: no bound); jobs a live backup or a binlog stream refers to and each schedule's last run are kept beyond it")
	f.DurationVar(&cfg.JobHistoryAge, "job-history-age", cfg.JobHistoryAge, "remove finished job records older than this (2160h: 90 days; 0: no bound by age), with the same exceptions as --job-history-max")
	f.DurationVar(&cfg.BackupTombstoneAge, "backup-tombstone-age", cfg.BackupTombstoneAge, "how long the record of a deleted backup (its manifest expired) stays in the catalog, listed by ListBackups with status DELETED (720h: 30 days; 0: removed at once)")
	f.DurationVar(&cfg.PruneInterval, "prune-interval", cfg.PruneInterval, "how often the leader applies --job-history-max, --job-history-age and --backup-tombstone-age")
	f.DurationVar(&cfg.CopyGrace, "copy-grace", cfg.CopyGrace, "how long after a backup finished `tidemark status` reports its missing policy copy as \"copy behind\"")
	f.DurationVar(&cfg.StatusInterval, "status-interval", cfg.StatusInterval, "how often the leader evaluates the policies for webhook alerts")
	f.StringVar(&testClockFile, "test-clock-file", "", "TESTS ONLY: the scheduler reads the time from this file (RFC 3339) instead of the wall clock")
	_ = f.MarkHidden("test-clock-file")
	f.StringVar(&cfg.RaftLogLevel, "raft-log-level", cfg.RaftLogLevel, "level of hashicorp/raft's own log lines: debug, info, warn or error")
	f.StringVar(&cfg.TLS.CAKeyFile, "ca-key-file", "", "file sealing the cluster CA's key (at least 32 random bytes; created at --bootstrap when missing); the same on every node")
	f.StringVar(&joinToken, "join-token", "", "file holding a join token (tidemark token create --role controller): with --join, fetches the cluster's CA (opened with --ca-key-file)")
	f.DurationVar(&cfg.TLS.AgentCertValidity, "agent-cert-validity", cfg.TLS.AgentCertValidity, "life of the certificate an agent gets for a join token")
	f.DurationVar(&cfg.TLS.CertValidity, "cert-validity", cfg.TLS.CertValidity, "life of the node certificates the cluster CA issues (renewed two thirds in)")
	f.StringVar(&memoryLimitFlag, "memory-limit", "auto",
		"soft limit of the Go heap (runtime/debug.SetMemoryLimit): past it the collector runs more often, nothing fails; auto: GOMEMLIMIT if set, else 90% of the cgroup's memory limit, else none; 0: none; or a size (1536MiB, 2GiB)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&cfgFile, "config", "", "config file (YAML or JSON): every flag as a key, its name with _ for - (flags and TIDEMARK_* environment override it)")
	addMetricsFlags(f, &cfg.MetricsAddr, &cfg.Pprof)
	return cmd
}

// handOffTimeout bounds the leadership transfer of a stopping leader: a
// service manager's stop timeout (systemd: 90 s) must not be reached.
const handOffTimeout = 5 * time.Second

// addMetricsFlags registers --metrics-addr and --pprof (controller, agent,
// dev).
func addMetricsFlags(f *pflag.FlagSet, addr *string, pprof *bool) {
	f.StringVar(addr, "metrics-addr", "", "HOST:PORT serving /metrics, /healthz and /readyz (HTTPS with the daemon's certificate; /metrics needs a client certificate of the cluster CA; plain HTTP under --insecure)")
	f.BoolVar(pprof, "pprof", false, "also serve Go's profiler on --metrics-addr under /debug/pprof/ (needs a client certificate too)")
}

// controllerGCPercent is the controller's GOGC unless the environment sets
// one. A controller's heap is mostly the long-lived catalog, and every
// collection rescans it: at the default of 100, collection took about a
// third of a busy leader's CPU, and writes waited for it (16 writers: p99
// 23 ms at 100, 16-19 ms at 200). The memory cost is one more catalog's
// worth of garbage between collections (2,000 agents: about 150 MiB).
const controllerGCPercent = 200

func tuneControllerGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(controllerGCPercent)
	}
}

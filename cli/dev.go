package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/tidemark-backup/tidemark/agent"
	"github.com/tidemark-backup/tidemark/controller"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/logadapt"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
)

// devAgentName names the dev agent and so its instance.
const devAgentName = "local"

// devAgentCertValidity is the life of the dev agent's certificate (issued
// at every start).
const devAgentCertValidity = 30 * 24 * time.Hour

func newDevCmd(s *streams) *cobra.Command {
	var (
		dataDir      string
		dsn          string
		grpcAddr     string
		logLevel     string
		logFormat    string
		parallel     int
		heartbeat    time.Duration
		lease        time.Duration
		output       string
		logicalBelow uint64
		metrAddr     string
		pprof        bool
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a one-process fleet: a single-node controller, a file repository and a local agent",
		Long: `Run a single-node controller (bootstrapped on first start), a file://
repository under --data-dir (created if missing, unencrypted) and an agent
named "local" serving --mysql, all in this process. The controller's address
and the admin credential for the CLI are printed on stdout; point the other
commands at them:

  tidemark dev --mysql 'root@tcp(127.0.0.1:3306)/' &
  export TIDEMARK_CONTROLLER=127.0.0.1:7400
  export TIDEMARK_CREDENTIALS=tidemark-dev/controller/tls/admin
  tidemark backup --instance local --wait
  tidemark backups --instance local

Every connection is mutual TLS under a CA the dev cluster makes on first
start (its key sealed with DATA_DIR/ca.key); --insecure runs plaintext
instead (loopback only). A restart with the same --data-dir keeps the
catalog, the CA and the repository.
SIGINT or SIGTERM stops the agent, then the controller. -o json prints one
object instead: "controller" (the address), "credentials" (the admin
credential's directory; null with --insecure), "repository", "data_dir" and
"agent".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tuneControllerGC()
			ctx := cmd.Context()
			if err := checkOutput(output); err != nil {
				return err
			}
			if dsn == "" {
				return &UserError{Code: ExitUsage, Msg: "--mysql DSN is required: the server the local agent backs up, e.g. --mysql 'root@tcp(127.0.0.1:3306)/'"}
			}
			if err := refuseArgvDSN(cmd, "mysql", dsn); err != nil {
				return err
			}
			if _, err := mysqlx.ParseDSN(dsn); err != nil {
				return userErr(err)
			}
			log, err := newLogger(s, logLevel, logFormat)
			if err != nil {
				return err
			}
			dataDir, err = filepath.Abs(dataDir)
			if err != nil {
				return userErr(err)
			}
			repoDir := filepath.Join(dataDir, "repo")
			repoURI := (&url.URL{Scheme: "file", Path: repoDir}).String()
			if err := devRepo(ctx, repoDir, repoURI); err != nil {
				return err
			}
			cfg := controller.DefaultConfig()
			cfg.DataDir = filepath.Join(dataDir, "controller")
			cfg.Repo = repoURI
			cfg.HeartbeatInterval, cfg.LeaseDuration = heartbeat, lease
			cfg.LogicalBelow = logicalBelow
			// Loopback-fast Raft: one node elects itself at once.
			cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
			cfg.Raft.CommitTimeout = 10 * time.Millisecond
			cfg.Logger, cfg.RaftLogLevel = log, "warn"
			logadapt.RouteGRPC(log)
			// One registry for the controller and the agent of this
			// process, served by the controller on --metrics-addr;
			// /readyz checks both.
			var reg *metrics.Registry
			if metrAddr != "" {
				reg = metrics.New()
			}
			cfg.Metrics, cfg.MetricsAddr, cfg.Pprof = reg, metrAddr, pprof
			// The dev cluster makes its own CA; its key is sealed with a
			// file beside the controller's data.
			if s.tls.insecure {
				cfg.TLS.Insecure = true
			} else {
				cfg.TLS.CAKeyFile = filepath.Join(dataDir, "ca.key")
			}
			if _, err := os.Stat(filepath.Join(cfg.DataDir, "node.json")); errors.Is(err, os.ErrNotExist) {
				raftAddr, err := freeLoopback()
				if err != nil {
					return userErr(err)
				}
				cfg.NodeID, cfg.GRPCAddr, cfg.RaftAddr, cfg.Bootstrap = "dev", grpcAddr, raftAddr, true
				// A wildcard --grpc-addr (agents elsewhere may dial in)
				// still needs an address to publish: this machine's
				// loopback, what the CLI beside it dials.
				if host, port, err := net.SplitHostPort(grpcAddr); err == nil && (host == "" || net.ParseIP(host).IsUnspecified()) {
					cfg.GRPCAdvertiseAddr = net.JoinHostPort("127.0.0.1", port)
				}
			} else if cmd.Flags().Changed("grpc-addr") {
				cfg.GRPCAddr = grpcAddr // a different address is refused with the remembered one
			}
			if err := cfg.Validate(); err != nil {
				return userErr(err)
			}
			srv, err := controller.Start(ctx, cfg)
			if err != nil {
				return userErr(err)
			}
			defer srv.Shutdown()
			fmt.Fprintf(s.err, "tidemark dev: controller %s, repository %s, agent %q serving %s\n", srv.Addr(), repoURI, devAgentName, redactDSN(dsn))
			var adminCreds any // JSON null with --insecure
			if !s.tls.insecure {
				adminCreds = controller.AdminCredentials(cfg.DataDir)
			}
			if output == "json" {
				if err := json.NewEncoder(s.out).Encode(map[string]any{
					"controller": srv.Addr(), "credentials": adminCreds, "repository": repoURI,
					"data_dir": dataDir, "agent": devAgentName, "metrics": srv.MetricsAddr(),
				}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(s.out, "controller %s\n", srv.Addr())
				fmt.Fprintf(s.out, "export %s=%s\n", "TIDEMARK_CONTROLLER", srv.Addr())
				if adminCreds != nil {
					fmt.Fprintf(s.out, "export %s=%s\n", envCredentials, adminCreds)
				}
				if a := srv.MetricsAddr(); a != "" {
					fmt.Fprintf(s.out, "metrics %s\n", a)
				}
			}
			var agentCreds tlsx.Files
			if !s.tls.insecure {
				// The local agent's credential, issued afresh at every start.
				cred, err := srv.Issue(tlsx.Identity{Kind: tlsx.KindAgent, Name: devAgentName}, devAgentCertValidity)
				if err != nil {
					return userErr(err)
				}
				dir := filepath.Join(dataDir, "agent-credentials")
				if err := cred.WriteDir(dir); err != nil {
					return userErr(err)
				}
				agentCreds = tlsx.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")}
			}

			acfg := agent.DefaultConfig()
			acfg.Controllers = []string{srv.Addr()}
			acfg.Name = devAgentName
			acfg.Labels = map[string]string{"env": "dev"}
			acfg.TLS, acfg.Insecure = agentCreds, s.tls.insecure
			acfg.MySQL, acfg.Repo, acfg.Parallel = dsn, repoURI, parallel
			acfg.HeartbeatInterval = heartbeat
			acfg.BackoffMin, acfg.BackoffMax = 100*time.Millisecond, 2*time.Second
			acfg.Logger = log
			acfg.Metrics = reg
			acfg.BinlogStreamer, acfg.PITRRestorer, acfg.Engines = s.wiring.BinlogStreamer, s.wiring.PITRRestorer, s.wiring.Engines
			if err := acfg.Validate(); err != nil {
				return userErr(err)
			}
			if err := agent.Run(ctx, acfg); err != nil {
				var fe *agent.FatalError
				if errors.As(err, &fe) {
					return &UserError{Msg: fe.Msg, Err: err}
				}
				return userErr(err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "tidemark-dev", "directory for the controller's state and the file repository")
	f.StringVar(&dsn, "mysql", "", "server the local agent backs up, go-sql-driver DSN (password may come from TIDEMARK_MYSQL_PASSWORD)")
	f.StringVar(&grpcAddr, "grpc-addr", "127.0.0.1:7400", "HOST:PORT the controller serves the CLI on (remembered in --data-dir)")
	f.IntVar(&parallel, "parallel", 0, "engine workers per job (default: engine's choice)")
	f.DurationVar(&heartbeat, "heartbeat-interval", time.Second, "how often the agent heartbeats")
	f.DurationVar(&lease, "lease-duration", 10*time.Second, "how long a job lease lives without a heartbeat")
	logicalBelowFlag(cmd, &logicalBelow)
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	outputFlag(cmd, &output)
	addMetricsFlags(f, &metrAddr, &pprof)
	return cmd
}

// devRepo creates the dev repository unless it exists.
func devRepo(ctx context.Context, dir, uri string) error {
	if _, err := os.Stat(filepath.Join(dir, "config")); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return userErr(err)
	}
	st, err := location.Open(ctx, uri, location.Options{Create: true})
	if err != nil {
		return userErr(err)
	}
	defer func() { _ = st.Close() }()
	repo, err := archive.Init(ctx, st, archive.InitOptions{})
	if err != nil {
		if errors.Is(err, archive.ErrRepoExists) {
			return nil
		}
		return userErr(fmt.Errorf("creating the dev repository %s: %w", uri, err))
	}
	repo.Close()
	return nil
}

// freeLoopback returns a loopback address whose port is free right now.
func freeLoopback() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

func redactDSN(dsn string) string {
	d, err := mysqlx.ParseDSN(dsn)
	if err != nil {
		return "(invalid DSN)"
	}
	return d.String()
}

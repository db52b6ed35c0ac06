package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tidemark-backup/tidemark/agent"
	"github.com/tidemark-backup/tidemark/internal/logadapt"
	"github.com/tidemark-backup/tidemark/internal/metrics"
)

func newAgentCmd(s *streams) *cobra.Command {
	var (
		rf          repoFlags
		controllers string
		name        string
		labels      string
		dsn         string
		configFile  string
		parallel    int
		joinToken   string
		logLevel    string
		logFormat   string
		metricsAddr string
		pprof       bool
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent daemon on a database host: probe, register with the controller, run its jobs",
		Long: `Run the agent on a database host. It probes the server's capabilities, holds
one stream to a controller (any of --controller; it follows the leader and
reconnects with backoff), and runs the backups and restores the controller
assigns. Configuration: defaults, then --config FILE (YAML, or JSON when the
name ends in .json), then environment, then flags. The agent presents a
certificate naming it (tidemark://agent/NAME) from the cluster CA: --credentials
DIR or --tls-ca/--tls-cert/--tls-key (or tls_ca, tls_cert, tls_key in --config);
--insecure (plaintext) only towards loopback controllers. Logs go to stderr; SIGTERM
stops running jobs (they fail with "agent shutting down") and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := agent.DefaultConfig()
			cfg.BinlogStreamer, cfg.PITRRestorer, cfg.Engines = s.wiring.BinlogStreamer, s.wiring.PITRRestorer, s.wiring.Engines
			if configFile != "" {
				if err := cfg.LoadFile(configFile); err != nil {
					return userErr(err)
				}
			}
			// A flag overrides the file when given, or when its environment
			// variable supplied a default.
			flags := cmd.Flags()
			set := func(flag string) bool {
				f := flags.Lookup(flag)
				return f.Changed || f.DefValue != ""
			}
			if set("controller") {
				cfg.Controllers = splitList(controllers)
			}
			if set("name") {
				cfg.Name = name
			}
			if set("labels") {
				l, err := agent.ParseLabels(labels)
				if err != nil {
					return &UserError{Msg: err.Error(), Err: err}
				}
				cfg.Labels = l
			}
			if set("mysql") {
				if err := refuseArgvDSN(cmd, "mysql", dsn); err != nil {
					return err
				}
				cfg.MySQL = dsn
			}
			if set("repo") {
				cfg.Repo = rf.uri
			}
			if set("key-file") {
				cfg.KeyFile = rf.keyFile
			}
			if set("passphrase-file") {
				cfg.PassphraseFile = rf.passphraseFile
			}
			files, ok, err := s.tls.resolve()
			if err != nil {
				return userErr(err)
			}
			if ok {
				cfg.TLS = files
			}
			if s.tls.insecure {
				cfg.Insecure = true
			}
			if cfg.JoinToken, err = readTokenFile("--join-token", joinToken); err != nil {
				return err
			}
			if flags.Changed("parallel") {
				cfg.Parallel = parallel
			}
			if flags.Changed("metrics-addr") {
				cfg.MetricsAddr = metricsAddr
			}
			if flags.Changed("pprof") {
				cfg.Pprof = pprof
			}
			log, err := newLogger(s, logLevel, logFormat)
			if err != nil {
				return err
			}
			cfg.Logger = log
			logadapt.RouteGRPC(log)
			if cfg.MetricsAddr != "" {
				cfg.Metrics = metrics.New()
			}
			if err := cfg.Validate(); err != nil {
				return &UserError{Code: ExitUsage, Msg: "invalid agent configuration: " + strings.ReplaceAll(err.Error(), "\n", "; "), Err: err}
			}
			if err := agent.Run(cmd.Context(), cfg); err != nil {
				var fe *agent.FatalError
				if errors.As(err, &fe) {
					return &UserError{Msg: fe.Msg, Err: err}
				}
				return userErr(err)
			}
			log.Info("agent stopped")
			return nil
		},
	}
	rf.register(cmd)
	cmd.AddCommand(newAgentRevokeCmd(s))
	cmd.Flags().StringVar(&joinToken, "join-token", "", "file holding a join token (tidemark token create --role agent): gets the agent its certificate, written to --credentials DIR, when it has none")
	cmd.Flags().StringVar(&controllers, "controller", os.Getenv("TIDEMARK_CONTROLLER"), "controller gRPC addresses, host:port[,host:port...] (env TIDEMARK_CONTROLLER)")
	cmd.Flags().StringVar(&name, "name", "", "unique agent name in the fleet; also names the --mysql instance (default: the host name)")
	cmd.Flags().StringVar(&labels, "labels", "", "agent labels, k=v[,k=v...], matched by policy selectors")
	cmd.Flags().StringVar(&dsn, "mysql", "", "server to back up, go-sql-driver DSN: user:pass@tcp(host:port)/ or user@unix(/path)/ (password may come from TIDEMARK_MYSQL_PASSWORD)")
	cmd.Flags().StringVar(&configFile, "config", "", "config file (YAML or JSON): controllers, name, labels, mysql, instances (name: DSN), repo, timers, metrics_addr, pprof")
	cmd.Flags().IntVar(&parallel, "parallel", 0, "engine workers per job when the job does not say (default: engine's choice)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	addMetricsFlags(cmd.Flags(), &metricsAddr, &pprof)
	return cmd
}

// newLogger builds the daemon's structured logger on stderr.
func newLogger(s *streams, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--log-level %q: use debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(s.err, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(s.err, opts)), nil
	}
	return nil, &UserError{Code: ExitUsage, Msg: fmt.Sprintf("--log-format %q: use text or json", format)}
}

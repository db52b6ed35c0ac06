package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/agentlink"
	"github.com/tidemark-backup/tidemark/internal/configfile"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
)

// Config is everything the agent runs with. It flows one way: DefaultConfig,
// then a config file (LoadFile), then flags; Run validates it.
type Config struct {
	// Controllers are the controller nodes' gRPC addresses (host:port); the
	// agent holds a stream to one of them, whichever answers.
	Controllers []string
	// Name is the agent's unique name in the fleet (default: host name).
	Name   string
	Labels map[string]string
	// MySQL is the DSN of the server the agent backs up; that instance is
	// named after the agent.
	MySQL string
	// Instances are further servers, catalog name → DSN (config file only).
	Instances map[string]string
	// Repo is the repository backups go to unless a job names another.
	Repo           string
	KeyFile        string
	PassphraseFile string
	// TLS is the agent's credential: the cluster CA and a certificate
	// naming this agent (tidemark://agent/NAME). Insecure instead dials
	// plaintext, only to loopback controllers.
	TLS      tlsx.Files
	Insecure bool
	// JoinToken (tidemark token create --role agent) gets the agent its
	// certificate, written to the TLS files, when it has none yet.
	JoinToken string

	// Parallel is the engine's worker count when a job does not set one;
	// 0 lets the engine choose.
	Parallel int

	// HeartbeatInterval is used until the controller's Registered says
	// otherwise.
	HeartbeatInterval time.Duration
	// ConnectTimeout bounds one attempt to reach a controller and register.
	ConnectTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between rounds of attempts
	// over every controller (doubling, with jitter). While the agent holds
	// a lease the wait never exceeds agentlink.BackoffMax, whatever
	// BackoffMax says: the new leader keeps inherited leases only for the
	// time PROTOCOL.md works out from that cap.
	BackoffMin, BackoffMax time.Duration
	// ProgressInterval is the least time between two progress reports of
	// one job.
	ProgressInterval time.Duration
	// ProbeTimeout bounds each capability probe.
	ProbeTimeout time.Duration
	// ReprobeInterval is how often the agent probes its instances again
	// while connected; a change is reported to the controller, whose
	// engine selection re-decides (an agent also probes at every connect).
	ReprobeInterval time.Duration
	// RenewCheckInterval is how often the agent checks whether its
	// certificate is due for renewal (two thirds into its life).
	RenewCheckInterval time.Duration
	// ShutdownTimeout bounds how long a stopping agent waits for its jobs
	// to stop and their results to be acknowledged.
	ShutdownTimeout time.Duration

	// StreamBackoffMin and StreamBackoffMax bound the wait before a failed
	// binlog stream is started again (doubling; back to the minimum after
	// a run that made progress).
	StreamBackoffMin, StreamBackoffMax time.Duration

	// BinlogStreamer runs binlog stream jobs and PITRRestorer point-in-time
	// restore jobs: the binlog engine, wired in by the binary (the agent
	// package does not import it). Nil: such jobs fail (a stream keeps
	// retrying with the error visible in `tidemark jobs`).
	BinlogStreamer BinlogStreamer
	PITRRestorer   PITRRestorer
	// Engines are the backup engines the agent runs jobs with; nil means
	// the logical engine alone.
	Engines *engines.Registry

	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger

	// Metrics is the process's metrics registry: the agent records its
	// jobs and repository operations there and adds its readiness check.
	// Nil with MetricsAddr set: the agent makes one. Nil without: none.
	Metrics *metrics.Registry
	// MetricsAddr, when set, serves the metrics on HOST:PORT (/metrics,
	// /healthz, /readyz; /debug/pprof with Pprof), HTTPS with the agent's
	// certificate, plain HTTP under Insecure.
	MetricsAddr string
	Pprof       bool
	// RepoCheckInterval is how often readiness re-checks that the
	// repository is reachable (with MetricsAddr or Metrics set).
	RepoCheckInterval time.Duration

	// probeMaxAge is how old a probe a Register reuses; 0 means
	// defaultProbeMaxAge (tests shorten it).
	probeMaxAge time.Duration
}

// DefaultConfig is the start of the configuration chain.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Name:               host,
		HeartbeatInterval:  5 * time.Second,
		ConnectTimeout:     agentlink.ConnectTimeout,
		BackoffMin:         500 * time.Millisecond,
		BackoffMax:         agentlink.BackoffMax,
		ProgressInterval:   time.Second,
		ProbeTimeout:       15 * time.Second,
		ReprobeInterval:    10 * time.Minute,
		ShutdownTimeout:    30 * time.Second,
		RenewCheckInterval: renewCheckInterval,
		StreamBackoffMin:   time.Second,
		StreamBackoffMax:   time.Minute,
		RepoCheckInterval:  30 * time.Second,
	}
}

// LogValue shows the configuration without any password.
func (c Config) LogValue() slog.Value {
	inst := make([]string, 0, len(c.Instances)+1)
	for _, n := range c.instanceNames() {
		inst = append(inst, n+"="+redactDSN(c.instanceDSN(n)))
	}
	return slog.GroupValue(
		slog.Any("controllers", c.Controllers),
		slog.String("name", c.Name),
		slog.Any("labels", c.Labels),
		slog.Any("instances", inst),
		slog.String("repo", location.Redact(c.Repo)),
		slog.String("metrics_addr", c.MetricsAddr),
	)
}

func redactDSN(dsn string) string {
	d, err := mysqlx.ParseDSN(dsn)
	if err != nil {
		return "(invalid DSN)"
	}
	return d.String()
}

// instanceNames lists the instances in a stable order: the agent's own first.
func (c Config) instanceNames() []string {
	var names []string
	for n := range c.Instances {
		names = append(names, n)
	}
	slices.Sort(names)
	if c.MySQL != "" {
		names = append([]string{c.Name}, names...)
	}
	return names
}

func (c Config) instanceDSN(name string) string {
	if c.MySQL != "" && name == c.Name {
		return c.MySQL
	}
	return c.Instances[name]
}

// fileKeys are the config file's keys, each with what it sets. Keys not
// listed here are refused.
var fileKeys = map[string]func(c *Config, e configfile.Entry) string{
	"controllers": func(c *Config, e configfile.Entry) string { return setList(&c.Controllers, e) },
	"name":        func(c *Config, e configfile.Entry) string { return setString(&c.Name, e) },
	"labels":      func(c *Config, e configfile.Entry) string { return setMap(&c.Labels, e) },
	"mysql":       func(c *Config, e configfile.Entry) string { return setString(&c.MySQL, e) },
	"instances":   func(c *Config, e configfile.Entry) string { return setMap(&c.Instances, e) },
	"repo":        func(c *Config, e configfile.Entry) string { return setString(&c.Repo, e) },
	"key_file":    func(c *Config, e configfile.Entry) string { return setString(&c.KeyFile, e) },
	"passphrase_file": func(c *Config, e configfile.Entry) string {
		return setString(&c.PassphraseFile, e)
	},
	"tls_ca":   func(c *Config, e configfile.Entry) string { return setString(&c.TLS.CA, e) },
	"tls_cert": func(c *Config, e configfile.Entry) string { return setString(&c.TLS.Cert, e) },
	"tls_key":  func(c *Config, e configfile.Entry) string { return setString(&c.TLS.Key, e) },
	"insecure": func(c *Config, e configfile.Entry) string {
		return setScalar(e, "true or false", func(v string) bool {
			b, err := strconv.ParseBool(v)
			c.Insecure = c.Insecure || b
			return err == nil
		})
	},
	"parallel": func(c *Config, e configfile.Entry) string {
		return setScalar(e, "a whole number", func(v string) bool {
			n, err := strconv.Atoi(v)
			c.Parallel = n
			return err == nil
		})
	},
	"heartbeat_interval": func(c *Config, e configfile.Entry) string { return setDuration(&c.HeartbeatInterval, e) },
	"connect_timeout":    func(c *Config, e configfile.Entry) string { return setDuration(&c.ConnectTimeout, e) },
	"backoff_min":        func(c *Config, e configfile.Entry) string { return setDuration(&c.BackoffMin, e) },
	"backoff_max":        func(c *Config, e configfile.Entry) string { return setDuration(&c.BackoffMax, e) },
	"progress_interval":  func(c *Config, e configfile.Entry) string { return setDuration(&c.ProgressInterval, e) },
	"probe_timeout":      func(c *Config, e configfile.Entry) string { return setDuration(&c.ProbeTimeout, e) },
	"reprobe_interval":   func(c *Config, e configfile.Entry) string { return setDuration(&c.ReprobeInterval, e) },
	"shutdown_timeout":   func(c *Config, e configfile.Entry) string { return setDuration(&c.ShutdownTimeout, e) },
	"stream_backoff_min": func(c *Config, e configfile.Entry) string { return setDuration(&c.StreamBackoffMin, e) },
	"stream_backoff_max": func(c *Config, e configfile.Entry) string { return setDuration(&c.StreamBackoffMax, e) },
	"metrics_addr":       func(c *Config, e configfile.Entry) string { return setString(&c.MetricsAddr, e) },
	"pprof": func(c *Config, e configfile.Entry) string {
		return setScalar(e, "true or false", func(v string) bool {
			b, err := strconv.ParseBool(v)
			c.Pprof = c.Pprof || b
			return err == nil
		})
	},
}

// setScalar checks e holds one value and parses it with set (false: not
// of the kind want); it returns what was wrong, or "". An empty or null
// value sets nothing.
func setScalar(e configfile.Entry, want string, set func(string) bool) string {
	if e.List || e.Map != nil {
		return "expected " + want + ", got " + e.Kind()
	}
	if len(e.Values) == 0 || e.Values[0] == "" {
		return "" // null or empty: the value stays as it was
	}
	if !set(e.Values[0]) {
		return fmt.Sprintf("%q: expected %s", e.Values[0], want)
	}
	return ""
}

func setString(dst *string, e configfile.Entry) string {
	return setScalar(e, "one value", func(v string) bool { *dst = v; return true })
}

func setDuration(dst *time.Duration, e configfile.Entry) string {
	return setScalar(e, "a duration such as 5s or 1m", func(v string) bool {
		d, err := time.ParseDuration(v)
		*dst = d
		return err == nil
	})
}

func setList(dst *[]string, e configfile.Entry) string {
	switch {
	case e.Map != nil:
		return "expected a list, got " + e.Kind()
	case e.List:
		*dst = e.Values
	case len(e.Values) == 1:
		*dst = splitComma(e.Values[0]) // a comma-separated string, as on the command line
	}
	return ""
}

func setMap(dst *map[string]string, e configfile.Entry) string {
	if e.Map == nil && len(e.Values) > 0 || e.List {
		return "expected name: value pairs, got " + e.Kind()
	}
	if e.Map != nil {
		*dst = e.Map
	}
	return ""
}

func splitComma(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// LoadFile applies a YAML or JSON config file over c: every key present
// replaces c's value. An unknown key or a value of the wrong kind is an
// error naming the file, the line and the key (configfile reads the file
// for the agent and the controller alike).
func (c *Config) LoadFile(path string) error {
	entries, err := configfile.Read(path)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		set, ok := fileKeys[e.Key]
		if !ok {
			errs = append(errs, &configfile.Error{Path: path, Line: e.Line,
				Msg: fmt.Sprintf("unknown key %q (the keys are %s)", e.Key, strings.Join(slices.Sorted(maps.Keys(fileKeys)), ", "))})
			continue
		}
		if msg := set(c, e); msg != "" {
			errs = append(errs, &configfile.Error{Path: path, Line: e.Line, Key: e.Key, Msg: msg})
		}
	}
	return errors.Join(errs...)
}

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	instanceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$`)
	labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)
)

// ParseLabels parses "k=v,k2=v2" as given to --labels.
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--labels %q: expected key=value", kv)
		}
		k = strings.TrimSpace(k)
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("--labels: key %q given twice", k)
		}
		out[k] = strings.TrimSpace(v)
	}
	return out, nil
}

// Validate checks every field and reports each bad one in its own sentence.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(c.Controllers) == 0 {
		bad("--controller: at least one controller address (host:port) is required")
	}
	for _, a := range c.Controllers {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			bad("--controller %q: expected host:port, e.g. controller-1:7070", a)
			continue
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			bad("--controller %q: port must be a number from 1 to 65535", a)
		}
	}
	switch files := c.TLS != (tlsx.Files{}); {
	case files && c.Insecure:
		bad("--insecure (plaintext) and TLS credentials both given: choose one")
	case c.JoinToken != "" && c.Insecure:
		bad("--join-token gets a certificate; --insecure uses none: choose one")
	case c.Insecure:
		if err := tlsx.RequireLoopback("--controller", c.Controllers...); err != nil {
			bad("%v", err)
		}
	case !files && c.JoinToken != "":
		bad("--join-token needs --credentials DIR (or --tls-ca/--tls-cert/--tls-key): where the agent keeps the certificate it gets")
	case !files:
		bad("no TLS credential: give --credentials DIR or --tls-ca/--tls-cert/--tls-key (a certificate naming tidemark://agent/%s), or --insecure for loopback controllers", c.Name)
	case c.TLS.CA == "" || c.TLS.Cert == "" || c.TLS.Key == "":
		bad("TLS needs all three of --tls-ca, --tls-cert and --tls-key")
	}
	if !nameRE.MatchString(c.Name) {
		bad("--name %q: an agent name is 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", c.Name)
	}
	for k, v := range c.Labels {
		if !labelKeyRE.MatchString(k) {
			bad("--labels: key %q: use letters, digits, '.', '_', '/' or '-', starting with a letter or digit", k)
		}
		if strings.ContainsAny(v, ",=\n") {
			bad("--labels: value of %q must not contain ',', '=' or a newline", k)
		}
	}
	if c.MySQL == "" && len(c.Instances) == 0 {
		bad("--mysql: a DSN (or instances in --config) is required: the agent has nothing to back up")
	}
	if c.MySQL != "" {
		if _, err := mysqlx.ParseDSN(c.MySQL); err != nil {
			bad("--mysql: %w", err)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(c.Instances)) {
		switch {
		case !instanceRE.MatchString(n):
			bad("instances: name %q: use letters, digits, '.', '_', '/' or '-', starting with a letter or digit", n)
		case c.MySQL != "" && n == c.Name:
			bad("instances: %q is the name of the --mysql instance (named after the agent): rename one of them", n)
		}
		if _, err := mysqlx.ParseDSN(c.Instances[n]); err != nil {
			bad("instances[%s]: %w", n, err)
		}
	}
	if c.Repo != "" {
		if _, err := location.Parse(c.Repo); err != nil {
			bad("--repo: %w", err)
		}
	}
	if c.KeyFile != "" && c.PassphraseFile != "" {
		bad("--key-file and --passphrase-file: give one, not both")
	}
	for flag, p := range map[string]string{"--key-file": c.KeyFile, "--passphrase-file": c.PassphraseFile} {
		if p == "" {
			continue
		}
		if c.Repo == "" {
			bad("%s: needs --repo", flag)
		}
		if _, err := os.Stat(p); err != nil {
			bad("%s: %w", flag, err)
		}
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			bad("--metrics-addr (metrics_addr) %q: want HOST:PORT (%v)", c.MetricsAddr, err)
		}
	}
	if c.Pprof && c.MetricsAddr == "" {
		bad("--pprof needs --metrics-addr (metrics_addr): the profiles are served there")
	}
	if c.Parallel < 0 {
		bad("--parallel %d: must be 0 (the engine's default) or more", c.Parallel)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"heartbeat_interval", c.HeartbeatInterval}, {"connect_timeout", c.ConnectTimeout},
		{"backoff_min", c.BackoffMin}, {"backoff_max", c.BackoffMax}, {"progress_interval", c.ProgressInterval},
		{"probe_timeout", c.ProbeTimeout}, {"reprobe_interval", c.ReprobeInterval}, {"shutdown_timeout", c.ShutdownTimeout},
		{"stream_backoff_min", c.StreamBackoffMin}, {"stream_backoff_max", c.StreamBackoffMax},
		{"renew check interval", c.RenewCheckInterval}, {"repo check interval", c.RepoCheckInterval},
	} {
		if d.v <= 0 {
			bad("%s %s: must be positive", d.name, d.v)
		}
	}
	if c.BackoffMin > 0 && c.BackoffMax < c.BackoffMin {
		bad("backoff_max %s: must be at least backoff_min (%s)", c.BackoffMax, c.BackoffMin)
	}
	if c.StreamBackoffMin > 0 && c.StreamBackoffMax < c.StreamBackoffMin {
		bad("stream_backoff_max %s: must be at least stream_backoff_min (%s)", c.StreamBackoffMax, c.StreamBackoffMin)
	}
	return errors.Join(errs...)
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/agent/probe"
	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/agentlink"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/mysqlx"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/storage/relay"
	"github.com/tidemark-backup/tidemark/internal/storage/retry"
	"github.com/tidemark-backup/tidemark/internal/tlsx"
	"github.com/tidemark-backup/tidemark/internal/version"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// leaseWatchTick is how often the agent looks for jobs whose lease has run
// out (lease.go): late by at most this much.
const leaseWatchTick = 50 * time.Millisecond

// ErrShutdown is the cause of every job the agent stops because it is
// shutting down; its text is the failure reason the controller records.
var ErrShutdown = errors.New("agent shutting down")

// FatalError is an error the agent cannot get past by reconnecting: its name
// is taken, the controller refused it, or no address is a controller. Run
// returns it; the operator has to change something.
type FatalError struct{ Msg string }

func (e *FatalError) Error() string { return e.Msg }

// Agent is one running agent daemon.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	instances map[string]*mysqlx.DSN
	dsns      map[string]string // instance name → DSN as configured
	secret    archive.Secret
	// tls is the agent's credential; nil with --insecure.
	tls    *tlsx.Source
	runCtx context.Context // jobs and the controller link live under it

	wake chan struct{} // a result is ready to send
	bg   sync.WaitGroup

	mu   sync.Mutex
	jobs map[string]*job // running, or ended with a result not yet acknowledged
	// onInstance lists, per instance, the exclusive jobs (backups and
	// restores) that have not ended, in the order they were assigned.
	onInstance map[string][]*job
	sess       *session // the live session, if any
	relayRepo  string   // the controller's --repo, from Registered
	// The lease terms of the last Registered: lease_duration, and whether
	// the controller acknowledges renewals (lease.go).
	leaseTTL     time.Duration
	leaseGrace   time.Duration // Registered.takeover_grace
	renewalAcks  bool
	shuttingDown bool
	probed       *probed

	// metrics is cfg.Metrics (or the agent's own, with MetricsAddr);
	// repoState is the last repository check readiness reports.
	metrics   *metrics.Registry
	repoState atomic.Pointer[repoCheck]
}

// Run runs the agent until ctx ends, then stops its jobs (they fail with
// "agent shutting down"), waits a bounded time for the controller to take
// their results, and returns nil. It returns early with an error only when
// the configuration is invalid or the agent cannot work at all (see
// FatalError); a lost or unreachable controller is retried forever.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	a, err := newAgent(ctx, cfg)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	a.runCtx = runCtx
	a.log.Info("agent starting", "config", cfg, "version", version.Get().String())
	if cfg.ConnectTimeout > agentlink.ConnectTimeout {
		// The controllers' default --takeover-grace counts one connect
		// timeout of agentlink's length (PROTOCOL.md, "Leadership change").
		a.log.Warn("connect_timeout is longer than the controllers' takeover grace allows for: after a silent leader death this agent's jobs may lose their leases; raise the controllers' --takeover-grace by the difference",
			"connect_timeout", cfg.ConnectTimeout, "allowed_for", agentlink.ConnectTimeout)
	}
	stopMetrics, err := a.startMetrics(runCtx)
	if err != nil {
		return err
	}
	defer stopMetrics()

	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		a.cleanLeftovers(runCtx)
	}()
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		a.leaseWatch(runCtx, leaseWatchTick)
	}()
	loopDone := make(chan error, 1)
	go func() { loopDone <- a.connectLoop(runCtx) }()
	if a.tls != nil {
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			a.renewLoop(runCtx)
		}()
	}

	var fatal error
	select {
	case <-ctx.Done():
		a.log.Info("agent shutting down: stopping jobs", "running", a.runningCount())
	case fatal = <-loopDone:
		a.log.Error("agent stopping", "err", fatal)
	}
	a.mu.Lock()
	a.shuttingDown = true
	a.mu.Unlock()
	a.stopJobs(ErrShutdown, cfg.ShutdownTimeout)
	if fatal == nil {
		// Give the controller a moment to record the results, so the
		// jobs fail now with the real reason instead of on lease expiry.
		a.awaitAcks(min(cfg.ShutdownTimeout, 5*time.Second))
	}
	stop()
	if fatal == nil {
		if err := <-loopDone; err != nil && !errors.Is(err, context.Canceled) {
			a.log.Warn("controller link ended with an error during shutdown", "err", err)
		}
	}
	a.bg.Wait()
	return fatal
}

// cleanLeftovers asks every engine that keeps state outside the
// repository (snapshots) to remove what a killed run left on each
// instance. It runs beside the connection: a slow or unreachable server
// must not delay registering.
func (a *Agent) cleanLeftovers(ctx context.Context) {
	if a.cfg.Engines == nil {
		return
	}
	for _, e := range a.cfg.Engines.All() {
		c, ok := e.(engines.Cleaner)
		if !ok {
			continue
		}
		for name, dsn := range a.dsns {
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			removed, err := c.CleanLeftovers(cctx, dsn)
			cancel()
			switch {
			case err != nil:
				a.log.Warn("could not look for what an interrupted backup left", "engine", e.Name(), "instance", name, "err", err.Error())
			case len(removed) > 0:
				a.log.Warn("removed what an interrupted backup left", "engine", e.Name(), "instance", name, "removed", removed)
			}
		}
	}
}

func newAgent(ctx context.Context, cfg Config) (*Agent, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a := &Agent{
		cfg:        cfg,
		log:        log.With("agent", cfg.Name),
		instances:  map[string]*mysqlx.DSN{},
		dsns:       map[string]string{},
		wake:       make(chan struct{}, 1),
		jobs:       map[string]*job{},
		onInstance: map[string][]*job{},
		metrics:    cfg.Metrics,
	}
	if a.metrics == nil && cfg.MetricsAddr != "" {
		a.metrics = metrics.New()
	}
	for _, n := range cfg.instanceNames() {
		// A password from the configuration file goes into a secret held
		// by mysqlx; the DSN strings the agent hands to engines, jobs and
		// logs carry none.
		dsn, err := mysqlx.StripPassword(cfg.instanceDSN(n))
		if err != nil {
			return nil, fmt.Errorf("instance %s: %w", n, err)
		}
		d, err := mysqlx.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("instance %s: %w", n, err) // Validate let it through: cannot happen
		}
		a.instances[n], a.dsns[n] = d, dsn
	}
	// The agent's copy of its configuration keeps the stripped DSNs too.
	if a.cfg.MySQL != "" {
		a.cfg.MySQL = a.dsns[a.cfg.Name]
	}
	if len(a.cfg.Instances) > 0 {
		inst := make(map[string]string, len(a.cfg.Instances))
		for n := range a.cfg.Instances {
			inst[n] = a.dsns[n]
		}
		a.cfg.Instances = inst
	}
	var err error
	if a.secret, err = readSecret(cfg.KeyFile, cfg.PassphraseFile); err != nil {
		return nil, err
	}
	if err := a.enroll(ctx); err != nil {
		return nil, err
	}
	if !cfg.Insecure {
		if a.tls, err = tlsx.FromFiles(cfg.TLS); err != nil {
			return nil, err
		}
		if id, want := a.tls.Identity(), (tlsx.Identity{Kind: tlsx.KindAgent, Name: cfg.Name}); id != want {
			return nil, fmt.Errorf("--tls-cert %s names %s, but this is %s: controllers only accept an agent under the name its certificate carries", cfg.TLS.Cert, id, want)
		}
	}
	return a, nil
}

// readSecret reads the repository key as the CLI's repository flags do.
func readSecret(keyFile, passphraseFile string) (archive.Secret, error) {
	return archive.ReadSecret(keyFile, passphraseFile)
}

// repoFor is the repository to open for a job that names uri. An agent
// whose own repository is relay:// cannot reach the controller's --repo
// directly (that is why it relays): a job naming the repository the relay
// writes to, or none, goes through the relay. Any other named repository is
// opened directly.
func (a *Agent) repoFor(uri string) string {
	if uri == "" {
		return a.cfg.Repo
	}
	if strings.HasPrefix(a.cfg.Repo, "relay://") {
		a.mu.Lock()
		target := a.relayRepo
		a.mu.Unlock()
		if uri == target {
			return a.cfg.Repo
		}
	}
	return uri
}

// reportedRepo is the repository a job's backup is recorded in: the one it
// names, or for none the agent's own. A relayed backup lands in the
// controller's --repo, which is what the catalog must record, so restores
// and listings elsewhere find it without the relay.
func (a *Agent) reportedRepo(uri string) string {
	if uri != "" {
		return uri
	}
	if strings.HasPrefix(a.cfg.Repo, "relay://") {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.relayRepo != "" {
			return a.relayRepo
		}
	}
	return a.cfg.Repo
}

// relayOptions are how relay:// repositories are reached: with the
// agent's credential, as its controller stream is.
func (a *Agent) relayOptions() relay.Options {
	if a.tls == nil {
		return relay.Options{Insecure: true}
	}
	return relay.Options{TLS: a.tls.ClientConfig()}
}

// transport is the agent's gRPC transport to the controllers.
func (a *Agent) transport() credentials.TransportCredentials {
	if a.tls == nil {
		return insecure.NewCredentials()
	}
	return tlsx.GRPC(a.tls.ClientConfig())
}

// openRepo opens the repository for a job that names uri (see repoFor).
func (a *Agent) openRepo(ctx context.Context, uri string) (*archive.Repo, func(), error) {
	uri = a.repoFor(uri)
	if uri == "" {
		return nil, nil, errors.New("the job names no repository and the agent has none: start it with --repo")
	}
	st, err := location.Open(ctx, uri, location.Options{Relay: a.relayOptions(), Metrics: a.metrics,
		Retry: retry.Options{Logger: a.log.With("repo", location.Redact(uri))}})
	if err != nil {
		return nil, nil, err
	}
	repo, err := archive.Open(ctx, st, a.secret)
	if err != nil {
		_ = st.Close()
		return nil, nil, err
	}
	return repo, func() { repo.Close(); _ = st.Close() }, nil
}

// probed is the last probe of every instance, reused for a reconnect soon
// after (probing sums information_schema, which is not free on big servers).
type probed struct {
	at        time.Time
	host      *v1.Capabilities
	instances []*v1.Instance
}

// defaultProbeMaxAge is how old a probe a Register reuses.
const defaultProbeMaxAge = time.Minute

func (a *Agent) probeMaxAge() time.Duration {
	if a.cfg.probeMaxAge > 0 {
		return a.cfg.probeMaxAge
	}
	return defaultProbeMaxAge
}

// reprobe probes every instance again, whatever the age of the last probe.
// The last probe stays in place meanwhile, for a Register that cannot wait.
func (a *Agent) reprobe(ctx context.Context) *probed {
	return a.probeNow(ctx)
}

// registrationProbe is what a Register reports: the last probe if it is
// recent (Config.probeMaxAge), else a new one, except while the agent
// holds leases. Then the Register goes out at once with the last probe
// (reprobe is true: the session probes again beside its work and reports a
// change), because a probe can take ProbeTimeout and a new leader keeps
// the inherited leases only for so long after its takeover (issue 20
// item 2).
func (a *Agent) registrationProbe(ctx context.Context) (p *probed, reprobe bool) {
	a.mu.Lock()
	p = a.probed
	holding := len(a.jobs) > 0
	a.mu.Unlock()
	switch {
	case p != nil && time.Since(p.at) < a.probeMaxAge():
		return p, false
	case p != nil && holding:
		return p, true
	}
	return a.probeNow(ctx), false
}

// changed reports whether a re-probe found anything engine selection would
// read differently from what was reported: the capabilities or server of
// an instance, apart from when the probe ran. Data size and free space
// count only when they moved by a tenth, or a busy server would be
// re-reported at every probe.
func changed(old, cur *probed) bool {
	if old == nil || len(old.instances) != len(cur.instances) {
		return true
	}
	for i, in := range cur.instances {
		o := old.instances[i]
		if o.GetName() != in.GetName() || !proto.Equal(o.GetServer(), in.GetServer()) {
			return true
		}
		a, b := proto.CloneOf(o.GetCapabilities()), proto.CloneOf(in.GetCapabilities())
		if a == nil || b == nil {
			if a != b {
				return true
			}
			continue
		}
		if moved(a.DataBytes, b.DataBytes) || moved(a.SnapshotFreeBytes, b.SnapshotFreeBytes) {
			return true
		}
		a.ProbedAt, b.ProbedAt = nil, nil
		a.DataBytes, b.DataBytes = 0, 0
		a.SnapshotFreeBytes, b.SnapshotFreeBytes = 0, 0
		if !proto.Equal(a, b) {
			return true
		}
	}
	return false
}

// moved: b differs from a by more than a tenth of a.
func moved(a, b uint64) bool {
	d := max(a, b) - min(a, b)
	return d > a/10
}

// probeNow probes every instance, in parallel, and keeps the result as
// the last probe.
func (a *Agent) probeNow(ctx context.Context) *probed {
	names := a.cfg.instanceNames()
	insts := make([]*v1.Instance, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Go(func() {
			res := a.probeInstance(ctx, a.instances[n])
			for _, w := range res.Warnings {
				a.log.Warn("capability probe", "instance", n, "warning", w)
			}
			insts[i] = &v1.Instance{Name: n, Agent: a.cfg.Name, Labels: a.cfg.Labels,
				Capabilities: res.Capabilities, Server: res.Server, Address: tcpAddr(a.dsns[n])}
		})
	}
	wg.Wait()
	p := &probed{at: time.Now(), instances: insts}
	// Host-level capabilities are the agent's own instance's when it has
	// one (the common single-instance host), else what is not per-server.
	if a.cfg.MySQL != "" {
		p.host = insts[0].Capabilities
	} else {
		c := insts[0].Capabilities
		p.host = &v1.Capabilities{AgentVersion: c.AgentVersion, ProbedAt: c.ProbedAt,
			StorageReachable: c.StorageReachable, StorageError: c.StorageError}
	}
	a.mu.Lock()
	a.probed = p
	a.mu.Unlock()
	return p
}

func (a *Agent) probeInstance(ctx context.Context, dsn *mysqlx.DSN) *probe.Result {
	deps := probe.Deps{Host: probe.LocalHost{}, AgentVersion: version.Get().Version, Timeout: a.cfg.ProbeTimeout}
	if db, err := dsn.Open(nil); err == nil {
		db.SetMaxOpenConns(1)
		defer func() { _ = db.Close() }()
		deps.Querier = probe.SQL(db)
	}
	if a.cfg.Repo != "" {
		deps.Storage = func(ctx context.Context) error {
			_, closeRepo, err := a.openRepo(ctx, "")
			if err == nil {
				closeRepo()
			}
			return err
		}
	}
	return probe.Run(ctx, deps)
}

// instanceNames lists the instances the agent serves, for messages.
func (a *Agent) instanceNames() string {
	names := a.cfg.instanceNames()
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// awaitAcks waits until every job result was acknowledged, or d passed.
func (a *Agent) awaitAcks(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		a.mu.Lock()
		n := len(a.jobs)
		a.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for id := range a.jobs {
		a.log.Warn("stopping before the controller took the job's result; the job fails when its lease expires", "job", id)
	}
}

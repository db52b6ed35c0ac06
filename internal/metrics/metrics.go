package metrics

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// Label values are bounded: an engine name outside knownEngines, an
// outcome or a backend outside its set is folded into "other", so a
// mistyped engine in a job cannot grow a series per typo.
var (
	knownEngines  = set("logical", "mariabackup", "snapshot", "clone", "binlog", "auto", "unknown")
	knownBackends = set("file", "s3", "relay")
)

func set(v ...string) map[string]bool {
	m := map[string]bool{}
	for _, s := range v {
		m[s] = true
	}
	return m
}

// Outcomes of a job or a storage operation.
const (
	OutcomeOK       = "ok"
	OutcomeFailed   = "failed"
	OutcomeCanceled = "canceled"
	// Storage only: answers that are a result, not a fault.
	OutcomeNotFound = "not_found"
	OutcomeExists   = "exists"
)

func engineLabel(e string) string {
	switch {
	case e == "":
		return "auto"
	case knownEngines[e]:
		return e
	}
	return "other"
}

func backendLabel(b string) string {
	if knownBackends[b] {
		return b
	}
	return "other"
}

// Buckets for job durations: a second to about 9 hours.
var jobBuckets = prometheus.ExponentialBuckets(1, 2.5, 12)

// Buckets for storage operations: 1 ms to about 16 s.
var opBuckets = prometheus.ExponentialBuckets(0.001, 3, 10)

// Buckets for lock hold times: 1 ms to about 65 s.
var lockBuckets = prometheus.ExponentialBuckets(0.001, 3, 11)

// Registry is one process's metrics. A nil *Registry records nothing, so
// code paths shared with metric-less callers (standalone commands, tests)
// call its methods without checks. It is safe for concurrent use.
type Registry struct {
	reg *prometheus.Registry

	jobs        *prometheus.CounterVec
	jobSeconds  *prometheus.HistogramVec
	backupBytes *prometheus.CounterVec
	lockSeconds *prometheus.HistogramVec

	storageOps     *prometheus.CounterVec
	storageSeconds *prometheus.HistogramVec
	storageRetries *prometheus.CounterVec
	relayBytes     *prometheus.CounterVec

	leaseExpiries prometheus.Counter

	// mine are the tidemark collectors registered so far (for Names).
	mineMu sync.Mutex
	mine   []prometheus.Collector

	readyMu sync.Mutex
	ready   []readyCheck
}

type readyCheck struct {
	name string
	fn   func() error
}

// New returns a registry holding every tidemark_* metric this package
// defines, plus the Go runtime and process collectors.
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry()}
	r.jobs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_jobs_total",
		Help: "Backups and restores this process ran to their end, by kind (backup, restore), engine and outcome (ok, failed, canceled).",
	}, []string{"kind", "engine", "outcome"})
	r.jobSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tidemark_job_duration_seconds",
		Help:    "Wall time of the backups and restores this process ran, by kind, engine and outcome.",
		Buckets: jobBuckets,
	}, []string{"kind", "engine", "outcome"})
	r.backupBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_backup_bytes_total",
		Help: "Bytes of successful backups by engine and state: logical (plaintext read from the server), stored (the backup's chunks as stored), new (stored bytes this backup uploaded; the rest were deduplicated).",
	}, []string{"engine", "state"})
	r.lockSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tidemark_backup_lock_seconds",
		Help:    "How long a successful backup blocked writes on the server (global lock, BACKUP STAGE, FTWRL), by engine.",
		Buckets: lockBuckets,
	}, []string{"engine"})
	r.storageOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_storage_operations_total",
		Help: "Repository operations by backend (file, s3, relay), op (get, put, stat, list, delete) and outcome (ok, not_found, exists, failed, canceled), retries included in one operation.",
	}, []string{"backend", "op", "outcome"})
	r.storageSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tidemark_storage_operation_duration_seconds",
		Help:    "Latency of repository operations, retries and their waits included, by backend and op (get: until the body opens; list: the whole listing).",
		Buckets: opBuckets,
	}, []string{"backend", "op"})
	r.storageRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_storage_retries_total",
		Help: "Repository operations retried after a transient failure, by backend and op.",
	}, []string{"backend", "op"})
	r.relayBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidemark_relay_bytes_total",
		Help: "Bytes the controller's relay moved for relay:// agents, by direction (in: agent to repository, out: repository to agent).",
	}, []string{"direction"})
	r.leaseExpiries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tidemark_lease_expiries_total",
		Help: "Job leases this controller, as leader, saw expire without a heartbeat (each fails the attempt).",
	})
	r.MustRegister(r.jobs, r.jobSeconds, r.backupBytes, r.lockSeconds,
		r.storageOps, r.storageSeconds, r.storageRetries, r.relayBytes, r.leaseExpiries)
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Counters with known label values start at zero, so a rate() over a
	// fresh process is 0, not absent.
	for _, k := range []string{"backup", "restore"} {
		for _, o := range []string{OutcomeOK, OutcomeFailed} {
			r.jobs.WithLabelValues(k, "logical", o)
		}
	}
	for _, d := range []string{"in", "out"} {
		r.relayBytes.WithLabelValues(d)
	}
	return r
}

// Prometheus returns the underlying registry, for collectors of other
// packages (the controller's) and for tests that gather it.
func (r *Registry) Prometheus() *prometheus.Registry {
	if r == nil {
		return nil
	}
	return r.reg
}

// MustRegister registers tidemark collectors; a duplicate is a programming
// error.
func (r *Registry) MustRegister(cs ...prometheus.Collector) {
	if r == nil {
		return
	}
	r.reg.MustRegister(cs...)
	r.mineMu.Lock()
	r.mine = append(r.mine, cs...)
	r.mineMu.Unlock()
}

// Unregister removes a collector (a controller node that shuts down in a
// process that goes on, as in tests).
func (r *Registry) Unregister(c prometheus.Collector) {
	if r == nil {
		return
	}
	r.reg.Unregister(c)
	r.mineMu.Lock()
	defer r.mineMu.Unlock()
	for i, m := range r.mine {
		if m == c {
			r.mine = append(r.mine[:i], r.mine[i+1:]...)
			break
		}
	}
}

// Job is one finished backup or restore, as the agent saw it.
type Job struct {
	// Kind is "backup" or "restore".
	Kind string
	// Engine is the engine that ran it (for a failed backup, the one the
	// job asked for, "" being "auto"; for a failed restore "unknown").
	Engine string
	// Err is how it ended; Canceled says the cancellation was the cause.
	Err      error
	Canceled bool
	Took     time.Duration
	// Sizes and lock time of a successful backup (from its manifest).
	LogicalBytes, StoredBytes, NewBytes uint64
	Lock                                time.Duration
}

// JobDone records a finished job.
func (r *Registry) JobDone(j Job) {
	if r == nil {
		return
	}
	kind, outcome, e := jobLabels(j)
	r.jobs.WithLabelValues(kind, e, outcome).Inc()
	r.jobSeconds.WithLabelValues(kind, e, outcome).Observe(j.Took.Seconds())
	if kind == "backup" && outcome == OutcomeOK {
		r.backupBytes.WithLabelValues(e, "logical").Add(float64(j.LogicalBytes))
		r.backupBytes.WithLabelValues(e, "stored").Add(float64(j.StoredBytes))
		r.backupBytes.WithLabelValues(e, "new").Add(float64(j.NewBytes))
		r.lockSeconds.WithLabelValues(e).Observe(j.Lock.Seconds())
	}
}

// LeaseExpired counts one lease expiry.
func (r *Registry) LeaseExpired() {
	if r != nil {
		r.leaseExpiries.Inc()
	}
}

// RelayBytes counts bytes the relay moved, direction "in" or "out".
func (r *Registry) RelayBytes(direction string, n int) {
	if r != nil && n > 0 {
		r.relayBytes.WithLabelValues(direction).Add(float64(n))
	}
}

// StorageObserver returns the observer a storage retry wrapper reports to
// for a store of backend ("file", "s3", "relay"); nil for a nil Registry.
// Its methods match internal/storage/retry.Observer.
func (r *Registry) StorageObserver(backend string) *StorageObserver {
	if r == nil {
		return nil
	}
	b := backendLabel(backend)
	return &StorageObserver{r: r, backend: b}
}

// StorageObserver records one store's operations.
type StorageObserver struct {
	r       *Registry
	backend string
}

// Op records one operation (all its attempts) and how it ended.
func (o *StorageObserver) Op(op string, took time.Duration, err error) {
	if o == nil {
		return
	}
	outcome := OutcomeOK
	switch {
	case err == nil:
	case errors.Is(err, storage.ErrNotFound):
		outcome = OutcomeNotFound
	case errors.Is(err, storage.ErrExists):
		outcome = OutcomeExists
	case errors.Is(err, context.Canceled):
		outcome = OutcomeCanceled
	default:
		outcome = OutcomeFailed
	}
	o.r.storageOps.WithLabelValues(o.backend, op, outcome).Inc()
	o.r.storageSeconds.WithLabelValues(o.backend, op).Observe(took.Seconds())
}

// Retry records one retry of op.
func (o *StorageObserver) Retry(op string) {
	if o != nil {
		o.r.storageRetries.WithLabelValues(o.backend, op).Inc()
	}
}

// AddReadyCheck adds a readiness check: /readyz answers 200 only when every
// check returns nil, else 503 with each failing check's name and error.
// Checks run on every /readyz request: they must be cheap (read cached
// state, never dial).
func (r *Registry) AddReadyCheck(name string, fn func() error) {
	if r == nil {
		return
	}
	r.readyMu.Lock()
	defer r.readyMu.Unlock()
	r.ready = append(r.ready, readyCheck{name: name, fn: fn})
}

// Ready runs the readiness checks; nil when all pass (or there are none).
func (r *Registry) Ready() error {
	if r == nil {
		return nil
	}
	r.readyMu.Lock()
	checks := append([]readyCheck(nil), r.ready...)
	r.readyMu.Unlock()
	var errs []error
	for _, c := range checks {
		if err := c.fn(); err != nil {
			errs = append(errs, errors.New(c.name+": "+err.Error()))
		}
	}
	return errors.Join(errs...)
}

// Names returns the name of every metric family the tidemark collectors
// registered so far define, sorted, whether or not a series exists yet (a
// vector with no label values set gathers nothing). Raft's own metrics
// (tidemark_raft_*, through the go-metrics sink) appear as raft emits them
// and are not listed.
func (r *Registry) Names() []string {
	r.mineMu.Lock()
	mine := append([]prometheus.Collector(nil), r.mine...)
	r.mineMu.Unlock()
	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range mine {
			c.Describe(ch)
		}
		close(ch)
	}()
	seen := map[string]bool{}
	for d := range ch {
		if n := descName(d); n != "" {
			seen[n] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// descName extracts the metric name from a Desc: client_golang has no
// getter, and its String form is `Desc{fqName: "NAME", ...}`.
func descName(d *prometheus.Desc) string {
	s := d.String()
	const key = `fqName: "`
	i := strings.Index(s, key)
	if i < 0 {
		return ""
	}
	s = s[i+len(key):]
	if j := strings.IndexByte(s, '"'); j >= 0 {
		return s[:j]
	}
	return ""
}

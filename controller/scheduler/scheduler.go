package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/policy"
	"github.com/tidemark-backup/tidemark/engines/selection"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Clock is the scheduler's time. The leader reads it; the FSM never does
// (every time is stamped into the commands). Tests give a fake one.
type Clock interface{ Now() time.Time }

// RealClock is the wall clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// FileClock is a test clock for controller processes: the time written in
// the file (RFC 3339), read at every call. Before the file was ever read
// it is the wall clock; after that, a file that is missing, half written
// or unparsable gives the last good reading, never the wall clock: a test
// that rewrites the file in place must not make the scheduler jump to
// today and record every run since as missed. Only the hidden
// --test-clock-file flag makes one.
type FileClock struct {
	path string
	mu   sync.Mutex
	last time.Time
}

// NewFileClock returns the clock of the file at path.
func NewFileClock(path string) *FileClock { return &FileClock{path: path} }

// Now returns the file's time, or the last good one, or time.Now().
func (f *FileClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, err := os.ReadFile(f.path); err == nil {
		if t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b))); err == nil {
			f.last = t
		}
	}
	if f.last.IsZero() {
		return time.Now()
	}
	return f.last
}

// Catalog gives the scheduler consistent snapshots of the catalog. Each
// Read is one snapshot that later writes do not change.
type Catalog interface{ Read() *catalog.Read }

// Applier writes through Raft on the leader. Apply returns once cmd is
// applied on this node, with the FSM's business error (wrapping a catalog
// sentinel: ErrAlreadyExists for a job id that exists) or why it could not
// commit. Cancel cancels a job and tells its agent. Both are called from
// the scheduler's goroutines only while it runs a Tick, several at once.
type Applier interface {
	Apply(ctx context.Context, cmd *v1.Command) error
	Cancel(ctx context.Context, jobID, reason string) error
}

// Config is what a Scheduler needs besides the catalog.
type Config struct {
	Clock Clock
	// DefaultRepo is the repository of a policy that names none.
	DefaultRepo string
	// MaxAttempts of a scheduled backup job.
	MaxAttempts uint32
	// Connected reports whether an agent has a live session with the
	// leader (for the reason a scheduled job that never started fails
	// with); nil: unknown.
	Connected func(agent string) bool
	// Parallel bounds the writes of one Tick in flight at once.
	Parallel int
	Logger   *slog.Logger
	// LogicalBelow is engine selection's small-instance threshold, for a
	// schedule whose engine is auto.
	LogicalBelow uint64
}

// Scheduler turns policies into jobs on the leader. A new leader makes a
// new one and calls Recompute once (after its barrier) before ticking: the
// latest handled run per (policy, schedule, run key) comes from the
// catalog's jobs and skip records, so runs are neither repeated nor lost
// across leaders. Tick is called from one goroutine; Upcoming and Held may
// be called from others.
type Scheduler struct {
	cfg     Config
	catalog Catalog
	apply   Applier

	mu   sync.Mutex
	last map[Key]time.Time // latest scheduled time submitted or skipped
	held map[Key]string    // why a due run waits (max_concurrent, busy instance)
}

// New returns a scheduler with no memory of past runs: call Recompute.
func New(cfg Config, c Catalog, a Applier) *Scheduler {
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 16
	}
	return &Scheduler{cfg: cfg, catalog: c, apply: a, last: map[Key]time.Time{}, held: map[Key]string{}}
}

// Recompute rebuilds the latest handled run of every (policy, schedule,
// run key) from the catalog: the scheduled jobs and the skip records. It
// returns how many keys it found.
func (s *Scheduler) Recompute() int {
	r := s.catalog.Read()
	last := map[Key]time.Time{}
	note := func(k Key, t time.Time) {
		if t.After(last[k]) {
			last[k] = t
		}
	}
	for _, p := range r.Policies() {
		// The latest run per key is all it needs: a policy's whole history
		// would be decoded otherwise.
		for _, j := range r.LatestRunsOf(p.GetName(), func(v1.JobKind, v1.JobState) bool { return true }) {
			if j.GetRunKey() == "" || j.GetScheduledFor() == nil {
				continue
			}
			note(Key{Policy: j.GetPolicy(), Index: j.GetScheduleIndex(), RunKey: j.GetRunKey()}, j.GetScheduledFor().AsTime())
		}
		for _, sk := range r.ScheduleSkips(p.GetName()) {
			note(Key{Policy: sk.GetPolicy(), Index: sk.GetScheduleIndex(), RunKey: sk.GetRunKey()}, sk.GetLast().AsTime())
		}
	}
	s.mu.Lock()
	s.last, s.held = last, map[Key]string{}
	s.mu.Unlock()
	return len(last)
}

// TickResult counts what one Tick did.
type TickResult struct {
	Submitted, Skipped, Held, StreamsStarted, StreamsStopped int
	// Expired counts scheduled jobs failed because no agent started them
	// within their catch-up window.
	Expired int
	// Delays are, per submitted job, how long after its due time it was
	// committed.
	Delays []time.Duration
	Errors []error
}

// Tick submits every due run, records the ones that will not start, and
// starts or stops binlog streams. Errors of single writes are collected;
// their runs are tried again at the next tick.
func (s *Scheduler) Tick(ctx context.Context) TickResult {
	now := s.cfg.Clock.Now()
	r := s.catalog.Read()
	p := s.plan(r, now)
	var (
		res TickResult
		mu  sync.Mutex
	)
	fail := func(err error) {
		mu.Lock()
		res.Errors = append(res.Errors, err)
		mu.Unlock()
	}
	res.Held = len(p.held)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Parallel)
	if len(p.skips) > 0 {
		g.Go(func() error {
			err := s.apply.Apply(gctx, &v1.Command{Cmd: &v1.Command_RecordScheduleSkips{RecordScheduleSkips: &v1.RecordScheduleSkips{Skips: p.skips}}})
			if err != nil {
				fail(fmt.Errorf("recording %d schedule skips: %w", len(p.skips), err))
				return nil
			}
			s.mu.Lock()
			for _, sk := range p.skips {
				k := Key{Policy: sk.GetPolicy(), Index: sk.GetScheduleIndex(), RunKey: sk.GetRunKey()}
				if t := sk.GetLast().AsTime(); t.After(s.last[k]) {
					s.last[k] = t
				}
			}
			s.mu.Unlock()
			mu.Lock()
			res.Skipped += len(p.skips)
			mu.Unlock()
			return nil
		})
	}
	for _, sub := range p.submit {
		g.Go(func() error {
			j := sub.job
			err := s.apply.Apply(gctx, &v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: j}}})
			if err != nil && !errors.Is(err, catalog.ErrAlreadyExists) {
				fail(fmt.Errorf("submitting scheduled job %s (%s at %s): %w", j.GetId(), sub.key, j.GetScheduledFor().AsTime().UTC().Format(time.RFC3339), err))
				return nil
			}
			s.mu.Lock()
			if t := j.GetScheduledFor().AsTime(); t.After(s.last[sub.key]) {
				s.last[sub.key] = t
			}
			delete(s.held, sub.key)
			s.mu.Unlock()
			if err == nil {
				mu.Lock()
				res.Submitted++
				res.Delays = append(res.Delays, s.cfg.Clock.Now().Sub(sub.due))
				mu.Unlock()
				s.cfg.Logger.Info("scheduled job submitted", "job", j.GetId(), "policy", j.GetPolicy(), "run", sub.key.RunKey,
					"instance", j.GetInstance(), "scheduled_for", j.GetScheduledFor().AsTime())
			}
			return nil
		})
	}
	for _, j := range p.streams {
		g.Go(func() error {
			err := s.apply.Apply(gctx, &v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: j}}})
			switch {
			case errors.Is(err, catalog.ErrConflict):
				// Another stream covers the group (a race with a new
				// leader or a hand-started one): one is what we want.
			case err != nil:
				fail(fmt.Errorf("starting the binlog stream of %s for policy %s: %w", j.GetInstance(), j.GetPolicy(), err))
			default:
				mu.Lock()
				res.StreamsStarted++
				mu.Unlock()
				s.cfg.Logger.Info("policy binlog stream submitted", "job", j.GetId(), "policy", j.GetPolicy(), "instance", j.GetInstance())
			}
			return nil
		})
	}
	for _, f := range p.fail {
		g.Go(func() error {
			err := s.apply.Apply(gctx, &v1.Command{Cmd: &v1.Command_UpdateJobState{UpdateJobState: &v1.UpdateJobState{
				JobId: f.id, State: v1.JobState_JOB_STATE_FAILED, Reason: f.reason, UpdatedAt: timestamppb.New(now),
				Result: &v1.JobResult{Error: f.reason},
			}}})
			if err != nil && !errors.Is(err, catalog.ErrConflict) {
				fail(fmt.Errorf("failing scheduled job %s: %w", f.id, err))
				return nil
			}
			mu.Lock()
			res.Expired++
			mu.Unlock()
			s.cfg.Logger.Warn("scheduled job not started in time", "job", f.id, "reason", f.reason)
			return nil
		})
	}
	for _, st := range p.stop {
		g.Go(func() error {
			if err := s.apply.Cancel(gctx, st.id, st.reason); err != nil && !errors.Is(err, catalog.ErrConflict) {
				fail(fmt.Errorf("stopping binlog stream job %s: %w", st.id, err))
				return nil
			}
			mu.Lock()
			res.StreamsStopped++
			mu.Unlock()
			return nil
		})
	}
	_ = g.Wait()
	s.mu.Lock()
	s.held = p.held
	s.mu.Unlock()
	return res
}

// StopReasonPrefix starts the reason of every cancellation the scheduler
// makes, so it can tell its own stops from an operator's.
const StopReasonPrefix = "policy: "

type submission struct {
	key Key
	job *v1.Job
	due time.Time
}

type stopStream struct{ id, reason string }

type plan struct {
	fail    []stopStream
	submit  []submission
	skips   []*v1.ScheduleSkip
	held    map[Key]string
	streams []*v1.Job
	stop    []stopStream
}

// walkLimit bounds the runs walked one by one between a target's last
// handled run and now.
const walkLimit = 1000

// CatchUp is a schedule's catch-up window.
func CatchUp(sc *v1.PolicySchedule) time.Duration {
	if d := sc.GetCatchUp(); d != nil {
		return d.AsDuration()
	}
	return policy.DefaultCatchUp
}

// dueRuns walks the runs of t after floor whose due time is at or before
// now: the first, the one before the last, the last, and how many.
func dueRuns(t Target, floor, now time.Time) (first, prev, last time.Time, n int) {
	name, window := t.Policy.GetName(), t.Policy.GetSpec().GetWindow()
	for x := t.Cron.Next(floor); !x.IsZero() && !x.After(now); x = t.Cron.Next(x) {
		if policy.DueAt(name, t.RunKey, x, policy.Period(t.Cron, x), window).After(now) {
			break
		}
		if n == 0 {
			first = x
		}
		prev, last = last, x
		n++
		if n == walkLimit {
			p := max(policy.Period(t.Cron, x), time.Second)
			if back := now.Add(-3 * p); back.After(x) {
				n += int(back.Sub(x)/p) - 1
				x = back
			}
		}
	}
	return first, prev, last, n
}

// since is when target t's schedule took its current form: the policy's
// creation, or the version that added or changed this schedule. Runs
// before it are not the schedule's (a policy deleted and created again, a
// cron changed) and are neither started nor recorded as skipped.
func since(t Target) time.Time {
	pol := t.Policy
	if prev := pol.GetPrevious(); prev != nil {
		pb := prev.GetSpec().GetBackups()
		if int(t.Index) >= len(pb) || pb[t.Index].GetCron() != t.Sched.GetCron() {
			return pol.GetUpdatedAt().AsTime()
		}
	}
	return pol.GetCreatedAt().AsTime()
}

func (s *Scheduler) floor(t Target, now time.Time) (time.Time, bool) {
	s.mu.Lock()
	last, ok := s.last[t.Key()]
	s.mu.Unlock()
	from := since(t)
	if ok && last.After(from) {
		return last, true
	}
	// Never run in this form: from when it took it, but not further back
	// than a period before the catch-up window (an instance that joins an
	// old policy starts with the run that is due now, not with a record of
	// every run before it joined).
	if f := now.Add(-CatchUp(t.Sched) - policy.Period(t.Cron, now)); f.After(from) {
		from = f
	}
	return from, false
}

// plan works out what a Tick does at now from one catalog snapshot.
func (s *Scheduler) plan(r *catalog.Read, now time.Time) plan {
	p := plan{held: map[Key]string{}}
	policies := r.Policies()
	instances := r.Instances()
	sel := Select(policies, instances)
	byName := make(map[string]*v1.Instance, len(instances))
	for _, in := range instances {
		byName[in.GetName()] = in
	}
	busy := map[string]*v1.Job{} // instance -> active backup/restore
	// running counts the active backups (scheduled or by hand, whatever
	// policy) per label key a max_concurrent names, per value: the limit
	// is about what one link or storage target carries.
	running := map[string]map[string]int{}
	for _, pl := range policies {
		if by := pl.GetSpec().GetMaxConcurrent().GetBy(); by != "" {
			running[by] = map[string]int{}
		}
	}
	streamByInstance := map[string]*v1.Job{}
	streamByCluster := map[string]*v1.Job{}
	for _, j := range r.ActiveJobs() {
		switch j.GetKind() {
		case v1.JobKind_JOB_KIND_BACKUP, v1.JobKind_JOB_KIND_RESTORE:
			busy[j.GetInstance()] = j
			if j.GetKind() == v1.JobKind_JOB_KIND_BACKUP {
				for by, count := range running {
					if v, ok := byName[j.GetInstance()].GetLabels()[by]; ok {
						count[v]++
					}
				}
			}
		case v1.JobKind_JOB_KIND_BINLOG_STREAM:
			streamByInstance[j.GetInstance()] = j
			if c := j.GetBinlogStream().GetCluster(); c != "" {
				streamByCluster[c] = j
			}
		}
	}
	s.planExpiry(&p, r, now, byName)
	for _, t := range Targets(policies, sel) {
		s.planTarget(&p, t, now, busy, running)
	}
	s.planStreams(&p, r, policies, sel, now, streamByInstance, streamByCluster)
	return p
}

func (s *Scheduler) planTarget(p *plan, t Target, now time.Time, busy map[string]*v1.Job, running map[string]map[string]int) {
	key := t.Key()
	name := t.Policy.GetName()
	floor, _ := s.floor(t, now)
	first, prev, last, n := dueRuns(t, floor, now)
	if n == 0 {
		return
	}
	due := policy.DueAt(name, t.RunKey, last, policy.Period(t.Cron, last), t.Policy.GetSpec().GetWindow())
	catchUp := CatchUp(t.Sched)
	skip := func(from, to time.Time, count int, reason string) {
		p.skips = append(p.skips, &v1.ScheduleSkip{
			Id: policy.SkipID(name, t.Index, t.RunKey, from), Policy: name, ScheduleIndex: t.Index, RunKey: t.RunKey,
			First: timestamppb.New(from), Last: timestamppb.New(to), Count: uint32(count), Reason: reason, RecordedAt: timestamppb.New(now),
		})
	}
	if late := now.Sub(due); late > catchUp {
		why := fmt.Sprintf("missed: the latest run was due at %s and the scheduler reached it %s late, beyond the catch-up window of %s",
			due.UTC().Format(time.RFC3339), late.Round(time.Second), catchUp)
		s.mu.Lock()
		if h := s.held[key]; h != "" {
			why += " (held: " + h + ")"
		} else {
			why += " (no leader, or the leader was behind)"
		}
		s.mu.Unlock()
		skip(first, last, n, why)
		return
	}
	if n > 1 {
		why := fmt.Sprintf("superseded: %d earlier run(s) were missed; only the latest (%s) starts, late", n-1, last.UTC().Format(time.RFC3339))
		if w := t.Policy.GetSpec().GetWindow(); w != "" {
			why = fmt.Sprintf("superseded: %d earlier run(s) were missed or fell outside the window %s; only the latest (%s) starts", n-1, w, last.UTC().Format(time.RFC3339))
		}
		skip(first, prev, n-1, why)
	}
	if j := busy[t.Instance.GetName()]; j != nil {
		p.held[key] = fmt.Sprintf("instance %s is busy with %s job %s", t.Instance.GetName(), catalog.KindName(j.GetKind()), j.GetId())
		return
	}
	if mc := t.Policy.GetSpec().GetMaxConcurrent(); mc != nil {
		by := mc.GetBy()
		v := t.Instance.GetLabels()[by]
		if running[by][v] >= int(mc.GetLimit()) {
			p.held[key] = fmt.Sprintf("max_concurrent: %d backups already active on instances with %s=%s (limit %d)", running[by][v], by, v, mc.GetLimit())
			return
		}
		for b, count := range running {
			if x, ok := t.Instance.GetLabels()[b]; ok {
				count[x]++
			}
		}
	}
	busy[t.Instance.GetName()] = &v1.Job{Id: policy.RunID(name, t.Index, t.RunKey, last), Kind: v1.JobKind_JOB_KIND_BACKUP}
	repo := t.Policy.GetSpec().GetRepositoryUri()
	if repo == "" {
		repo = s.cfg.DefaultRepo
	}
	engine, reason, fallbacks := t.Sched.GetEngine(), "", []string(nil)
	portable := t.Policy.GetSpec().GetPortable()
	if engine == "auto" || engine == "" {
		// As a backup asked for by hand: the first engine selection finds
		// usable, the rest to fall back to; without probed capabilities
		// the agent's default engine, or logical for a portable policy
		// (the only engine whose backups it accepts).
		engine = ""
		if portable {
			engine, reason = selection.Logical, selection.PortableReason
		}
		if caps := t.Instance.GetCapabilities(); caps.GetFlavor() != "" {
			if d, err := selection.Decide(caps, selection.Preferences{Portable: portable, SmallBytes: s.cfg.LogicalBelow}); err == nil {
				if v, rest, err := d.Choose(); err == nil {
					engine, reason, fallbacks = v.Engine, v.Reason, rest
				}
			}
		}
	}
	stamp := timestamppb.New(now)
	p.submit = append(p.submit, submission{key: key, due: due, job: &v1.Job{
		Id: policy.RunID(name, t.Index, t.RunKey, last), Kind: v1.JobKind_JOB_KIND_BACKUP, Instance: t.Instance.GetName(),
		State: v1.JobState_JOB_STATE_PENDING, CreatedAt: stamp, UpdatedAt: stamp, MaxAttempts: s.cfg.MaxAttempts,
		Policy: name, ScheduledFor: timestamppb.New(last), ScheduleIndex: t.Index, RunKey: t.RunKey,
		Params: &v1.Job_Backup{Backup: &v1.BackupParams{
			Engine: engine, RepositoryUri: repo, Policy: name, Labels: map[string]string{"policy": name},
			EngineReason: reason, FallbackEngines: fallbacks, History: t.Policy.GetSpec().GetHistory(),
		}},
	}})
}

// planExpiry fails the scheduled backup jobs still pending beyond their
// catch-up window (their agent offline, or busy with a job of its own
// that outlasted it): the run is over, and status and alerts say why,
// instead of a backup starting hours late.
func (s *Scheduler) planExpiry(p *plan, r *catalog.Read, now time.Time, byName map[string]*v1.Instance) {
	for _, j := range r.JobsInState(v1.JobState_JOB_STATE_PENDING) {
		if j.GetKind() != v1.JobKind_JOB_KIND_BACKUP || j.GetRunKey() == "" || j.GetScheduledFor() == nil {
			continue
		}
		pol, err := r.Policy(j.GetPolicy())
		catchUp := policy.DefaultCatchUp
		window := ""
		if err == nil {
			window = pol.GetSpec().GetWindow()
			if bs := pol.GetSpec().GetBackups(); int(j.GetScheduleIndex()) < len(bs) {
				catchUp = CatchUp(bs[j.GetScheduleIndex()])
			}
		}
		sched := j.GetScheduledFor().AsTime()
		period := time.Hour
		if err == nil && int(j.GetScheduleIndex()) < len(pol.GetSpec().GetBackups()) {
			if cs, err := policy.ParseSchedule(pol.GetSpec().GetBackups()[j.GetScheduleIndex()].GetCron()); err == nil {
				period = policy.Period(cs, sched)
			}
		}
		due := policy.DueAt(j.GetPolicy(), j.GetRunKey(), sched, period, window)
		if late := now.Sub(due); late <= catchUp {
			continue
		}
		agent := byName[j.GetInstance()].GetAgent()
		why := fmt.Sprintf("not started within the catch-up window (%s) of its due time %s", catchUp, due.UTC().Format(time.RFC3339))
		switch {
		case s.cfg.Connected != nil && agent != "" && !s.cfg.Connected(agent):
			why += fmt.Sprintf(": agent %s is not connected", agent)
		case len(j.GetPreviousAttempts()) > 0:
			why += ": its last attempt ended: " + j.GetPreviousAttempts()[len(j.GetPreviousAttempts())-1].GetError()
		}
		p.fail = append(p.fail, stopStream{id: j.GetId(), reason: why})
	}
}

// StoppedByHand reports whether stream job j was cancelled by someone
// other than the scheduler after policy p's current version: such a
// stream stays stopped until the policy is applied again.
func StoppedByHand(j *v1.Job, p *v1.Policy) bool {
	return j != nil && j.GetState() == v1.JobState_JOB_STATE_CANCELLED && !strings.HasPrefix(j.GetReason(), StopReasonPrefix) &&
		j.GetUpdatedAt().AsTime().After(p.GetUpdatedAt().AsTime())
}

func (s *Scheduler) planStreams(p *plan, r *catalog.Read, policies []*v1.Policy, sel Selection, now time.Time,
	byInstance, byCluster map[string]*v1.Job) {
	wanted := map[string]bool{}
	for _, st := range StreamTargets(policies, sel) {
		wanted[st.RunKey] = true
		covered := byInstance[st.Instance.GetName()] != nil
		if c, ok := strings.CutPrefix(st.RunKey, "cluster:"); ok && byCluster[c] != nil {
			covered = true
		}
		if covered {
			continue
		}
		if rec, err := r.BinlogStream(st.Instance.GetName()); err == nil {
			if j, err := r.Job(rec.GetJobId()); err == nil && StoppedByHand(j, st.Policy) {
				continue
			}
		}
		spec := st.Policy.GetSpec()
		repo := spec.GetRepositoryUri()
		if repo == "" {
			repo = s.cfg.DefaultRepo
		}
		flush := spec.GetBinlog().GetFlush()
		if flush == nil {
			flush = durationpb.New(time.Second)
		}
		stamp := timestamppb.New(now)
		p.streams = append(p.streams, &v1.Job{
			Id:   "pstream-" + strings.TrimPrefix(policy.RunID(st.Policy.GetName(), 0, st.RunKey, now), "sched-"),
			Kind: v1.JobKind_JOB_KIND_BINLOG_STREAM, Instance: st.Instance.GetName(), State: v1.JobState_JOB_STATE_PENDING,
			CreatedAt: stamp, UpdatedAt: stamp, Policy: st.Policy.GetName(), RunKey: st.RunKey,
			Params: &v1.Job_BinlogStream{BinlogStream: &v1.BinlogStreamParams{
				Flush: flush, RepositoryUri: repo, Cluster: st.Instance.GetLabels()[catalog.ClusterLabel],
			}},
		})
	}
	for _, j := range byInstance {
		if j.GetPolicy() == "" {
			continue // started by hand: not the scheduler's to stop
		}
		key := j.GetInstance()
		if c := j.GetBinlogStream().GetCluster(); c != "" {
			key = "cluster:" + c
		}
		if !wanted[key] {
			p.stop = append(p.stop, stopStream{id: j.GetId(),
				reason: StopReasonPrefix + fmt.Sprintf("no policy enables binlog streaming for %s any more (started by policy %s)", key, j.GetPolicy())})
		}
	}
}

// Held returns why each due run that waits is held.
func (s *Scheduler) Held() map[Key]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.held)
}

// Upcoming returns the next n runs of every target (only those whose group
// holds instance, when given), in due order per target: a due run that
// waits first.
func (s *Scheduler) Upcoming(instance string, n int) []*v1.ScheduledRun {
	if n <= 0 {
		n = 1
	}
	now := s.cfg.Clock.Now()
	r := s.catalog.Read()
	policies := r.Policies()
	held := s.Held()
	var out []*v1.ScheduledRun
	for _, t := range Targets(policies, Select(policies, r.Instances())) {
		if instance != "" && !containsInstance(t.Members, instance) {
			continue
		}
		floor, _ := s.floor(t, now)
		x := floor
		for i := range n {
			x = t.Cron.Next(x)
			if x.IsZero() {
				break
			}
			out = append(out, &v1.ScheduledRun{
				Policy: t.Policy.GetName(), ScheduleIndex: t.Index, Cron: t.Sched.GetCron(), RunKey: t.RunKey,
				Instance: t.Instance.GetName(), ScheduledFor: timestamppb.New(x), Engine: t.Sched.GetEngine(),
				DueAt: timestamppb.New(policy.DueAt(t.Policy.GetName(), t.RunKey, x, policy.Period(t.Cron, x), t.Policy.GetSpec().GetWindow())),
				JobId: policy.RunID(t.Policy.GetName(), t.Index, t.RunKey, x),
			})
			if i == 0 {
				out[len(out)-1].Held = held[t.Key()]
			}
		}
	}
	return out
}

func containsInstance(list []*v1.Instance, name string) bool {
	for _, in := range list {
		if in.GetName() == name {
			return true
		}
	}
	return false
}

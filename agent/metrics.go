package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tidemark-backup/tidemark/agent/runner"
	"github.com/tidemark-backup/tidemark/internal/metrics"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// repoCheck is the last repository reachability check.
type repoCheck struct {
	at  time.Time
	err error
}

// startMetrics registers the agent's readiness check, starts the
// repository check loop and, with MetricsAddr, the listener. The returned
// function stops the listener.
func (a *Agent) startMetrics(ctx context.Context) (func(), error) {
	m := a.metrics
	if m == nil {
		return func() {}, nil
	}
	if a.cfg.MetricsAddr == "" {
		a.startRepoCheck(ctx)
		return func() {}, nil
	}
	p := metrics.ServeParams{Addr: a.cfg.MetricsAddr, Flag: "--metrics-addr (metrics_addr)", Pprof: a.cfg.Pprof, Logger: a.log}
	if a.tls != nil {
		tc := a.tls.ServerConfig()
		tc.NextProtos = []string{"h2", "http/1.1"}
		p.TLS = tc
	}
	srv, err := metrics.Serve(m, p)
	if err != nil {
		return nil, err
	}
	a.startRepoCheck(ctx)
	return srv.Close, nil
}

// startRepoCheck adds the readiness check and starts its repository loop.
func (a *Agent) startRepoCheck(ctx context.Context) {
	a.metrics.AddReadyCheck("agent", a.ready)
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		a.repoCheckLoop(ctx)
	}()
}

// ready is the agent's readiness: a registered session with a controller
// and a repository that answered its last check. It reads cached state
// only.
func (a *Agent) ready() error {
	a.mu.Lock()
	registered := a.sess != nil
	a.mu.Unlock()
	var errs []error
	if !registered {
		errs = append(errs, errors.New("not registered with a controller"))
	}
	if a.cfg.Repo != "" {
		switch c := a.repoState.Load(); {
		case c == nil:
			errs = append(errs, errors.New("repository not checked yet"))
		case c.err != nil:
			errs = append(errs, fmt.Errorf("repository %s unreachable at %s: %w", location.Redact(a.cfg.Repo), c.at.UTC().Format(time.RFC3339), c.err))
		}
	}
	return errors.Join(errs...)
}

// repoCheckLoop opens the agent's repository now and every
// RepoCheckInterval, and keeps the outcome for ready: a probe never waits
// for storage.
func (a *Agent) repoCheckLoop(ctx context.Context) {
	if a.cfg.Repo == "" {
		return
	}
	t := time.NewTicker(a.cfg.RepoCheckInterval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, a.cfg.ProbeTimeout)
		_, closeRepo, err := a.openRepo(cctx, "")
		cancel()
		if err == nil {
			closeRepo()
		}
		if ctx.Err() != nil {
			return
		}
		prev := a.repoState.Swap(&repoCheck{at: time.Now(), err: err})
		if err != nil && (prev == nil || prev.err == nil) {
			a.log.Warn("repository unreachable: the agent reports not ready", "repo", location.Redact(a.cfg.Repo), "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// recordJob counts a finished backup or restore attempt.
func (a *Agent) recordJob(j *job, res *runner.Result, err error, canceled bool) {
	if a.metrics == nil {
		return
	}
	mj := metrics.Job{Err: err, Canceled: canceled && err != nil, Took: time.Since(j.started)}
	switch j.job.GetKind() {
	case v1.JobKind_JOB_KIND_BACKUP:
		mj.Kind, mj.Engine = "backup", j.job.GetBackup().GetEngine()
	case v1.JobKind_JOB_KIND_RESTORE:
		mj.Kind, mj.Engine = "restore", "unknown"
	default:
		return
	}
	if res != nil {
		if res.Engine != "" {
			mj.Engine = res.Engine
		}
		if m := res.Manifest; m != nil {
			mj.LogicalBytes, mj.StoredBytes, mj.NewBytes = m.GetLogicalBytes(), m.GetStoredBytes(), m.GetNewStoredBytes()
			mj.Lock = m.GetLockDuration().AsDuration()
		}
	}
	a.metrics.JobDone(mj)
}

package controller

import (
	"context"
	"time"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/scheduler"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// The scheduler runs on the leader only: scheduleLoop starts with the
// leadership (after the barrier, so the catalog holds every earlier
// entry), rebuilds the scheduler's memory from the catalog, and ticks
// until the leadership ends. A run that the old leader submitted is in
// the catalog and has its deterministic id, so it is neither repeated nor
// lost; one whose submission was not committed is submitted again with the
// same id.

// clock is the time the scheduler, the policy status and policy records
// use (Config.Clock, the wall clock by default).
func (s *Server) clock() scheduler.Clock {
	if s.cfg.Clock != nil {
		return s.cfg.Clock
	}
	return scheduler.RealClock{}
}

// currentScheduler is the running scheduler; nil when not leading.
func (s *Server) currentScheduler() *scheduler.Scheduler { return s.sched.Load() }

// kickScheduler makes the scheduler tick now (a policy changed), and the
// policy loop apply retention and copies.
func (s *Server) kickScheduler() {
	select {
	case s.schedKick <- struct{}{}:
	default:
	}
	s.kickPolicies()
}

// storeCatalog is the FSM's current store, fetched per read (a snapshot
// restore replaces it).
type storeCatalog struct{ s *Server }

func (c storeCatalog) Read() *catalog.Read { return c.s.fsm.Store().Read() }

// leaderApplier is the scheduler's way to write: Raft applies on this
// node, cancellations through cancelJob (which tells the agent).
type leaderApplier struct{ s *Server }

func (a leaderApplier) Apply(ctx context.Context, cmd *v1.Command) error {
	_, err := a.s.apply(ctx, cmd)
	return err
}

func (a leaderApplier) Cancel(ctx context.Context, id, reason string) error {
	_, err := a.s.cancelJob(ctx, id, reason)
	return err
}

// scheduleLoop runs the scheduler while the node leads.
func (s *Server) scheduleLoop(ctx context.Context) {
	sch := scheduler.New(scheduler.Config{
		Clock: s.clock(), DefaultRepo: s.cfg.Repo, MaxAttempts: s.cfg.MaxAttempts, Logger: s.log, LogicalBelow: s.cfg.LogicalBelow,
		Connected: func(agent string) bool { return s.agents.session(agent) != nil },
	}, storeCatalog{s}, leaderApplier{s})
	start := time.Now()
	n := sch.Recompute()
	s.log.Info("scheduler recomputed its last runs from the catalog", "targets", n, "took", time.Since(start))
	s.sched.Store(sch)
	defer s.sched.Store(nil)
	t := time.NewTicker(s.cfg.ScheduleInterval)
	defer t.Stop()
	for {
		res := sch.Tick(ctx)
		if res.Submitted > 0 || res.StreamsStarted > 0 {
			s.agents.kickAssigner()
		}
		for _, err := range res.Errors {
			if ctx.Err() == nil {
				s.log.Warn("scheduler: a write failed; retrying at the next tick", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.schedKick:
		}
	}
}

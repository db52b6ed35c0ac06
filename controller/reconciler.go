package controller

import (
	"context"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/reconcile"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// The reconcile sweep, run by the leader (reconcileLoop): an agent that
// dies after storing its manifest but before its result is recorded
// leaves `<job>-a1` in the repository while `<job>-a2` becomes the
// catalog's backup; nothing else would ever delete a1, and it pins its
// chunks. Every ReconcileInterval the leader lists the backup jobs that
// ended at least ReconcileGrace ago, were never swept and have attempts
// that did not become their backup (reconcile.DeadAttempts), and submits
// one reconcile job per (instance, repository) naming each attempt's
// backup id and lease. The job runs on the instance's agent (only agents
// hold repository keys), which deletes each manifest only under that
// lease; on success a FinishReconcile entry marks the jobs swept. A job
// ends its attempts for good when it ends, so a swept job needs no second
// look; the grace covers an agent partitioned past its lease that stores
// its manifest late (it then discards it itself when its result is
// refused, unless it dies: `tidemark repo reconcile` finds that one).
//
// What the leader cannot see, it does not touch: manifests of jobs it has
// no record of (another cluster's, standalone backups) are listed as
// unknown by `tidemark repo reconcile`, never deleted.

// reconcileRetryAfter is how long the jobs of a reconcile job that failed
// (an agent too old for the kind, a repository it cannot open) wait before
// a pass names them again: not a new failing job every pass.
const reconcileRetryAfter = time.Hour

// maxReconcileTargets bounds one reconcile job's targets (and the Raft
// entry that submits it); the rest wait for the next pass.
const maxReconcileTargets = 1000

// reconcileLoop submits reconcile jobs while the node leads.
func (s *Server) reconcileLoop(ctx context.Context) {
	if s.cfg.ReconcileInterval <= 0 {
		return
	}
	tick := time.NewTicker(s.cfg.ReconcileInterval)
	defer tick.Stop()
	for {
		if n, err := s.submitReconciles(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("reconcile sweep: a write failed; retrying at the next pass", "err", err)
		} else if n > 0 {
			s.agents.kickAssigner()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// submitReconciles submits the reconcile jobs the catalog calls for now
// and returns how many it submitted.
func (s *Server) submitReconciles(ctx context.Context) (int, error) {
	t := s.clock().Now()
	n := 0
	for _, j := range reconcileJobs(s.fsm.Store().Read(), t, s.cfg.ReconcileGrace, s.cfg.MaxAttempts) {
		if _, err := s.apply(ctx, &v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: j}}}); err != nil {
			return n, err
		}
		rp := j.GetReconcile()
		s.log.Info("reconcile sweep submitted a job", "job", j.GetId(), "instance", j.GetInstance(), "repository", rp.GetRepositoryUri(),
			"manifests", len(rp.GetTargets()), "jobs", len(rp.GetJobIds()))
		n++
	}
	return n, nil
}

// reconcileJobs builds the reconcile jobs due at t: one per (instance,
// repository) of the backup jobs that ended at least grace before t, are
// not swept, are not held by an active reconcile job nor by one that
// failed less than reconcileRetryAfter ago, and have attempts
// that did not become their backup. Jobs whose instance is gone from the
// catalog are left (a job cannot be submitted for it).
func reconcileJobs(r *catalog.Read, t time.Time, grace time.Duration, maxAttempts uint32) []*v1.Job {
	held := map[string]bool{}
	for _, rj := range r.ActiveJobs() {
		for _, id := range rj.GetReconcile().GetJobIds() {
			held[id] = true
		}
	}
	failed := []v1.JobState{v1.JobState_JOB_STATE_FAILED, v1.JobState_JOB_STATE_CANCELLED}
	for _, rj := range r.Jobs(catalog.JobFilter{Kind: v1.JobKind_JOB_KIND_RECONCILE, States: failed}) {
		if rj.GetUpdatedAt().AsTime().Add(reconcileRetryAfter).After(t) {
			for _, id := range rj.GetReconcile().GetJobIds() {
				held[id] = true
			}
		}
	}
	type key struct{ instance, repo string }
	groups := map[key]*v1.ReconcileParams{}
	var keys []key
	done := []v1.JobState{v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_FAILED, v1.JobState_JOB_STATE_CANCELLED}
	// Page by page: only the candidates (Unswept) are decoded, and only a
	// page of them is held at a time (a catalog that was never swept has
	// one in five of its finished jobs here).
	f := catalog.JobFilter{Kind: v1.JobKind_JOB_KIND_BACKUP, States: done, Unswept: true}
	var after *catalog.Cursor
	for {
		page, next := r.JobsPage(f, after, 1000)
		for _, j := range page {
			if j.GetOrphansSweptAt() != nil || held[j.GetId()] || j.GetUpdatedAt().AsTime().Add(grace).After(t) {
				continue
			}
			dead := reconcile.DeadAttempts(j)
			if len(dead) == 0 {
				continue
			}
			if _, err := r.Instance(j.GetInstance()); err != nil {
				continue
			}
			k := key{j.GetInstance(), j.GetBackup().GetRepositoryUri()}
			rp := groups[k]
			if rp == nil {
				rp = &v1.ReconcileParams{RepositoryUri: k.repo}
				groups[k] = rp
				keys = append(keys, k)
			}
			if len(rp.Targets)+len(dead) > maxReconcileTargets && len(rp.Targets) > 0 {
				continue
			}
			for _, a := range dead {
				rp.Targets = append(rp.Targets, &v1.ReconcileTarget{BackupId: a.BackupID, Fence: proto.CloneOf(a.Fence), JobId: a.JobID})
			}
			rp.JobIds = append(rp.JobIds, j.GetId())
		}
		if next == nil {
			break
		}
		after = next
	}
	sort.Slice(keys, func(a, b int) bool {
		if keys[a].instance != keys[b].instance {
			return keys[a].instance < keys[b].instance
		}
		return keys[a].repo < keys[b].repo
	})
	out := make([]*v1.Job, 0, len(keys))
	for _, k := range keys {
		rp := groups[k]
		sort.Strings(rp.JobIds)
		sort.Slice(rp.Targets, func(a, b int) bool { return rp.Targets[a].GetBackupId() < rp.Targets[b].GetBackupId() })
		out = append(out, &v1.Job{
			Id: "reconcile-" + newJobID(t), Kind: v1.JobKind_JOB_KIND_RECONCILE, Instance: k.instance, State: v1.JobState_JOB_STATE_PENDING,
			CreatedAt: timestamppb.New(t), UpdatedAt: timestamppb.New(t), MaxAttempts: maxAttempts,
			Params: &v1.Job_Reconcile{Reconcile: rp},
		})
	}
	return out
}

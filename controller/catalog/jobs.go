package catalog

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-memdb"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

const jobsTableName = "jobs"

// jobsTable: one row per job, keyed by job id, indexed by instance, by
// state and by both (the leader scans PENDING jobs to assign and ASSIGNED/RUNNING ones
// to rebuild leases).
func jobsTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: jobsTableName,
		Indexes: map[string]*memdb.IndexSchema{
			"id":       {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Id"}},
			"instance": {Name: "instance", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "Instance"}},
			"state":    {Name: "state", Indexer: &memdb.IntFieldIndex{Field: "State"}},
			// The leader finds an agent's stopping attempts (to clear them
			// from its heartbeats, and to keep their instances busy).
			"stopping_agent": {Name: "stopping_agent", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "StoppingAgent"}},
			// The scheduler rebuilds its last runs from a policy's jobs.
			"policy": {Name: "policy", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "Policy"}},
			// The one-backup-per-instance check on every submit reads the
			// instance's active jobs here, not its whole history.
			"instance_state": {Name: "instance_state", AllowMissing: true, Indexer: &memdb.CompoundIndex{
				AllowMissing: true,
				Indexes:      []memdb.Indexer{&memdb.StringFieldIndex{Field: "Instance"}, &memdb.IntFieldIndex{Field: "State"}},
			}},
		},
	}
}

// Job returns the job with id, or ErrNotFound.
func (r *Read) Job(id string) (*v1.Job, error) { return r.JobWatch(id, nil) }

// JobWatch is Job that also adds the job's record to watch (when not nil),
// so that watch.Wait returns once the job changes, or is created.
func (r *Read) JobWatch(id string, watch *Watch) (*v1.Job, error) {
	obj, _ := r.first(jobsTableName, id, watch)
	if obj == nil {
		return nil, Errorf(ErrNotFound, "job %q not found", id)
	}
	return obj.(*v1.Job), nil
}

// JobFilter selects jobs; zero fields match everything.
type JobFilter struct {
	Instance string
	States   []v1.JobState
	Kind     v1.JobKind
}

// Jobs returns the jobs that match f, newest first: by creation time, then
// id.
func (r *Read) Jobs(f JobFilter) []*v1.Job {
	var js []*v1.Job
	if f.Instance != "" {
		js = all[*v1.Job](r, jobsTableName, "instance", f.Instance)
	} else {
		js = all[*v1.Job](r, jobsTableName, "id")
	}
	js = slices.DeleteFunc(js, func(j *v1.Job) bool {
		return (len(f.States) > 0 && !slices.Contains(f.States, j.GetState())) ||
			(f.Kind != v1.JobKind_JOB_KIND_UNSPECIFIED && j.GetKind() != f.Kind)
	})
	slices.SortStableFunc(js, func(a, b *v1.Job) int {
		if c := b.GetCreatedAt().AsTime().Compare(a.GetCreatedAt().AsTime()); c != 0 {
			return c
		}
		return cmp.Compare(b.GetId(), a.GetId())
	})
	return js
}

// JobsInState returns the jobs in state, oldest first (by creation time,
// then id): the order the leader assigns pending jobs in.
func (r *Read) JobsInState(state v1.JobState) []*v1.Job {
	js := all[*v1.Job](r, jobsTableName, "state", state)
	slices.SortStableFunc(js, func(a, b *v1.Job) int {
		if c := a.GetCreatedAt().AsTime().Compare(b.GetCreatedAt().AsTime()); c != 0 {
			return c
		}
		return cmp.Compare(a.GetId(), b.GetId())
	})
	return js
}

// ActiveJobs returns the jobs that are pending, assigned or running.
func (r *Read) ActiveJobs() []*v1.Job {
	var js []*v1.Job
	for _, s := range []v1.JobState{v1.JobState_JOB_STATE_PENDING, v1.JobState_JOB_STATE_ASSIGNED, v1.JobState_JOB_STATE_RUNNING} {
		js = append(js, r.JobsInState(s)...)
	}
	return js
}

// ActiveJobsOf returns the pending, assigned and running jobs of instance,
// in no particular order; the cost does not grow with the instance's
// finished jobs.
func (r *Read) ActiveJobsOf(instance string) []*v1.Job {
	var js []*v1.Job
	for _, s := range []v1.JobState{v1.JobState_JOB_STATE_PENDING, v1.JobState_JOB_STATE_ASSIGNED, v1.JobState_JOB_STATE_RUNNING} {
		js = append(js, all[*v1.Job](r, jobsTableName, "instance_state", instance, s)...)
	}
	return js
}

// StoppingJobsOf returns the jobs whose cancelled or expired attempt may
// still be stopping on agent (Job.stopping_lease), in no particular order.
func (r *Read) StoppingJobsOf(agent string) []*v1.Job {
	return all[*v1.Job](r, jobsTableName, "stopping_agent", agent)
}

// JobsOfPolicy returns the jobs policy scheduled, in no particular order.
func (r *Read) JobsOfPolicy(policy string) []*v1.Job {
	return all[*v1.Job](r, jobsTableName, "policy", policy)
}

// PutJob creates or replaces a job. j must not change afterwards.
func (w *Write) PutJob(j *v1.Job) error { return w.insert(jobsTableName, j) }

// Terminal reports whether a job in state s is over.
func Terminal(s v1.JobState) bool {
	switch s {
	case v1.JobState_JOB_STATE_SUCCEEDED, v1.JobState_JOB_STATE_FAILED, v1.JobState_JOB_STATE_CANCELLED:
		return true
	}
	return false
}

// Active reports whether a job in state s holds or waits for an agent.
func Active(s v1.JobState) bool {
	switch s {
	case v1.JobState_JOB_STATE_PENDING, v1.JobState_JOB_STATE_ASSIGNED, v1.JobState_JOB_STATE_RUNNING:
		return true
	}
	return false
}

// SameLease reports whether two lease tokens are the same grant. Two unset
// tokens are not: an unset lease never fences anything in.
func SameLease(a, b *v1.LeaseToken) bool {
	return a != nil && b != nil && a.GetTerm() == b.GetTerm() && a.GetIndex() == b.GetIndex() && a.GetJobId() == b.GetJobId()
}

// LeaseString formats a token for messages: "job@term/index".
func LeaseString(l *v1.LeaseToken) string {
	if l == nil {
		return "none"
	}
	return fmt.Sprintf("%s@%d/%d", l.GetJobId(), l.GetTerm(), l.GetIndex())
}

// AttemptBackupID is the backup id attempt n of job writes: every attempt
// has its own, so two attempts never write the same manifest.
func AttemptBackupID(jobID string, attempt uint32) string {
	return fmt.Sprintf("%s-a%d", jobID, attempt)
}

// StateName is a job state for messages: "running", "pending".
func StateName(s v1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

// KindName is a job kind for messages: "backup", "restore".
func KindName(k v1.JobKind) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k.String(), "JOB_KIND_")), "_", " ")
}

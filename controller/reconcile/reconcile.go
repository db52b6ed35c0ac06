package reconcile

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// State is what a manifest is to the catalog.
type State int

const (
	// Catalog: the catalog's backup (any status); kept.
	Catalog State = iota
	// Live: written by an attempt that may still be running, or newer than
	// the catalog read shows; never touched.
	Live
	// Superseded: an attempt the catalog refused or superseded; removed.
	Superseded
	// Grace: superseded, but the attempt ended less than the grace period
	// ago; removed by a later sweep.
	Grace
	// Unknown: the catalog knows no such backup or attempt (another
	// cluster's, a standalone backup, a fence it never issued); never
	// deleted.
	Unknown
)

// String is the state as listings show it.
func (s State) String() string {
	switch s {
	case Catalog:
		return "catalog"
	case Live:
		return "live"
	case Superseded:
		return "superseded"
	case Grace:
		return "grace"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// ParseAttemptID splits a backup id of the form `<job id>-a<attempt>`, the
// id the controller gives each attempt of a backup job. ok is false for any
// other id (a standalone backup's, for one).
func ParseAttemptID(id string) (jobID string, attempt uint32, ok bool) {
	i := strings.LastIndex(id, "-a")
	if i <= 0 || i+2 >= len(id) {
		return "", 0, false
	}
	digits := id[i+2:]
	if digits[0] == '0' {
		return "", 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 32)
	if err != nil || n == 0 {
		return "", 0, false
	}
	return id[:i], uint32(n), true
}

// AttemptID is the backup id attempt n of job writes.
func AttemptID(jobID string, attempt uint32) string {
	return fmt.Sprintf("%s-a%d", jobID, attempt)
}

// Attempt is one attempt of a backup job that did not become the job's
// backup and is over: whatever manifest it stored is an orphan.
type Attempt struct {
	JobID    string
	Attempt  uint32
	BackupID string
	// Fence is the attempt's lease: its manifest carries it.
	Fence *v1.LeaseToken
	// EndedAt is when the catalog ended the attempt.
	EndedAt time.Time
}

// DeadAttempts lists job's attempts that are over and did not become its
// backup, oldest first: every earlier attempt (superseded: its lease
// expired, or it was cancelled), and the last one when the job failed or
// was cancelled. The attempt of a running job, and the one a succeeded job
// recorded, are never listed. Non-backup jobs have none.
func DeadAttempts(j *v1.Job) []Attempt {
	if j.GetKind() != v1.JobKind_JOB_KIND_BACKUP {
		return nil
	}
	var recorded string
	if j.GetState() == v1.JobState_JOB_STATE_SUCCEEDED {
		recorded = j.GetResult().GetBackupId()
	}
	var out []Attempt
	for _, a := range j.GetPreviousAttempts() {
		if a.GetBackupId() == "" || a.GetLease() == nil || a.GetBackupId() == recorded {
			continue
		}
		out = append(out, Attempt{JobID: j.GetId(), Attempt: a.GetAttempt(), BackupID: a.GetBackupId(), Fence: a.GetLease(), EndedAt: a.GetEndedAt().AsTime()})
	}
	// An attempt that ended with the agent's own result keeps the job's
	// lease; one that failed that way is as dead as a superseded one.
	if catalog.Terminal(j.GetState()) && j.GetState() != v1.JobState_JOB_STATE_SUCCEEDED && j.GetLease() != nil {
		if id := j.GetBackup().GetBackupId(); id != "" {
			out = append(out, Attempt{JobID: j.GetId(), Attempt: j.GetAttempt(), BackupID: id, Fence: j.GetLease(), EndedAt: j.GetUpdatedAt().AsTime()})
		}
	}
	return out
}

// Manifest is what Judge needs of a stored manifest.
type Manifest struct {
	ID    string
	Fence *v1.LeaseToken
}

// Verdict is one manifest's state, with why.
type Verdict struct {
	ID     string
	State  State
	Reason string
	// JobID and Attempt are set when the id names an attempt of a job the
	// catalog holds.
	JobID   string
	Attempt uint32
	// RemovableAt is when a manifest in grace becomes removable.
	RemovableAt time.Time
}

// Params are Judge's inputs.
type Params struct {
	Manifest Manifest
	// Backup is the catalog's backup of that id, nil when it has none.
	Backup *v1.Backup
	// Job is the catalog's job the id names (ParseAttemptID), nil when the
	// id names none or the catalog has no such job.
	Job *v1.Job
	Now time.Time
	// Grace is how long after its attempt ended a superseded manifest is
	// left alone.
	Grace time.Duration
}

// Judge says what one manifest is to the catalog.
func Judge(p Params) Verdict {
	m := p.Manifest
	v := Verdict{ID: m.ID, State: Unknown}
	if p.Backup != nil {
		v.State, v.Reason, v.JobID = Catalog, "the catalog's backup ("+statusName(p.Backup.GetStatus())+")", p.Backup.GetJobId()
		return v
	}
	jobID, n, ok := ParseAttemptID(m.ID)
	if !ok {
		v.Reason = "not a controller job's attempt id (a standalone backup?)"
		return v
	}
	j := p.Job
	if j == nil || j.GetId() != jobID {
		v.Reason = "no job " + jobID + " in this catalog (another cluster's backup?)"
		return v
	}
	v.JobID, v.Attempt = jobID, n
	if j.GetKind() != v1.JobKind_JOB_KIND_BACKUP {
		v.Reason = fmt.Sprintf("job %s is a %s job, not a backup", jobID, catalog.KindName(j.GetKind()))
		return v
	}
	switch {
	case n > j.GetAttempt():
		v.State, v.Reason = Live, fmt.Sprintf("attempt %d is newer than the catalog's attempt %d of job %s", n, j.GetAttempt(), jobID)
		return v
	case n == j.GetAttempt() && catalog.Active(j.GetState()) && j.GetLease() != nil:
		// Assigned or running: its agent may be storing the manifest right
		// now. (A pending job holds no lease: its last attempt is in the
		// history, over, and judged below.)
		v.State, v.Reason = Live, fmt.Sprintf("attempt %d of job %s is %s", n, jobID, catalog.StateName(j.GetState()))
		return v
	case n == j.GetAttempt() && j.GetState() == v1.JobState_JOB_STATE_SUCCEEDED && j.GetResult().GetBackupId() == m.ID:
		// The record is gone (removed with its manifest, or by job record
		// retention) but this is the job's result: not ours to judge.
		v.State, v.Reason = Catalog, "job "+jobID+"'s recorded backup, with no backup record"
		return v
	}
	for _, a := range DeadAttempts(j) {
		if a.Attempt != n {
			continue
		}
		if !catalog.SameLease(a.Fence, m.Fence) {
			v.Reason = fmt.Sprintf("fenced by lease %s, but the catalog's attempt %d of job %s held %s: not this catalog's attempt",
				catalog.LeaseString(m.Fence), n, jobID, catalog.LeaseString(a.Fence))
			return v
		}
		why := fmt.Sprintf("attempt %d of job %s (%s", n, jobID, catalog.StateName(j.GetState()))
		if rec := j.GetResult().GetBackupId(); rec != "" && j.GetState() == v1.JobState_JOB_STATE_SUCCEEDED {
			why += ", backup " + rec
		}
		why += ")"
		if until := a.EndedAt.Add(p.Grace); p.Now.Before(until) {
			v.State, v.Reason, v.RemovableAt = Grace, why+": ended "+p.Now.Sub(a.EndedAt).Round(time.Second).String()+" ago", until
			return v
		}
		v.State, v.Reason = Superseded, why
		return v
	}
	v.Reason = fmt.Sprintf("the catalog holds no record of attempt %d of job %s", n, jobID)
	return v
}

func statusName(s v1.BackupStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "BACKUP_STATUS_"))
}

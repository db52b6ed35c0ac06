package fsm

import (
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/retention"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// applyPinBackup pins a complete or failed backup that is not marked
// expired; a new pin replaces the old one.
func applyPinBackup(w *catalog.Write, c *v1.PinBackup) (proto.Message, error) {
	old, err := w.Backup(c.GetBackupId())
	if err != nil {
		return nil, err
	}
	switch {
	case c.GetPin() == nil:
		return nil, catalog.Errorf(catalog.ErrInvalid, "PinBackup of %s without a pin", c.GetBackupId())
	case old.GetStatus() == v1.BackupStatus_BACKUP_STATUS_DELETED:
		return nil, catalog.Errorf(catalog.ErrConflict, "backup %s is deleted: there is nothing left to pin", old.GetId())
	case old.GetExpiredAt() != nil:
		return nil, catalog.Errorf(catalog.ErrConflict, "backup %s was marked expired at %s (%s): its manifest is being deleted; pin another backup",
			old.GetId(), old.GetExpiredAt().AsTime().UTC().Format("2006-01-02T15:04:05Z"), old.GetExpireReason())
	}
	b := proto.CloneOf(old)
	b.Pin = c.GetPin()
	if err := w.PutBackup(b); err != nil {
		return nil, err
	}
	return b, nil
}

// applyUnpinBackup removes a pin; a backup without one is left unchanged.
func applyUnpinBackup(w *catalog.Write, c *v1.UnpinBackup) (proto.Message, error) {
	old, err := w.Backup(c.GetBackupId())
	if err != nil {
		return nil, err
	}
	if old.GetPin() == nil {
		return old, errUnchanged
	}
	b := proto.CloneOf(old)
	b.Pin = nil
	if err := w.PutBackup(b); err != nil {
		return nil, err
	}
	return b, nil
}

// applyMarkBackupsExpired marks backups expired and submits the expire job
// that deletes them, all or nothing: a backup that is pinned, running,
// deleted, already marked, being restored or copied, or the instance's
// last complete one means the leader planned from a state that is gone (or
// an operator asked for what is never done), and nothing is marked.
func applyMarkBackupsExpired(w *catalog.Write, c *v1.MarkBackupsExpired) (proto.Message, error) {
	if c.GetCopyRepositoryUri() != "" {
		return applyMarkCopiesExpired(w, c)
	}
	j := c.GetJob()
	if j.GetKind() != v1.JobKind_JOB_KIND_EXPIRE || j.GetExpire() == nil {
		return nil, catalog.Errorf(catalog.ErrInvalid, "MarkBackupsExpired needs an expire job, not %s", kindName(j.GetKind()))
	}
	if len(c.GetReasons()) != len(c.GetBackupIds()) {
		return nil, catalog.Errorf(catalog.ErrInvalid, "MarkBackupsExpired: %d backups but %d reasons", len(c.GetBackupIds()), len(c.GetReasons()))
	}
	var targets []string
	for _, t := range j.GetExpire().GetBackups() {
		targets = append(targets, t.GetBackupId())
	}
	marked := make([]*v1.Backup, 0, len(c.GetBackupIds()))
	for i, id := range c.GetBackupIds() {
		old, err := w.Backup(id)
		if err != nil {
			return nil, err
		}
		switch {
		case old.GetInstance() != j.GetInstance():
			return nil, catalog.Errorf(catalog.ErrInvalid, "backup %s is of instance %q, the expire job of %q", id, old.GetInstance(), j.GetInstance())
		case old.GetPin() != nil:
			return nil, catalog.Errorf(catalog.ErrConflict, "backup %s is pinned (%s): it is never expired; unpin it first", id, old.GetPin().GetReason())
		case old.GetExpiredAt() != nil && !expiryFailed(w, old.GetExpireJobId()):
			return nil, catalog.Errorf(catalog.ErrConflict, "backup %s is already marked expired (job %s)", id, old.GetExpireJobId())
		case old.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE && old.GetStatus() != v1.BackupStatus_BACKUP_STATUS_FAILED:
			return nil, catalog.Errorf(catalog.ErrConflict, "backup %s is %s: only a complete or failed backup is expired", id, old.GetStatus())
		case !slices.Contains(targets, id):
			return nil, catalog.Errorf(catalog.ErrInvalid, "backup %s is marked but its expire job %s does not delete it", id, j.GetId())
		}
		for _, a := range w.ActiveJobsOf(old.GetInstance()) {
			if r := a.GetRestore(); r != nil && r.GetBackupId() == id {
				return nil, catalog.Errorf(catalog.ErrConflict, "backup %s is being restored by job %s: it expires after the restore", id, a.GetId())
			}
			if cp := a.GetCopy(); cp != nil && cp.GetBackupId() == id {
				return nil, catalog.Errorf(catalog.ErrConflict, "backup %s is being copied by job %s: it expires after the copy", id, a.GetId())
			}
		}
		b := proto.CloneOf(old)
		b.ExpiredAt, b.ExpireReason, b.ExpireJobId = c.GetExpiredAt(), c.GetReasons()[i], j.GetId()
		marked = append(marked, b)
	}
	// The last complete backup of an instance is never expired, whoever
	// asks: checked here, where no concurrent entry can slip between the
	// check and the mark. "Last" is by the time its data corresponds to,
	// as retention orders backups.
	var newest *v1.Backup
	for _, b := range w.Backups(j.GetInstance()) {
		if b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE || b.GetExpiredAt() != nil {
			continue
		}
		if newest == nil || retention.BackupTime(b).After(retention.BackupTime(newest)) ||
			(retention.BackupTime(b).Equal(retention.BackupTime(newest)) && b.GetId() > newest.GetId()) {
			newest = b
		}
	}
	if newest != nil && slices.Contains(c.GetBackupIds(), newest.GetId()) {
		return nil, catalog.Errorf(catalog.ErrConflict, "backup %s is the last complete backup of instance %q: it is never expired", newest.GetId(), j.GetInstance())
	}
	if _, err := applySubmitJob(w, &v1.SubmitJob{Job: j}); err != nil {
		return nil, err
	}
	for _, b := range marked {
		if err := w.PutBackup(b); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// applyFinishExpiry records that an expire job deleted the listed backups'
// manifests: they become DELETED. Each must have been marked for that job;
// one already DELETED is left as it is (a retried report). For a copy
// repository, the backups' copy entries there are removed instead.
func applyFinishExpiry(w *catalog.Write, c *v1.FinishExpiry) (proto.Message, error) {
	if _, err := w.Job(c.GetJobId()); err != nil {
		return nil, err
	}
	if repo := c.GetCopyRepositoryUri(); repo != "" {
		changed := 0
		for _, id := range c.GetDeletedBackupIds() {
			old, err := w.Backup(id)
			if err != nil {
				return nil, err
			}
			i := slices.IndexFunc(old.GetCopies(), func(cp *v1.BackupCopy) bool { return cp.GetRepositoryUri() == repo })
			if i < 0 {
				continue // removed already
			}
			if got := old.GetCopies()[i].GetExpireJobId(); got != c.GetJobId() {
				return nil, catalog.Errorf(catalog.ErrInvalid, "the copy of backup %s in %s was not marked for expire job %s (its job: %q)", id, repo, c.GetJobId(), got)
			}
			b := proto.CloneOf(old)
			b.Copies = slices.Delete(slices.Clone(b.Copies), i, i+1)
			if err := w.PutBackup(b); err != nil {
				return nil, err
			}
			changed++
		}
		if changed == 0 {
			return nil, errUnchanged
		}
		return nil, nil
	}
	changed := 0
	for _, id := range c.GetDeletedBackupIds() {
		old, err := w.Backup(id)
		if err != nil {
			return nil, err
		}
		if old.GetExpireJobId() != c.GetJobId() {
			return nil, catalog.Errorf(catalog.ErrInvalid, "backup %s was not marked for expire job %s (its job: %q)", id, c.GetJobId(), old.GetExpireJobId())
		}
		if old.GetStatus() == v1.BackupStatus_BACKUP_STATUS_DELETED {
			continue
		}
		b := proto.CloneOf(old)
		b.Status, b.DeletedAt = v1.BackupStatus_BACKUP_STATUS_DELETED, c.GetDeletedAt()
		if err := w.PutBackup(b); err != nil {
			return nil, err
		}
		changed++
	}
	if changed == 0 {
		return nil, errUnchanged
	}
	return nil, nil
}

// applyRecordBackupCopy adds a verified copy to a complete backup; a copy
// in the same repository replaces the earlier entry.
func applyRecordBackupCopy(w *catalog.Write, c *v1.RecordBackupCopy) (proto.Message, error) {
	old, err := w.Backup(c.GetBackupId())
	if err != nil {
		return nil, err
	}
	cp := c.GetCopy()
	switch {
	case cp.GetRepositoryUri() == "":
		return nil, catalog.Errorf(catalog.ErrInvalid, "a copy of backup %s needs its repository", old.GetId())
	case cp.GetRepositoryUri() == old.GetRepositoryUri():
		return nil, catalog.Errorf(catalog.ErrInvalid, "backup %s is itself in %s: a copy goes to another repository", old.GetId(), cp.GetRepositoryUri())
	case old.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE:
		return nil, catalog.Errorf(catalog.ErrConflict, "backup %s is %s: only a complete backup has copies", old.GetId(), old.GetStatus())
	}
	if i := slices.IndexFunc(old.GetCopies(), func(o *v1.BackupCopy) bool { return o.GetRepositoryUri() == cp.GetRepositoryUri() }); i >= 0 && old.GetCopies()[i].GetExpiredAt() != nil {
		return nil, catalog.Errorf(catalog.ErrConflict, "the copy of backup %s in %s is being expired (job %s)", old.GetId(), cp.GetRepositoryUri(), old.GetCopies()[i].GetExpireJobId())
	}
	b := proto.CloneOf(old)
	b.Copies = slices.DeleteFunc(slices.Clone(b.Copies), func(o *v1.BackupCopy) bool { return o.GetRepositoryUri() == cp.GetRepositoryUri() })
	b.Copies = append(b.Copies, cp)
	if err := w.PutBackup(b); err != nil {
		return nil, err
	}
	return b, nil
}

// applyMarkCopiesExpired is MarkBackupsExpired for a copy repository's own
// retention: each backup's copy there is marked, with the same refusals as
// for backups (pinned, already marked, the newest copy there, a restore
// from it or a copy to it running), all or nothing.
func applyMarkCopiesExpired(w *catalog.Write, c *v1.MarkBackupsExpired) (proto.Message, error) {
	j, repo := c.GetJob(), c.GetCopyRepositoryUri()
	ep := j.GetExpire()
	if j.GetKind() != v1.JobKind_JOB_KIND_EXPIRE || ep == nil || !ep.GetCopies() || ep.GetRepositoryUri() != repo {
		return nil, catalog.Errorf(catalog.ErrInvalid, "MarkBackupsExpired of copies in %s needs an expire job of copies in that repository", repo)
	}
	if len(c.GetReasons()) != len(c.GetBackupIds()) {
		return nil, catalog.Errorf(catalog.ErrInvalid, "MarkBackupsExpired: %d backups but %d reasons", len(c.GetBackupIds()), len(c.GetReasons()))
	}
	copyIn := func(b *v1.Backup) int {
		return slices.IndexFunc(b.GetCopies(), func(cp *v1.BackupCopy) bool { return cp.GetRepositoryUri() == repo })
	}
	var newest *v1.Backup
	for _, b := range w.Backups(j.GetInstance()) {
		if i := copyIn(b); i < 0 || b.GetCopies()[i].GetExpiredAt() != nil {
			continue
		}
		if newest == nil || retention.BackupTime(b).After(retention.BackupTime(newest)) ||
			(retention.BackupTime(b).Equal(retention.BackupTime(newest)) && b.GetId() > newest.GetId()) {
			newest = b
		}
	}
	marked := make([]*v1.Backup, 0, len(c.GetBackupIds()))
	for k, id := range c.GetBackupIds() {
		old, err := w.Backup(id)
		if err != nil {
			return nil, err
		}
		i := copyIn(old)
		switch {
		case old.GetInstance() != j.GetInstance():
			return nil, catalog.Errorf(catalog.ErrInvalid, "backup %s is of instance %q, the expire job of %q", id, old.GetInstance(), j.GetInstance())
		case i < 0:
			return nil, catalog.Errorf(catalog.ErrConflict, "backup %s has no copy in %s", id, repo)
		case old.GetPin() != nil:
			return nil, catalog.Errorf(catalog.ErrConflict, "backup %s is pinned (%s): none of its copies is expired; unpin it first", id, old.GetPin().GetReason())
		case old.GetCopies()[i].GetExpiredAt() != nil && !expiryFailed(w, old.GetCopies()[i].GetExpireJobId()):
			return nil, catalog.Errorf(catalog.ErrConflict, "the copy of backup %s in %s is already marked expired (job %s)", id, repo, old.GetCopies()[i].GetExpireJobId())
		case newest != nil && newest.GetId() == id:
			return nil, catalog.Errorf(catalog.ErrConflict, "the copy of backup %s is the newest in %s: it is never expired", id, repo)
		case !slices.ContainsFunc(ep.GetBackups(), func(t *v1.ExpireTarget) bool { return t.GetBackupId() == id }):
			return nil, catalog.Errorf(catalog.ErrInvalid, "the copy of backup %s is marked but its expire job %s does not delete it", id, j.GetId())
		}
		for _, a := range w.ActiveJobsOf(old.GetInstance()) {
			if r := a.GetRestore(); r != nil && r.GetBackupId() == id && r.GetRepositoryUri() == repo {
				return nil, catalog.Errorf(catalog.ErrConflict, "the copy of backup %s in %s is being restored by job %s", id, repo, a.GetId())
			}
			if cp := a.GetCopy(); cp != nil && cp.GetBackupId() == id && cp.GetDestinationRepositoryUri() == repo {
				return nil, catalog.Errorf(catalog.ErrConflict, "backup %s is being copied to %s by job %s", id, repo, a.GetId())
			}
		}
		b := proto.CloneOf(old)
		b.Copies = slices.Clone(b.Copies)
		cp := proto.CloneOf(b.Copies[i])
		cp.ExpiredAt, cp.ExpireReason, cp.ExpireJobId = c.GetExpiredAt(), c.GetReasons()[k], j.GetId()
		b.Copies[i] = cp
		marked = append(marked, b)
	}
	if _, err := applySubmitJob(w, &v1.SubmitJob{Job: j}); err != nil {
		return nil, err
	}
	for _, b := range marked {
		if err := w.PutBackup(b); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// ExpiryFailed reports whether the expire job that marked a backup (or a
// copy) ended without deleting it (failed or cancelled): the mark stays,
// and a later MarkBackupsExpired may hand the backup to a new job.
func ExpiryFailed(r *catalog.Read, jobID string) bool {
	j, err := r.Job(jobID)
	if err != nil {
		return false
	}
	st := j.GetState()
	return st == v1.JobState_JOB_STATE_FAILED || st == v1.JobState_JOB_STATE_CANCELLED
}

func expiryFailed(w *catalog.Write, jobID string) bool { return ExpiryFailed(&w.Read, jobID) }

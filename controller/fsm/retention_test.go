package fsm

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func pinCmd(id, reason string) *v1.Command {
	return &v1.Command{Cmd: &v1.Command_PinBackup{PinBackup: &v1.PinBackup{BackupId: id, Pin: &v1.BackupPin{Reason: reason, By: "alice", At: ts(time.Minute)}}}}
}

func markCmd(jobID, instance string, ids ...string) *v1.Command {
	c := &v1.MarkBackupsExpired{ExpiredAt: ts(time.Hour), Job: &v1.Job{
		Id: jobID, Kind: v1.JobKind_JOB_KIND_EXPIRE, Instance: instance, State: v1.JobState_JOB_STATE_PENDING,
		CreatedAt: ts(time.Hour), UpdatedAt: ts(time.Hour), Params: &v1.Job_Expire{Expire: &v1.ExpireParams{}},
	}}
	for _, id := range ids {
		c.BackupIds = append(c.BackupIds, id)
		c.Reasons = append(c.Reasons, "expire: outside every rule")
		c.Job.GetExpire().Backups = append(c.Job.GetExpire().Backups, &v1.ExpireTarget{BackupId: id})
	}
	return &v1.Command{Cmd: &v1.Command_MarkBackupsExpired{MarkBackupsExpired: c}}
}

func recordCmd(id, instance string) *v1.Command {
	return &v1.Command{Cmd: &v1.Command_RecordBackup{RecordBackup: &v1.RecordBackup{Backup: &v1.Backup{
		Id: id, Instance: instance, Engine: "logical", Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE,
		RepositoryUri: "file:///primary", StartedAt: ts(0)}, RecordedAt: ts(0)}}}
}

func (n *node) backup(id string) *v1.Backup {
	n.t.Helper()
	b, err := n.fsm.Store().Read().Backup(id)
	if err != nil {
		n.t.Fatal(err)
	}
	return b
}

// TestPinsAndExpiry: a pinned backup cannot be marked (and the entry marks
// nothing at all), a marked one cannot be pinned nor restored, and the
// expire job's report makes it DELETED once.
func TestPinsAndExpiry(t *testing.T) {
	n := newNode(t)
	n.ok(register("db1", "db1", "db2"))
	n.ok(recordCmd("b1", "db1"))
	n.ok(recordCmd("b2", "db1"))
	n.ok(recordCmd("b3", "db2"))

	b := n.ok(pinCmd("b1", "audit")).(*v1.Backup)
	if b.GetPin().GetReason() != "audit" || b.GetPin().GetBy() != "alice" {
		t.Fatalf("pinned = %v", b)
	}
	n.fails(markCmd("e1", "db1", "b2", "b1"), catalog.ErrConflict, "backup b1 is pinned (audit)")
	if n.backup("b2").GetExpiredAt() != nil {
		t.Fatal("a refused mark marked b2 all the same")
	}
	if _, err := n.fsm.Store().Read().Job("e1"); err == nil {
		t.Fatal("a refused mark submitted its job")
	}
	n.fails(markCmd("e1", "db1", "b3"), catalog.ErrInvalid, `of instance "db2"`)
	// Unpin twice: the second changes nothing.
	n.ok(&v1.Command{Cmd: &v1.Command_UnpinBackup{UnpinBackup: &v1.UnpinBackup{BackupId: "b1"}}})
	if r := n.apply(&v1.Command{Cmd: &v1.Command_UnpinBackup{UnpinBackup: &v1.UnpinBackup{BackupId: "b1"}}}); r.Err != nil || !r.Unchanged {
		t.Fatalf("second unpin = %+v", r)
	}
	// b1 and b2 start at the same time: the last is the greater id, b2.
	n.fails(markCmd("e1", "db1", "b1", "b2"), catalog.ErrConflict, `backup b2 is the last complete backup of instance "db1"`)
	n.ok(recordCmd("b4", "db1"))
	n.ok(markCmd("e1", "db1", "b1", "b2"))
	n.fails(markCmd("e3", "db1", "b4"), catalog.ErrConflict, "b4 is the last complete backup")
	for _, id := range []string{"b1", "b2"} {
		if b := n.backup(id); b.GetExpiredAt() == nil || b.GetExpireJobId() != "e1" || b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE {
			t.Fatalf("%s after mark = %v", id, b)
		}
	}
	if j := n.job("e1"); j.GetKind() != v1.JobKind_JOB_KIND_EXPIRE || j.GetState() != v1.JobState_JOB_STATE_PENDING {
		t.Fatalf("expire job = %v", j)
	}
	n.fails(pinCmd("b1", "too late"), catalog.ErrConflict, "marked expired")
	n.fails(markCmd("e2", "db1", "b2"), catalog.ErrConflict, "already marked expired (job e1)")
	// A failed expire job leaves its marks; a new job may take them over.
	n.ok(updateCmd(&v1.UpdateJobState{JobId: "e1", State: v1.JobState_JOB_STATE_FAILED, Reason: "repository down", UpdatedAt: ts(90 * time.Minute)}))
	n.ok(markCmd("e2", "db1", "b1", "b2"))
	if b := n.backup("b2"); b.GetExpireJobId() != "e2" {
		t.Fatalf("b2 after re-marking: %v", b)
	}
	n.fails(&v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: &v1.Job{
		Id: "r1", Kind: v1.JobKind_JOB_KIND_RESTORE, Instance: "db1", State: v1.JobState_JOB_STATE_PENDING,
		Params: &v1.Job_Restore{Restore: &v1.RestoreParams{BackupId: "b2"}},
	}}}}, catalog.ErrConflict, "marked expired")

	finish := &v1.Command{Cmd: &v1.Command_FinishExpiry{FinishExpiry: &v1.FinishExpiry{JobId: "e2", DeletedBackupIds: []string{"b1", "b2"}, DeletedAt: ts(2 * time.Hour)}}}
	n.ok(finish)
	for _, id := range []string{"b1", "b2"} {
		if b := n.backup(id); b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_DELETED || !b.GetDeletedAt().AsTime().Equal(t0.Add(2*time.Hour)) {
			t.Fatalf("%s after finish = %v", id, b)
		}
	}
	if r := n.apply(finish); r.Err != nil || !r.Unchanged {
		t.Fatalf("repeated finish = %+v", r)
	}
	n.fails(&v1.Command{Cmd: &v1.Command_FinishExpiry{FinishExpiry: &v1.FinishExpiry{JobId: "e2", DeletedBackupIds: []string{"b3"}}}},
		catalog.ErrInvalid, "b3 was not marked for expire job e2")
	n.fails(pinCmd("b2", "x"), catalog.ErrConflict, "deleted")
}

func TestRecordBackupCopy(t *testing.T) {
	n := newNode(t)
	n.ok(register("db1", "db1"))
	n.ok(recordCmd("b1", "db1"))
	cp := func(uri string, at time.Duration) *v1.Command {
		return &v1.Command{Cmd: &v1.Command_RecordBackupCopy{RecordBackupCopy: &v1.RecordBackupCopy{BackupId: "b1",
			Copy: &v1.BackupCopy{RepositoryUri: uri, CopiedAt: ts(at), JobId: "c"}}}}
	}
	n.ok(cp("s3://b/x", time.Minute))
	n.ok(cp("file:///second", 2*time.Minute))
	n.ok(cp("s3://b/x", 3*time.Minute)) // again: replaces
	cs := n.backup("b1").GetCopies()
	if len(cs) != 2 || cs[0].GetRepositoryUri() != "file:///second" || cs[1].GetCopiedAt().AsTime() != t0.Add(3*time.Minute) {
		t.Fatalf("copies = %v", cs)
	}
	n.fails(cp("file:///primary", time.Minute), catalog.ErrInvalid, "is itself in file:///primary")
	n.fails(cp("", time.Minute), catalog.ErrInvalid, "needs its repository")
}

// TestCopyRetention: a copy repository's own expiry marks and then removes
// copy entries, never the backups; the newest copy there and a pinned
// backup's copy are refused; a copy being expired is not copied again nor
// restored from.
func TestCopyRetention(t *testing.T) {
	n := newNode(t)
	n.ok(register("db1", "db1"))
	const repo = "s3://dr/copies"
	for i, id := range []string{"b1", "b2", "b3"} {
		n.ok(recordCmd(id, "db1"))
		b := proto.CloneOf(n.backup(id))
		b.StartedAt = ts(time.Duration(i) * time.Hour)
		n.ok(&v1.Command{Cmd: &v1.Command_RecordBackup{RecordBackup: &v1.RecordBackup{Backup: b}}})
		n.ok(&v1.Command{Cmd: &v1.Command_RecordBackupCopy{RecordBackupCopy: &v1.RecordBackupCopy{BackupId: id,
			Copy: &v1.BackupCopy{RepositoryUri: repo, CopiedAt: ts(time.Hour)}}}})
	}
	mark := func(job string, ids ...string) *v1.Command {
		c := markCmd(job, "db1", ids...)
		c.GetMarkBackupsExpired().CopyRepositoryUri = repo
		c.GetMarkBackupsExpired().GetJob().GetExpire().RepositoryUri = repo
		c.GetMarkBackupsExpired().GetJob().GetExpire().Copies = true
		return c
	}
	n.fails(mark("e1", "b3"), catalog.ErrConflict, "the copy of backup b3 is the newest in s3://dr/copies")
	n.ok(pinCmd("b2", "keep"))
	n.fails(mark("e1", "b1", "b2"), catalog.ErrConflict, "backup b2 is pinned (keep): none of its copies is expired")
	n.ok(&v1.Command{Cmd: &v1.Command_UnpinBackup{UnpinBackup: &v1.UnpinBackup{BackupId: "b2"}}})
	bad := mark("e1", "b1")
	bad.GetMarkBackupsExpired().GetJob().GetExpire().Copies = false
	n.fails(bad, catalog.ErrInvalid, "needs an expire job of copies")
	n.ok(mark("e1", "b1", "b2"))
	if b := n.backup("b1"); b.GetExpiredAt() != nil || b.GetCopies()[0].GetExpireJobId() != "e1" {
		t.Fatalf("b1 after marking its copy: %v", b)
	}
	n.fails(&v1.Command{Cmd: &v1.Command_RecordBackupCopy{RecordBackupCopy: &v1.RecordBackupCopy{BackupId: "b1",
		Copy: &v1.BackupCopy{RepositoryUri: repo, CopiedAt: ts(2 * time.Hour)}}}}, catalog.ErrConflict, "is being expired (job e1)")
	n.fails(&v1.Command{Cmd: &v1.Command_SubmitJob{SubmitJob: &v1.SubmitJob{Job: &v1.Job{
		Id: "r1", Kind: v1.JobKind_JOB_KIND_RESTORE, Instance: "db1", State: v1.JobState_JOB_STATE_PENDING,
		Params: &v1.Job_Restore{Restore: &v1.RestoreParams{BackupId: "b1", RepositoryUri: repo}},
	}}}}, catalog.ErrConflict, "is being expired by job e1")
	n.ok(&v1.Command{Cmd: &v1.Command_FinishExpiry{FinishExpiry: &v1.FinishExpiry{JobId: "e1", DeletedBackupIds: []string{"b1", "b2"}, CopyRepositoryUri: repo}}})
	for _, id := range []string{"b1", "b2"} {
		if b := n.backup(id); len(b.GetCopies()) != 0 || b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_COMPLETE {
			t.Fatalf("%s after its copy's expiry: %v", id, b)
		}
	}
	if len(n.backup("b3").GetCopies()) != 1 {
		t.Fatal("b3's copy went too")
	}
}

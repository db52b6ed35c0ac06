package fsm

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func pruneCmd(at time.Duration, maxJobs uint32, age, tombstone time.Duration, batch uint32) *v1.Command {
	return &v1.Command{Cmd: &v1.Command_PruneCatalog{PruneCatalog: &v1.PruneCatalog{
		At: ts(at), MaxJobs: maxJobs, JobAgeSeconds: int64(age / time.Second), TombstoneAgeSeconds: int64(tombstone / time.Second), Batch: batch,
	}}}
}

func cancelCmd(id string, at time.Duration) *v1.Command {
	return updateCmd(&v1.UpdateJobState{JobId: id, State: v1.JobState_JOB_STATE_CANCELLED, Reason: "cancelled by test", UpdatedAt: ts(at)})
}

func (n *node) has(id string) bool {
	_, err := n.fsm.Store().Read().Job(id)
	return err == nil
}

func (n *node) pruned(c *v1.Command) *v1.PruneCatalogResult {
	n.t.Helper()
	r := n.apply(c)
	if r.Err != nil {
		n.t.Fatalf("prune: %v", r.Err)
	}
	return r.Value.(*v1.PruneCatalogResult)
}

// pruneLog is one log of history: j0 succeeds with backup j0-a1 and jobs
// j1..j9 are cancelled, job i created at minute i and ended 30 s later;
// p0, on db2, stays pending (created before all of them); s1 and s2 are
// two runs of one scheduled key, ended long ago.
func pruneLog(n *node) {
	n.ok(register("db1", "db1", "db2"))
	sub := submitBackup("p0", "db2", -time.Hour)
	n.ok(sub)
	for i, id := range []string{"s1", "s2"} {
		c := submitBackup(id, "db1", -3*time.Hour+time.Duration(i)*time.Minute)
		j := c.GetSubmitJob().GetJob()
		j.Policy, j.RunKey, j.ScheduledFor = "nightly", "db1", j.GetCreatedAt()
		n.ok(c)
		n.ok(cancelCmd(id, -3*time.Hour+time.Duration(i)*time.Minute+time.Second))
	}
	n.ok(submitBackup("j0", "db1", 0))
	j := n.ok(assign("j0", "db1", 10*time.Second)).(*v1.Job)
	n.ok(updateCmd(completeBackup(j, 30*time.Second)))
	for i := 1; i < 10; i++ {
		id := fmt.Sprintf("j%d", i)
		at := time.Duration(i) * time.Minute
		n.ok(submitBackup(id, "db1", at))
		n.ok(cancelCmd(id, at+30*time.Second))
	}
}

// TestPruneJobHistory: by count then by age, oldest finished first, on two
// FSMs that apply the same log and end with identical snapshots; a job
// that is not finished, the job of a live backup and a scheduled key's
// latest run are never removed.
func TestPruneJobHistory(t *testing.T) {
	a, b := newNode(t), newNode(t)
	for _, n := range []*node{a, b} {
		pruneLog(n)
		// 12 finished (s1, s2, j0..j9): keep the newest 5 (j5..j9); of
		// the older, j0 has a live backup and s2 is its key's latest run.
		if r := n.pruned(pruneCmd(time.Hour, 5, 0, 0, 0)); r.GetJobsRemoved() != 5 || r.GetMore() {
			t.Fatalf("prune by count = %v, want 5 removed (s1, j1..j4)", r)
		}
		for id, want := range map[string]bool{"p0": true, "s1": false, "s2": true, "j0": true, "j1": false, "j4": false, "j5": true, "j9": true} {
			if n.has(id) != want {
				t.Fatalf("after prune by count, job %s present = %v, want %v", id, !want, want)
			}
		}
		// Again: nothing more to remove, and the entry says so.
		if r := n.apply(pruneCmd(time.Hour, 5, 0, 0, 0)); r.Err != nil || !r.Unchanged {
			t.Fatalf("second prune = %+v, want unchanged", r)
		}
		// By age, from the entry's time: at 60 min, 53 min keeps what
		// ended from minute 7 on: j5 (5m30s) and j6 go.
		if r := n.pruned(pruneCmd(time.Hour, 0, 53*time.Minute, 0, 0)); r.GetJobsRemoved() != 2 {
			t.Fatalf("prune by age = %v, want 2 removed", r)
		}
		if n.has("j5") || n.has("j6") || !n.has("j7") || !n.has("p0") {
			t.Fatal("prune by age removed the wrong jobs")
		}
		// Pending p0, created before everything, outlives any bound.
		n.pruned(pruneCmd(1000*time.Hour, 1, time.Second, 0, 0))
		if !n.has("p0") || !n.has("j0") || !n.has("s2") {
			t.Fatal("a pending job, a live backup's job or a key's latest run was pruned")
		}
	}
	sa, _ := Marshal(a.fsm.Store())
	sb, _ := Marshal(b.fsm.Store())
	if !bytes.Equal(sa, sb) {
		t.Fatal("two FSMs that applied the same log differ after pruning")
	}
}

// TestPruneBatch: one entry removes at most batch records and says more
// remain; the next ones finish the work.
func TestPruneBatch(t *testing.T) {
	n := newNode(t)
	pruneLog(n)
	if r := n.pruned(pruneCmd(time.Hour, 1, 0, 0, 3)); r.GetJobsRemoved() != 3 || !r.GetMore() {
		t.Fatalf("first batch = %v, want 3 removed and more", r)
	}
	// Oldest finished first: s1 (s2 is kept), j1, j2.
	if n.has("s1") || n.has("j1") || n.has("j2") || !n.has("j3") {
		t.Fatal("the first batch did not take the oldest finished jobs")
	}
	n.pruned(pruneCmd(time.Hour, 1, 0, 0, 3))
	if r := n.pruned(pruneCmd(time.Hour, 1, 0, 0, 3)); r.GetMore() || !n.has("j9") || n.has("j8") {
		t.Fatalf("last batch = %v; j9 present %v, j8 present %v", r, n.has("j9"), n.has("j8"))
	}
}

// TestPruneResumes: an entry with more to do says where its job walk
// stopped, the next entry walks only after that point (jobs before it
// stay until the next pass starts from the oldest), and a pass that
// follows the cursors ends where one without them does.
func TestPruneResumes(t *testing.T) {
	n := newNode(t)
	pruneLog(n)
	// Finish order: s1, s2 (kept: latest run), j0 (kept: live backup),
	// j1, j2 | j3 ...: the batch of 3 is full at j3.
	r := n.pruned(pruneCmd(time.Hour, 1, 0, 0, 3))
	if !r.GetMore() || r.GetResumeAfterId() != "j2" || r.GetResumeAfterNanos() != ts(2*time.Minute+30*time.Second).AsTime().UnixNano() {
		t.Fatalf("first batch = %v, want more and a cursor at j2 (ended 2m30s)", r)
	}
	// An entry resuming after j5 leaves j3 and j4, before its cursor,
	// and takes the next three: the walk starts at the cursor.
	c := pruneCmd(time.Hour, 1, 0, 0, 3)
	c.GetPruneCatalog().ResumeAfterId = "j5"
	c.GetPruneCatalog().ResumeAfterNanos = ts(5*time.Minute + 30*time.Second).AsTime().UnixNano()
	if r := n.pruned(c); r.GetJobsRemoved() != 3 || r.GetMore() {
		t.Fatalf("resumed batch = %v, want 3 removed and nothing more (j9 is the newest)", r)
	}
	if !n.has("j3") || !n.has("j4") || !n.has("j5") || n.has("j6") || n.has("j8") || !n.has("j9") {
		t.Fatal("the resumed entry did not start after its cursor")
	}

	// A whole pass following the cursors, against one without: the
	// same catalog at the end.
	a, b := newNode(t), newNode(t)
	pruneLog(a)
	pruneLog(b)
	for i := 0; ; i++ {
		c := pruneCmd(time.Hour, 2, 0, 0, 2)
		if i > 0 {
			c.GetPruneCatalog().ResumeAfterNanos, c.GetPruneCatalog().ResumeAfterId = r.GetResumeAfterNanos(), r.GetResumeAfterId()
		}
		if r = a.pruned(c); !r.GetMore() {
			break
		}
	}
	for b.pruned(pruneCmd(time.Hour, 2, 0, 0, 2)).GetMore() {
	}
	sa, _ := Marshal(a.fsm.Store())
	sb, _ := Marshal(b.fsm.Store())
	if !bytes.Equal(sa, sb) || a.has("j7") || !a.has("j8") {
		t.Fatal("a pass that resumes ends differently from one that walks from the oldest")
	}
}

// TestBackupRecordPrunedAfterManifestDeletion: FinishExpiry makes the
// record a DELETED tombstone; PruneCatalog removes it once the tombstone
// window passed, and the job that wrote it becomes prunable.
func TestBackupRecordPrunedAfterManifestDeletion(t *testing.T) {
	n := newNode(t)
	pruneLog(n)
	newer := recordCmd("newer", "db1")
	newer.GetRecordBackup().GetBackup().StartedAt = ts(time.Hour) // j0-a1 is not the last complete backup
	n.ok(newer)
	n.ok(markCmd("e1", "db1", "j0-a1"))
	n.ok(&v1.Command{Cmd: &v1.Command_FinishExpiry{FinishExpiry: &v1.FinishExpiry{JobId: "e1", DeletedBackupIds: []string{"j0-a1"}, DeletedAt: ts(2 * time.Hour)}}})
	if b := n.backup("j0-a1"); b.GetStatus() != v1.BackupStatus_BACKUP_STATUS_DELETED {
		t.Fatalf("after FinishExpiry: %v", b)
	}
	// Within the window (1 h after the deletion, window 24 h) it stays.
	if r := n.apply(pruneCmd(3*time.Hour, 0, 0, 24*time.Hour, 0)); r.Err != nil || !r.Unchanged {
		t.Fatalf("prune within the tombstone window = %+v", r)
	}
	r := n.pruned(pruneCmd(26*time.Hour+time.Second, 0, time.Hour, 24*time.Hour, 0))
	if r.GetBackupsRemoved() != 1 {
		t.Fatalf("prune after the window = %v, want the tombstone removed", r)
	}
	if _, err := n.fsm.Store().Read().Backup("j0-a1"); err == nil {
		t.Fatal("backup record j0-a1 is still there after its manifest's deletion and the window")
	}
	// j0 is no longer protected by a live backup; the pending expire job
	// e1 stays.
	n.pruned(pruneCmd(27*time.Hour, 0, time.Hour, 24*time.Hour, 0))
	if n.has("j0") || !n.has("e1") {
		t.Fatalf("j0 present %v (want pruned), e1 present %v (want kept)", n.has("j0"), n.has("e1"))
	}
	if _, err := n.fsm.Store().Read().Backup("newer"); err != nil {
		t.Fatal("a live backup was removed")
	}
}

// TestAttemptsBounded: every job keeps its newest keptAttempts attempts,
// not only binlog streams.
func TestAttemptsBounded(t *testing.T) {
	n := newNode(t)
	n.ok(register("db1", "db1"))
	c := submitBackup("j1", "db1", 0)
	c.GetSubmitJob().GetJob().MaxAttempts = 100
	n.ok(c)
	for i := range keptAttempts + 5 {
		j := n.ok(assign("j1", "db1", time.Duration(i)*time.Minute)).(*v1.Job)
		n.ok(expire("j1", j.GetLease(), true, time.Duration(i)*time.Minute+time.Second))
	}
	j := n.job("j1")
	if len(j.GetPreviousAttempts()) != keptAttempts || j.GetPreviousAttempts()[0].GetAttempt() != 6 || j.GetAttempt() != keptAttempts+5 {
		t.Fatalf("attempt %d, %d kept, the oldest kept is %d", j.GetAttempt(), len(j.GetPreviousAttempts()), j.GetPreviousAttempts()[0].GetAttempt())
	}
}

// TestPruneKeepsUnsweptOrphans: a backup job whose cancelled attempt may
// have stored a manifest outlives the count bound until the reconcile
// sweep judged it (else its orphan would be "unknown" for ever), but not
// the age bound.
func TestPruneKeepsUnsweptOrphans(t *testing.T) {
	n := newNode(t)
	pruneLog(n)
	n.ok(submitBackup("o1", "db1", -2*time.Hour))
	n.ok(assign("o1", "db1", -2*time.Hour+time.Second))
	n.ok(cancelCmd("o1", -2*time.Hour+time.Minute))
	n.pruned(pruneCmd(time.Hour, 1, 0, 0, 0))
	if !n.has("o1") {
		t.Fatal("the count bound removed a job whose dead attempt the sweep has not judged")
	}
	n.pruned(pruneCmd(time.Hour, 1, time.Hour, 0, 0))
	if n.has("o1") {
		t.Fatal("the age bound kept an unswept job older than it")
	}
}

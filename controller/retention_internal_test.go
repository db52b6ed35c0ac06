package controller

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/controller/catalog"
	"github.com/tidemark-backup/tidemark/controller/retention"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestExpireCommands: one expire job per repository of the expired
// backups, each target with its fence; the instance's binlog stream is
// pruned once, in the stream's own repository, up to the plan's cutoff.
func TestExpireCommands(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s := catalog.New()
	w := s.Write()
	if err := w.PutBinlogStream(&v1.BinlogStream{Instance: "db1", RepositoryUri: "s3://binlogs/x"}); err != nil {
		t.Fatal(err)
	}
	w.Commit()
	bk := func(id, repo string, d time.Duration) *v1.Backup {
		return &v1.Backup{Id: id, Instance: "db1", Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE, RepositoryUri: repo,
			Fence: &v1.LeaseToken{JobId: "j-" + id, Term: 1, Index: 1}, Consistency: &v1.ConsistencyPoint{Time: timestamppb.New(t0.Add(d))}}
	}
	backups := []*v1.Backup{bk("a", "file:///one", 0), bk("b", "file:///two", time.Hour), bk("c", "file:///one", 2*time.Hour), bk("d", "file:///one", 3*time.Hour)}
	marked := bk("m", "file:///one", 90*time.Minute)
	marked.ExpiredAt, marked.ExpireJobId = timestamppb.New(t0), "old"
	backups = append(backups, marked)
	res, err := retention.Plan(retention.Params{Backups: backups, Rules: &v1.RetentionRules{KeepLast: 1}, Now: t0.Add(4 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	cmds := expireCommands(s.Read(), instancePlan{instance: "db1", res: res}, t0.Add(4*time.Hour), 3)
	if len(cmds) != 2 {
		t.Fatalf("%d commands, want one per repository", len(cmds))
	}
	got := map[string][]string{}
	for _, c := range cmds {
		ep := c.GetJob().GetExpire()
		for _, tg := range ep.GetBackups() {
			got[ep.GetRepositoryUri()] = append(got[ep.GetRepositoryUri()], tg.GetBackupId())
			if tg.GetFence().GetJobId() != "j-"+tg.GetBackupId() {
				t.Errorf("target %s fence %v", tg.GetBackupId(), tg.GetFence())
			}
		}
		if len(c.GetBackupIds()) != len(c.GetReasons()) || c.GetJob().GetMaxAttempts() != 3 || c.GetJob().GetInstance() != "db1" {
			t.Errorf("command %v", c)
		}
	}
	if len(got["file:///one"]) != 2 || len(got["file:///two"]) != 1 {
		t.Errorf("targets by repository: %v (the already marked one must not be marked again)", got)
	}
	first, second := cmds[0].GetJob().GetExpire(), cmds[1].GetJob().GetExpire()
	if first.GetBinlogInstance() != "db1" || first.GetBinlogRepositoryUri() != "s3://binlogs/x" || !first.GetBinlogBefore().AsTime().Equal(t0.Add(3*time.Hour)) {
		t.Errorf("binlog pruning: %v", first)
	}
	if second.GetBinlogInstance() != "" {
		t.Errorf("binlog pruned twice: %v", second)
	}
}

// TestMergedPlan: two policies selecting one instance keep the union of
// what either keeps, with each keep reason naming its policy; binlog goes
// only before the earlier cutoff, and not at all when one plan lets none
// go.
func TestMergedPlan(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var backups []*v1.Backup
	for i := range 10 {
		at := t0.Add(time.Duration(i) * 24 * time.Hour)
		backups = append(backups, &v1.Backup{Id: string(rune('a' + i)), Instance: "db1", Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE,
			Consistency: &v1.ConsistencyPoint{Time: timestamppb.New(at)}})
	}
	now := t0.Add(10 * 24 * time.Hour)
	last2 := ruleSet{policy: "p1", rules: &v1.RetentionRules{KeepLast: 2}}
	pitr := ruleSet{policy: "p2", rules: &v1.RetentionRules{PitrWindow: durationpb.New(4*24*time.Hour + time.Hour)}}
	res, err := mergedPlan(backups, []ruleSet{last2, pitr}, now)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for _, v := range res.Verdicts {
		if v.Keep {
			kept[v.Backup.GetId()] = true
			if !strings.Contains(strings.Join(v.Reasons, ";"), "(policy p") {
				t.Errorf("%s: reasons %q name no policy", v.Backup.GetId(), v.Reasons)
			}
		} else if len(v.Reasons) != 1 || !strings.Contains(v.Reasons[0], "of every policy: p1, p2") {
			t.Errorf("%s: expire reasons %q", v.Backup.GetId(), v.Reasons)
		}
	}
	// p1 keeps i, j; p2's window (4 days 1 h back from day 10) starts in
	// day 5: its base is f (day 5), and it keeps f..j.
	want := map[string]bool{"f": true, "g": true, "h": true, "i": true, "j": true}
	if len(kept) != len(want) {
		t.Fatalf("kept %v, want %v", kept, want)
	}
	for id := range want {
		if !kept[id] {
			t.Fatalf("kept %v, want %v", kept, want)
		}
	}
	if res.PITRBase.GetId() != "f" || !res.BinlogBefore.Equal(t0.Add(5*24*time.Hour)) || !strings.Contains(res.BinlogReason, "policy p2") {
		t.Fatalf("PITR base %s, binlog before %s (%s)", res.PITRBase.GetId(), res.BinlogBefore, res.BinlogReason)
	}
	// One rule set: that plan as it is.
	one, err := mergedPlan(backups, []ruleSet{last2}, now)
	if err != nil || len(one.Expired()) != 8 {
		t.Fatalf("one policy: %d expired, %v", len(one.Expired()), err)
	}
	// A bad rule set names its policy.
	if _, err := mergedPlan(backups, []ruleSet{last2, {policy: "p3", rules: &v1.RetentionRules{}}}, now); err == nil || !strings.Contains(err.Error(), "policy p3") {
		t.Fatalf("bad rules: %v", err)
	}
}

// TestCopiesDue: a policy's copy is due once per backup and destination;
// not while its job runs or after it succeeded; after a failure only when
// the backoff (doubling per attempt) has passed, under the next derived
// id; never for a backup already in the destination, expired, or older
// than the policy (except the newest).
func TestCopiesDue(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	s := catalog.New()
	w := s.Write()
	put := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	put(w.PutPolicy(&v1.Policy{Name: "p", Version: 1, CreatedAt: timestamppb.New(t0), Spec: &v1.PolicySpec{Name: "p", Selector: "env=prod",
		Copies: []*v1.CopyTarget{{RepositoryUri: "file:///dr"}}}}))
	put(w.PutInstance(&v1.Instance{Name: "db1", Labels: map[string]string{"env": "prod"}}))
	put(w.PutInstance(&v1.Instance{Name: "db2", Labels: map[string]string{"env": "dev"}}))
	bk := func(id, inst string, at time.Time, mut func(*v1.Backup)) {
		b := &v1.Backup{Id: id, Instance: inst, Status: v1.BackupStatus_BACKUP_STATUS_COMPLETE, RepositoryUri: "file:///main", FinishedAt: timestamppb.New(at)}
		if mut != nil {
			mut(b)
		}
		put(w.PutBackup(b))
	}
	bk("old", "db1", t0.Add(-time.Hour), nil)
	bk("a", "db1", t0.Add(time.Hour), nil)
	bk("copied", "db1", t0.Add(2*time.Hour), func(b *v1.Backup) { b.Copies = []*v1.BackupCopy{{RepositoryUri: "file:///dr"}} })
	bk("expired", "db1", t0.Add(3*time.Hour), func(b *v1.Backup) { b.ExpiredAt = timestamppb.New(t0) })
	bk("failed", "db1", t0.Add(4*time.Hour), func(b *v1.Backup) { b.Status = v1.BackupStatus_BACKUP_STATUS_FAILED })
	bk("dev", "db2", t0.Add(time.Hour), nil)
	w.Commit()
	now := t0.Add(5 * time.Hour)
	due := func() []string {
		var ids []string
		for _, j := range copiesDue(s.Read(), "", now, time.Minute, 2) {
			ids = append(ids, j.GetCopy().GetBackupId()+" "+j.GetId())
		}
		return ids
	}
	// old predates the policy (and copied, the newest complete one, has
	// its copy), expired and failed are not copied, db2 is not selected.
	if got := due(); len(got) != 1 || got[0] != "a "+copyJobID("a", "file:///dr", 0) {
		t.Fatalf("due = %v, want only a's copy", got)
	}
	setJob := func(id string, st v1.JobState, at time.Time) {
		w := s.Write()
		put(w.PutJob(&v1.Job{Id: id, Kind: v1.JobKind_JOB_KIND_COPY, Instance: "db1", State: st, UpdatedAt: timestamppb.New(at)}))
		w.Commit()
	}
	setJob(copyJobID("a", "file:///dr", 0), v1.JobState_JOB_STATE_RUNNING, now)
	if got := due(); len(got) != 0 {
		t.Fatalf("due while the copy runs: %v", got)
	}
	setJob(copyJobID("a", "file:///dr", 0), v1.JobState_JOB_STATE_FAILED, now.Add(-30*time.Second))
	if got := due(); len(got) != 0 {
		t.Fatalf("due within the first backoff: %v", got)
	}
	setJob(copyJobID("a", "file:///dr", 0), v1.JobState_JOB_STATE_FAILED, now.Add(-61*time.Second))
	if got := due(); len(got) != 1 || got[0] != "a "+copyJobID("a", "file:///dr", 1) {
		t.Fatalf("due after the backoff: %v", got)
	}
	// The second failure waits twice as long.
	setJob(copyJobID("a", "file:///dr", 1), v1.JobState_JOB_STATE_FAILED, now.Add(-90*time.Second))
	if got := due(); len(got) != 0 {
		t.Fatalf("due within the second backoff: %v", got)
	}
	setJob(copyJobID("a", "file:///dr", 1), v1.JobState_JOB_STATE_FAILED, now.Add(-121*time.Second))
	if got := due(); len(got) != 1 || got[0] != "a "+copyJobID("a", "file:///dr", 2) {
		t.Fatalf("due after the second backoff: %v", got)
	}
	setJob(copyJobID("a", "file:///dr", 2), v1.JobState_JOB_STATE_SUCCEEDED, now)
	if got := due(); len(got) != 0 {
		t.Fatalf("due after the copy succeeded: %v", got)
	}
}

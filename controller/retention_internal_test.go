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

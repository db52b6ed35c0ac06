package controller

import (
	"testing"
	"time"

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

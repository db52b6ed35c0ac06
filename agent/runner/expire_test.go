package runner

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/internal/archive"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestExpire: an expire job deletes the manifests it names under their
// fences, counts one already gone as deleted (a rerun succeeds), leaves a
// manifest under another fence and fails naming it, and never touches a
// backup it does not name.
func TestExpire(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t)
	open := func(context.Context, string) (*archive.Repo, func(), error) { return repo, func() {}, nil }
	store(t, repo, "old-1", lease("j1", 1, 1))
	store(t, repo, "old-2", nil) // imported, no fence
	store(t, repo, "keep", lease("j3", 1, 3))
	job := &v1.Job{Id: "e1", Kind: v1.JobKind_JOB_KIND_EXPIRE, Params: &v1.Job_Expire{Expire: &v1.ExpireParams{
		Backups: []*v1.ExpireTarget{{BackupId: "old-1", Fence: lease("j1", 1, 1)}, {BackupId: "old-2"}, {BackupId: "never-written"}},
		// No binlog archive: a warning, not a failure.
		BinlogInstance: "db1", BinlogBefore: timestamppb.Now(),
	}}}
	for range 2 { // the second run finds the work done
		res, err := Run(ctx, Params{Job: job, Lease: lease("e1", 1, 9), OpenRepo: open})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "no binlog archive of db1") {
			t.Errorf("warnings = %q", res.Warnings)
		}
		if exists(t, repo, "old-1") || exists(t, repo, "old-2") || !exists(t, repo, "keep") {
			t.Fatalf("after expiry: old-1 %v old-2 %v keep %v", exists(t, repo, "old-1"), exists(t, repo, "old-2"), exists(t, repo, "keep"))
		}
	}
	store(t, repo, "foreign", lease("j9", 2, 2))
	job.GetExpire().Backups = []*v1.ExpireTarget{{BackupId: "foreign", Fence: lease("j4", 1, 4)}}
	_, err := Run(ctx, Params{Job: job, Lease: lease("e1", 1, 9), OpenRepo: open})
	if err == nil || !strings.Contains(err.Error(), "backup foreign: the manifest in the repository is fenced by lease j9@2/2") || !exists(t, repo, "foreign") {
		t.Fatalf("foreign fence: %v, exists %v", err, exists(t, repo, "foreign"))
	}
}

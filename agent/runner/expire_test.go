package runner

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage"
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

// TestExpireThenGC: expiry deletes manifests only; the chunks only the
// expired backup referred to are freed by gc's two runs afterwards (never
// by the expiry), and the kept backup still reads back whole.
func TestExpireThenGC(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t)
	open := func(context.Context, string) (*archive.Repo, func(), error) { return repo, func() {}, nil }
	write := func(id, body string) {
		_, err := repo.WithBackup(ctx, archive.BackupOptions{ID: id, Engine: "logical"}, func(_ context.Context, b *archive.Backup) error {
			w, err := b.Stream("data", nil)
			if err != nil {
				return err
			}
			if _, err := w.Write([]byte(body)); err != nil {
				return err
			}
			return w.Close()
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	write("old", "data only the old backup has")
	write("new", "data of the new backup")
	chunks := func() int {
		n := 0
		if err := repo.Store().List(ctx, "chunks/", func(storage.ObjectInfo) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if chunks() != 2 {
		t.Fatalf("%d chunks before, want 2", chunks())
	}
	job := &v1.Job{Id: "e1", Kind: v1.JobKind_JOB_KIND_EXPIRE, Params: &v1.Job_Expire{Expire: &v1.ExpireParams{
		Backups: []*v1.ExpireTarget{{BackupId: "old"}},
	}}}
	if _, err := Run(ctx, Params{Job: job, Lease: lease("e1", 1, 1), OpenRepo: open}); err != nil {
		t.Fatal(err)
	}
	if chunks() != 2 {
		t.Fatal("the expiry deleted chunks itself")
	}
	for range 2 { // condemn, then sweep
		if _, err := repo.GC(ctx, archive.GCOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if chunks() != 1 {
		t.Errorf("%d chunks after gc, want 1 (the new backup's)", chunks())
	}
	rep, err := repo.Verify(ctx, archive.VerifyOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("verify after gc: %+v, %v", rep, err)
	}
}

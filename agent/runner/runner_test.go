package runner

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func newRepo(t *testing.T) *archive.Repo {
	t.Helper()
	st, err := file.Open(filepath.Join(t.TempDir(), "repo"), file.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := archive.Init(context.Background(), st, archive.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repo.Close(); _ = st.Close() })
	return repo
}

// store writes a one-stream backup under fence.
func store(t *testing.T, repo *archive.Repo, id string, fence *v1.LeaseToken) {
	t.Helper()
	_, err := repo.WithBackup(context.Background(), archive.BackupOptions{ID: id, Engine: "logical", Fence: fence},
		func(_ context.Context, b *archive.Backup) error {
			w, err := b.Stream("meta", nil)
			if err != nil {
				return err
			}
			if _, err := io.WriteString(w, "{}"); err != nil {
				return err
			}
			return w.Close()
		})
	if err != nil {
		t.Fatal(err)
	}
}

func exists(t *testing.T, repo *archive.Repo, id string) bool {
	t.Helper()
	_, err := repo.Store().Stat(context.Background(), archive.ManifestKey(id))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func lease(job string, term, index uint64) *v1.LeaseToken {
	return &v1.LeaseToken{JobId: job, Term: term, Index: index}
}

// TestManifestKey: the key the agent reports is where the archive put the
// manifest (the archive does not export its layout).
func TestManifestKey(t *testing.T) {
	repo := newRepo(t)
	store(t, repo, "b-1", nil)
	if !exists(t, repo, "b-1") {
		t.Fatalf("no object at %s", archive.ManifestKey("b-1"))
	}
}

func TestClaimBackupID(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t)
	l := lease("job-1", 3, 10)

	if done, err := claimBackupID(ctx, repo, "free", l); done != nil || err != nil {
		t.Fatalf("free id: %v %v", done, err)
	}

	store(t, repo, "mine", l)
	done, err := claimBackupID(ctx, repo, "mine", proto.Clone(l).(*v1.LeaseToken))
	if err != nil || done == nil || done.BackupID != "mine" || done.ManifestKey != archive.ManifestKey("mine") {
		t.Fatalf("own manifest: %v %v", done, err)
	}

	for id, fence := range map[string]*v1.LeaseToken{
		"older":    lease("job-1", 2, 99),
		"newer":    lease("job-1", 3, 11),
		"other":    lease("job-2", 1, 1),
		"unfenced": nil,
	} {
		store(t, repo, id, fence)
		_, err := claimBackupID(ctx, repo, id, l)
		if err == nil || !strings.Contains(err.Error(), "already exists") || !exists(t, repo, id) {
			t.Errorf("%s: err %v, exists %v", id, err, exists(t, repo, id))
		}
	}
}

func TestDiscardManifest(t *testing.T) {
	ctx := context.Background()
	repo := newRepo(t)
	l := lease("job-1", 3, 10)
	store(t, repo, "b", lease("job-1", 4, 1)) // a newer attempt's
	if deleted, err := repo.DiscardManifest(ctx, "b", l); deleted || err != nil || !exists(t, repo, "b") {
		t.Fatalf("newer attempt's manifest: deleted %v err %v", deleted, err)
	}
	store(t, repo, "c", l)
	if deleted, err := repo.DiscardManifest(ctx, "c", l); !deleted || err != nil || exists(t, repo, "c") {
		t.Fatalf("own manifest: deleted %v err %v", deleted, err)
	}
	if deleted, err := repo.DiscardManifest(ctx, "missing", l); deleted || err != nil {
		t.Fatalf("missing: deleted %v err %v", deleted, err)
	}
}

func TestRunRefuses(t *testing.T) {
	repo := newRepo(t)
	open := func(context.Context, string) (*archive.Repo, func(), error) { return repo, func() {}, nil }
	cases := map[string]*v1.Job{
		"kind JOB_KIND_GC is not supported": {Id: "j", Kind: v1.JobKind_JOB_KIND_GC},
		"carries no backup params":          {Id: "j", Kind: v1.JobKind_JOB_KIND_BACKUP},
		"carries no backup id":              {Id: "j", Kind: v1.JobKind_JOB_KIND_BACKUP, Params: &v1.Job_Backup{Backup: &v1.BackupParams{}}},
		`engine "clone" is not available`: {Id: "j", Kind: v1.JobKind_JOB_KIND_BACKUP,
			Params: &v1.Job_Backup{Backup: &v1.BackupParams{BackupId: "b", Engine: "clone"}}},
		"point-in-time recovery": {Id: "j", Kind: v1.JobKind_JOB_KIND_RESTORE,
			Params: &v1.Job_Restore{Restore: &v1.RestoreParams{BackupId: "b", StopAt: &v1.RestoreParams_StopAtGtidSet{StopAtGtidSet: "0-1-5"}}}},
		"backup not found": {Id: "j", Kind: v1.JobKind_JOB_KIND_RESTORE, Params: &v1.Job_Restore{Restore: &v1.RestoreParams{BackupId: "nope"}}},
	}
	for want, job := range cases {
		_, err := Run(context.Background(), Params{Job: job, Lease: lease("j", 1, 1), DSN: "u@tcp(127.0.0.1:1)/", OpenRepo: open})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q, got %v", want, err)
		}
	}
}

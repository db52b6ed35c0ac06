package runner

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestReconcile (on a file repository and a MinIO bucket): a reconcile job deletes the orphan manifests it names
// under their attempts' fences, succeeds again when they are gone, leaves a
// manifest under another fence (named in a warning, not an error) and
// never touches the job's recorded backup or a standalone one.
func TestReconcile(t *testing.T) {
	t.Run("file", func(t *testing.T) { testReconcile(t, newRepo(t)) })
	t.Run("minio", func(t *testing.T) {
		m := testenv.StartMinIO(t)
		t.Setenv("AWS_ACCESS_KEY_ID", m.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", m.SecretKey)
		st, err := location.Open(context.Background(), fmt.Sprintf("s3://%s/reconcile?endpoint=%s&tls=false", m.Bucket, m.Endpoint), location.Options{Create: true})
		if err != nil {
			t.Fatal(err)
		}
		repo, err := archive.Init(context.Background(), st, archive.InitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { repo.Close(); _ = st.Close() })
		testReconcile(t, repo)
	})
}

func testReconcile(t *testing.T, repo *archive.Repo) {
	ctx := context.Background()
	open := func(context.Context, string) (*archive.Repo, func(), error) { return repo, func() {}, nil }
	store(t, repo, "j1-a1", lease("j1", 2, 10))
	store(t, repo, "j1-a2", lease("j1", 2, 20))
	store(t, repo, "j2-a1", lease("j2", 9, 9)) // another cluster's j2
	store(t, repo, "standalone", nil)
	job := &v1.Job{Id: "r1", Kind: v1.JobKind_JOB_KIND_RECONCILE, Params: &v1.Job_Reconcile{Reconcile: &v1.ReconcileParams{
		Targets: []*v1.ReconcileTarget{
			{BackupId: "j1-a1", Fence: lease("j1", 2, 10), JobId: "j1"},
			{BackupId: "j2-a1", Fence: lease("j2", 2, 30), JobId: "j2"},
			{BackupId: "j3-a1", Fence: lease("j3", 2, 40), JobId: "j3"}, // never stored
		},
		JobIds: []string{"j1", "j2", "j3"},
	}}}
	res, err := Run(ctx, Params{Job: job, Lease: lease("r1", 2, 50), OpenRepo: open})
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(res.Warnings, "\n"); !strings.Contains(w, "deleted 1 orphan manifests (their chunks go at the next gc): j1-a1") ||
		!strings.Contains(w, "j2-a1 (fenced by lease j2@9/9, the attempt held j2@2/30)") {
		t.Errorf("warnings:\n%s", w)
	}
	for id, want := range map[string]bool{"j1-a1": false, "j1-a2": true, "j2-a1": true, "standalone": true} {
		if exists(t, repo, id) != want {
			t.Errorf("manifest %s exists %v, want %v", id, !want, want)
		}
	}
	res, err = Run(ctx, Params{Job: job, Lease: lease("r1", 2, 51), OpenRepo: open})
	if err != nil || strings.Contains(strings.Join(res.Warnings, "\n"), "deleted") {
		t.Fatalf("rerun: %v, warnings %q", err, res.Warnings)
	}
}

package runner

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/tidemark-backup/tidemark/engines"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/testenv"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestRestoreJobVerify: a restore job with verify (tidemark restore
// --to-instance --verify) passes on an exact restore and fails, naming the
// table with both row counts and checksums, when a restored row is changed
// before the verify pass reads it back (changed here from the progress
// callback when the restore reaches its post objects, after every table is
// loaded).
func TestRestoreJobVerify(t *testing.T) {
	src := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "runner-src"})
	dst := testenv.StartMariaDB(t, testenv.MariaDBOptions{Name: "runner-dst"})
	testenv.LoadSample(t, src.DB(t), "shop", 500)
	repo := newRepo(t)
	open := func(context.Context, string) (*archive.Repo, func(), error) { return repo, func() {}, nil }
	ctx := context.Background()

	b, err := Run(ctx, Params{DSN: src.DSN, OpenRepo: open, Lease: lease("jb", 1, 1), Job: &v1.Job{Id: "jb", Kind: v1.JobKind_JOB_KIND_BACKUP,
		Instance: "src", Attempt: 1, Params: &v1.Job_Backup{Backup: &v1.BackupParams{BackupId: "b1", Engine: "logical"}}}})
	if err != nil {
		t.Fatal(err)
	}
	restore := func(id, rename string, plant func()) (*Result, error) {
		var once sync.Once
		return Run(ctx, Params{DSN: dst.DSN, OpenRepo: open, Lease: lease(id, 1, 2),
			Job: &v1.Job{Id: id, Kind: v1.JobKind_JOB_KIND_RESTORE, Instance: "dst", Attempt: 1, Params: &v1.Job_Restore{Restore: &v1.RestoreParams{
				BackupId: b.BackupID, Verify: true, RenameDatabases: map[string]string{"shop": rename}}}},
			Progress: func(p *v1.JobProgress) {
				if plant != nil && p.GetPhase() == "post" {
					once.Do(plant)
				}
			}})
	}

	if res, err := restore("jr1", "shop_ok", nil); err != nil || res.Tables == 0 {
		t.Fatalf("restore job with verify of an exact restore: %+v, %v", res, err)
	}
	dstDB := dst.DB(t)
	_, err = restore("jr2", "shop_changed", func() {
		if _, err := dstDB.Exec("UPDATE shop_changed.customers SET name = CONCAT(name, '!') WHERE id = 7"); err != nil {
			t.Errorf("planting a difference: %v", err)
		}
	})
	if !errors.Is(err, engines.ErrMismatch) || !strings.Contains(err.Error(), "verify") ||
		!strings.Contains(err.Error(), "shop.customers (restored as shop_changed.customers): backup ") {
		t.Fatalf("restore job with verify after a planted change: %v", err)
	}
	t.Logf("the job's error: %v", err)
}

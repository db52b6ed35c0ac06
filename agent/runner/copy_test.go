package runner

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// TestCopyJob: a copy job copies the backup to the destination and says
// so; a destination that cannot be opened is retried with backoff, then
// the job fails naming it, and the source is untouched.
func TestCopyJob(t *testing.T) {
	saved := CopyRetry
	CopyRetry = archive.CopyRetry{Attempts: 3, Backoff: time.Millisecond}
	t.Cleanup(func() { CopyRetry = saved })
	ctx := context.Background()
	src, dst := newRepo(t), newRepo(t)
	store(t, src, "b1", lease("j1", 1, 1))
	down := false
	opens := 0
	open := func(_ context.Context, uri string) (*archive.Repo, func(), error) {
		switch uri {
		case "file:///src":
			return src, func() {}, nil
		case "file:///dst":
			opens++
			if down {
				return nil, nil, storage.ErrUnavailable
			}
			return dst, func() {}, nil
		}
		return nil, nil, errors.New("unknown repository " + uri)
	}
	job := &v1.Job{Id: "c1", Kind: v1.JobKind_JOB_KIND_COPY, Params: &v1.Job_Copy{Copy: &v1.CopyParams{
		BackupId: "b1", SourceRepositoryUri: "file:///src", DestinationRepositoryUri: "file:///dst", WithBinlog: true,
	}}}
	res, err := Run(ctx, Params{Job: job, Lease: lease("c1", 1, 2), OpenRepo: open})
	if err != nil {
		t.Fatal(err)
	}
	if !exists(t, dst, "b1") || res.BackupID != "b1" || len(res.Warnings) != 2 || !strings.Contains(res.Warnings[1], "no binlog archive to copy") {
		t.Fatalf("copy: exists %v, result %+v", exists(t, dst, "b1"), res)
	}
	m, err := dst.LoadManifest(ctx, "b1")
	if err != nil || m.GetFence().GetJobId() != "j1" {
		t.Fatalf("copied manifest keeps the backup's fence: %v, %v", m.GetFence(), err)
	}

	down, opens = true, 0
	_, err = Run(ctx, Params{Job: job, Lease: lease("c1", 1, 3), OpenRepo: open})
	if err == nil || !strings.Contains(err.Error(), "opening the destination file:///dst") || opens != 3 {
		t.Fatalf("destination down: %v after %d opens", err, opens)
	}
	if !exists(t, src, "b1") {
		t.Fatal("the source lost its backup")
	}
}

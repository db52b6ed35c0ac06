package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// reconcile deletes the manifests that attempts the catalog refused or
// superseded left in the repository (an agent that died after storing its
// manifest, before its result was recorded). Each is deleted only under
// the fence the catalog recorded for its attempt: a manifest under another
// fence (a rewrite, another cluster's job of the same id) is left and
// named in a warning, not an error, since it is not the catalog's to
// delete. One already gone counts as done, so a rerun succeeds. Chunks are
// left to `repo gc` and its grace period.
func reconcile(ctx context.Context, p Params) (*Result, error) {
	rp := p.Job.GetReconcile()
	if rp == nil {
		return nil, fmt.Errorf("reconcile job %s carries no reconcile params", p.Job.GetId())
	}
	repo, closeRepo, err := p.OpenRepo(ctx, rp.GetRepositoryUri())
	if err != nil {
		return nil, err
	}
	defer closeRepo()
	var deleted, foreign []string
	for i, t := range rp.GetTargets() {
		if p.Progress != nil {
			p.Progress(&v1.JobProgress{Phase: "deleting orphan manifests", BytesDone: uint64(i), BytesTotal: uint64(len(rp.GetTargets())), UpdatedAt: timestamppb.Now()})
		}
		ok, err := repo.DiscardManifest(ctx, t.GetBackupId(), t.GetFence())
		if err != nil {
			return nil, fmt.Errorf("reconcile job %s: %w", p.Job.GetId(), err)
		}
		if ok {
			deleted = append(deleted, t.GetBackupId())
			continue
		}
		m, err := repo.LoadManifest(ctx, t.GetBackupId())
		switch {
		case errors.Is(err, archive.ErrBackupMissing) || errors.Is(err, storage.ErrNotFound):
			// Never stored, or gone already.
		case err != nil:
			return nil, fmt.Errorf("reconcile job %s: backup %s: %w", p.Job.GetId(), t.GetBackupId(), err)
		default:
			foreign = append(foreign, fmt.Sprintf("%s (fenced by lease %s, the attempt held %s)", t.GetBackupId(), fenceString(m.GetFence()), fenceString(t.GetFence())))
		}
	}
	var warnings []string
	if len(deleted) > 0 {
		warnings = append(warnings, fmt.Sprintf("deleted %d orphan manifests (their chunks go at the next gc): %s", len(deleted), strings.Join(deleted, ", ")))
	}
	if len(foreign) > 0 {
		warnings = append(warnings, "left alone, not written by the catalog's attempt: "+strings.Join(foreign, "; "))
	}
	return &Result{Warnings: warnings}, nil
}

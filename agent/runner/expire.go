package runner

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/internal/archive"
	"github.com/tidemark-backup/tidemark/internal/storage"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// expire deletes what the leader marked expired: each backup's manifest,
// only if it is fenced by the lease the catalog recorded (a manifest under
// another fence is not the catalog's backup and stays; the job then fails
// naming it), then the binlog segments before the cutoff. A manifest
// already gone counts as deleted, so a rerun after a lost result succeeds.
// Chunks are left to `repo gc` and its grace period.
func expire(ctx context.Context, p Params) (*Result, error) {
	ep := p.Job.GetExpire()
	if ep == nil {
		return nil, fmt.Errorf("expire job %s carries no expire params", p.Job.GetId())
	}
	repo, closeRepo, err := p.OpenRepo(ctx, ep.GetRepositoryUri())
	if err != nil {
		return nil, err
	}
	defer closeRepo()
	var foreign []error
	for i, t := range ep.GetBackups() {
		if p.Progress != nil {
			p.Progress(&v1.JobProgress{Phase: "deleting manifests", BytesDone: uint64(i), BytesTotal: uint64(len(ep.GetBackups())), UpdatedAt: timestamppb.Now()})
		}
		deleted, err := repo.DiscardManifest(ctx, t.GetBackupId(), t.GetFence())
		if err != nil {
			return nil, fmt.Errorf("expire job %s: %w", p.Job.GetId(), err)
		}
		if deleted {
			continue
		}
		m, err := repo.LoadManifest(ctx, t.GetBackupId())
		switch {
		case errors.Is(err, archive.ErrBackupMissing) || errors.Is(err, storage.ErrNotFound):
			// Gone already (an earlier attempt).
		case err != nil:
			return nil, fmt.Errorf("expire job %s: backup %s: %w", p.Job.GetId(), t.GetBackupId(), err)
		default:
			foreign = append(foreign, fmt.Errorf("backup %s: the manifest in the repository is fenced by lease %s, the catalog's backup by %s: left alone",
				t.GetBackupId(), fenceString(m.GetFence()), fenceString(t.GetFence())))
		}
	}
	if len(foreign) > 0 {
		return nil, fmt.Errorf("expire job %s: %w", p.Job.GetId(), errors.Join(foreign...))
	}
	var warnings []string
	if inst := ep.GetBinlogInstance(); inst != "" && ep.GetBinlogBefore().IsValid() {
		if p.Progress != nil {
			p.Progress(&v1.JobProgress{Phase: "pruning binlog segments", UpdatedAt: timestamppb.Now()})
		}
		brepo, closeB := repo, func() {}
		if ep.GetBinlogRepositoryUri() != ep.GetRepositoryUri() {
			brepo, closeB, err = p.OpenRepo(ctx, ep.GetBinlogRepositoryUri())
			if err != nil {
				return nil, fmt.Errorf("expire job %s: opening the binlog repository: %w", p.Job.GetId(), err)
			}
		}
		res, err := binlog.Prune(ctx, brepo, binlog.PruneParams{Instance: inst, Before: ep.GetBinlogBefore().AsTime()})
		closeB()
		switch {
		case errors.Is(err, binlog.ErrUnknownInstance):
			warnings = append(warnings, fmt.Sprintf("no binlog archive of %s in the repository: no segment to prune", inst))
		case err != nil:
			return nil, fmt.Errorf("expire job %s: %w", p.Job.GetId(), err)
		default:
			warnings = append(warnings, fmt.Sprintf("pruned %d binlog segments of %s before %s; %d kept", len(res.Deleted), inst,
				ep.GetBinlogBefore().AsTime().Format("2006-01-02T15:04:05Z07:00"), res.Kept))
		}
	}
	return &Result{Warnings: warnings}, nil
}

package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/engines/binlog"
	"github.com/tidemark-backup/tidemark/internal/archive"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// CopyRetry is how a copy job retries a failing destination. Tests shorten
// it.
var CopyRetry = archive.CopyRetry{Attempts: 5, Backoff: 5 * time.Second, MaxBackoff: 2 * time.Minute}

// copyBackup copies a backup (and, when asked, its binlog from its
// consistency point) to the destination repository, with retries, and
// verifies the copy (archive.Copy). The destination is opened with the
// agent's own repository key. The source is only read.
func copyBackup(ctx context.Context, p Params) (*Result, error) {
	cp := p.Job.GetCopy()
	if cp == nil {
		return nil, fmt.Errorf("copy job %s carries no copy params", p.Job.GetId())
	}
	if cp.GetDestinationRepositoryUri() == "" {
		return nil, fmt.Errorf("copy job %s names no destination repository", p.Job.GetId())
	}
	src, closeSrc, err := p.OpenRepo(ctx, cp.GetSourceRepositoryUri())
	if err != nil {
		return nil, fmt.Errorf("copy of backup %s: opening the source: %w", cp.GetBackupId(), err)
	}
	defer closeSrc()
	var (
		dst      *archive.Repo
		closeDst func()
	)
	// The destination may be down at first: opening it is retried too.
	wait := CopyRetry.Backoff
	for attempt := 1; ; attempt++ {
		dst, closeDst, err = p.OpenRepo(ctx, cp.GetDestinationRepositoryUri())
		if err == nil || attempt >= CopyRetry.Attempts || errors.Is(err, archive.ErrWrongKey) || errors.Is(err, archive.ErrNoRepository) {
			break
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
		wait *= 2
	}
	if err != nil {
		return nil, fmt.Errorf("copy of backup %s: opening the destination %s: %w", cp.GetBackupId(), cp.GetDestinationRepositoryUri(), err)
	}
	defer closeDst()
	if p.Progress != nil {
		p.Progress(&v1.JobProgress{Phase: "copying", UpdatedAt: timestamppb.Now()})
	}
	res, err := archive.CopyWithRetry(ctx, src, dst, archive.CopyParams{
		BackupID: cp.GetBackupId(), Workers: p.Parallel,
		Progress: func(pr archive.Progress) {
			if p.Progress != nil {
				p.Progress(&v1.JobProgress{Phase: "copying", BytesDone: uint64(max(pr.LogicalBytes, 0)), UpdatedAt: timestamppb.Now()})
			}
		},
	}, CopyRetry)
	if err != nil {
		return nil, err
	}
	warnings := []string{fmt.Sprintf("copy of backup %s: %d chunks read, %d skipped, %d bytes uploaded, %d chunks verified (already there: %v)",
		cp.GetBackupId(), res.ChunksRead, res.ChunksSkipped, res.UploadedBytes, res.ChunksVerified, res.AlreadyThere)}
	if cp.GetWithBinlog() && res.Manifest.GetInstance() == "" {
		warnings = append(warnings, "the backup names no instance: no binlog archive to copy")
	} else if cp.GetWithBinlog() {
		m := res.Manifest
		at := m.GetConsistency().GetTime()
		if !at.IsValid() {
			at = m.GetStartedAt()
		}
		segs, err := binlog.CopySegments(ctx, src, dst, binlog.CopyParams{Instance: m.GetInstance(), From: at.AsTime()})
		switch {
		case errors.Is(err, binlog.ErrUnknownInstance):
			warnings = append(warnings, fmt.Sprintf("no binlog archive of %s in the source: none copied", m.GetInstance()))
		case err != nil:
			return nil, fmt.Errorf("backup %s copied, its binlog not: %w", cp.GetBackupId(), err)
		default:
			warnings = append(warnings, fmt.Sprintf("binlog of %s: %d segments, %d objects copied", m.GetInstance(), segs.Segments, segs.Copied))
		}
	}
	return &Result{BackupID: cp.GetBackupId(), Warnings: warnings}, nil
}

package binlog

import (
	"context"
	"fmt"
	"time"

	"github.com/tidemark-backup/tidemark/internal/archive"
)

// PruneParams name what Prune deletes.
type PruneParams struct {
	Instance string
	// Before: segments whose last event is before it may go.
	Before time.Time
	// DryRun lists what would go without deleting.
	DryRun bool
}

// PruneResult lists the segments Prune deleted (or would delete), oldest
// first.
type PruneResult struct {
	Deleted []SegmentInfo
	// Kept is the number of segments left.
	Kept int
}

// Prune deletes the oldest segments of an instance's archive: the longest
// run of closed segments, from the first, whose last event is before
// p.Before. It stops at the first segment that must stay, so the archive
// never gets a hole in the middle, and it never deletes the newest
// segment. Each segment goes leftover pieces first, then the segment, then
// its index entry: a run cut short leaves an index entry whose segment is
// gone, at the start of the archive, which the next run deletes; nothing
// a reader of the rest depends on is touched.
func Prune(ctx context.Context, repo *archive.Repo, p PruneParams) (*PruneResult, error) {
	a, err := OpenArchive(ctx, repo, p.Instance)
	if err != nil {
		return nil, err
	}
	n := prunable(a.segs, p.Before)
	res := &PruneResult{Kept: len(a.segs) - n}
	for _, s := range a.segs[:n] {
		if !p.DryRun {
			seg := s.meta.Name
			for _, pc := range s.pieces {
				if err := repo.DeleteObject(ctx, pc); err != nil {
					return res, fmt.Errorf("binlog archive %s: pruning segment %s: %w", p.Instance, seg, err)
				}
			}
			if err := repo.DeleteObject(ctx, segmentName(p.Instance, seg)); err != nil {
				return res, fmt.Errorf("binlog archive %s: pruning segment %s: %w", p.Instance, seg, err)
			}
			if err := repo.DeleteObject(ctx, indexName(p.Instance, seg)); err != nil {
				return res, fmt.Errorf("binlog archive %s: pruning index entry %s: %w", p.Instance, seg, err)
			}
		}
		res.Deleted = append(res.Deleted, s.meta.SegmentInfo)
	}
	return res, nil
}

// prunable is how many segments from the first may go.
func prunable(segs []*segState, before time.Time) int {
	if before.IsZero() {
		return 0
	}
	n := 0
	for i, s := range segs {
		if i == len(segs)-1 || !s.indexed || !s.meta.LastTime.Before(before) {
			break
		}
		n++
	}
	return n
}

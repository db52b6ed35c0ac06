package archive

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// ObjectLock is a repository's S3 Object Lock setting: chunks and manifests
// are written with a retention period, so that no credential (in compliance
// mode, not even the bucket's root) can delete or overwrite them before it
// ends. Everything else (locks, gc records, binlog objects, the config) is
// written without retention: those are overwritten or deleted in normal
// operation.
//
// A chunk's retention is set when it is stored, and extended to the full
// period again by every backup that reuses it (retainReused), so every
// chunk of a backup is retained for the period from the backup's end.
type ObjectLock struct {
	Days int    `json:"days"`
	Mode string `json:"mode"` // storage.RetentionGovernance or storage.RetentionCompliance
}

// maxLockDays is 100 years: anything longer is a typo.
const maxLockDays = 36500

func (o *ObjectLock) valid() error {
	if o == nil {
		return nil
	}
	if o.Days < 1 || o.Days > maxLockDays {
		return fmt.Errorf("object lock of %d days: use 1 to %d", o.Days, maxLockDays)
	}
	if o.Mode != storage.RetentionGovernance && o.Mode != storage.RetentionCompliance {
		return fmt.Errorf("object lock mode %q: use %s or %s", o.Mode, storage.RetentionGovernance, storage.RetentionCompliance)
	}
	return nil
}

// retain returns the put options of an object under the repository's
// retention (unchanged when it has none).
func (r *Repo) retain(opts storage.PutOptions) storage.PutOptions {
	if l := r.cfg.ObjectLock; l != nil {
		opts.RetainUntil = time.Now().Add(time.Duration(l.Days) * 24 * time.Hour)
		opts.RetentionMode = l.Mode
	}
	return opts
}

// retainedUntil returns when the retention of an object stored at modTime
// ends (zero without Object Lock).
func (r *Repo) retainedUntil(modTime time.Time) time.Time {
	if l := r.cfg.ObjectLock; l != nil && !modTime.IsZero() {
		return modTime.Add(time.Duration(l.Days) * 24 * time.Hour)
	}
	return time.Time{}
}

// retainReused extends the retention of every chunk the backup refers to but
// did not store itself (deduplicated from earlier backups) to what a chunk
// stored now gets, so the whole backup, not only its new chunks, is kept
// for the repository's lock period from now. One request per reused chunk,
// in parallel; a chunk already retained longer is left as it is. Without
// Object Lock it does nothing.
func (b *Backup) retainReused(ctx context.Context) error {
	r := b.repo
	if r.cfg.ObjectLock == nil {
		return nil
	}
	opts := r.retain(storage.PutOptions{})
	seen := make(map[ChunkID]bool)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, s := range b.streams {
		for _, c := range s.ref.Chunks {
			id, err := chunkIDFromBytes(c.Id)
			if err != nil {
				return err
			}
			if seen[id] {
				continue
			}
			seen[id] = true
			b.inflightMu.Lock()
			f := b.inflight[id]
			b.inflightMu.Unlock()
			if f != nil && f.stored {
				continue
			}
			g.Go(func() error {
				if err := storage.ExtendRetention(gctx, r.store, chunkKey(id), opts.RetainUntil, opts.RetentionMode); err != nil {
					return fmt.Errorf("extending the retention of reused chunk %s: %w", id, err)
				}
				b.retained.Add(1)
				return nil
			})
		}
	}
	return g.Wait()
}

package archive

import (
	"fmt"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// ObjectLock is a repository's S3 Object Lock setting: chunks and manifests
// are written with a retention period, so that no credential (in compliance
// mode, not even the bucket's root) can delete or overwrite them before it
// ends. Everything else (locks, gc records, binlog objects, the config) is
// written without retention: those are overwritten or deleted in normal
// operation.
//
// A chunk's retention runs from when it was first stored. A later backup
// that reuses the chunk does not extend it, so a backup is protected for
// the full period only in the chunks it stored itself; one made mostly of
// reused chunks is protected until the oldest of them expires (see README,
// "Object Lock").
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

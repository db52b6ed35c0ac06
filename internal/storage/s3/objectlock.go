package s3

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// Object Lock. A bucket with Object Lock enabled is versioned: a plain
// DELETE there only adds a delete marker and leaves every byte stored (and
// billed), while a DELETE of a version under retention is refused. So on
// such a bucket Delete removes the key's versions one by one, and a refusal
// becomes storage.ErrRetained with the date it ends. Whether the bucket has
// Object Lock is asked once per Store.

// CheckRetention implements storage.Retainer: nil when the bucket has
// Object Lock enabled and no default retention (a default rule would lock
// the repository's lock and gc objects too, which are deleted in normal
// operation; tidemark sets retention per object instead).
func (s *Store) CheckRetention(ctx context.Context) error {
	enabled, rule, err := s.lockConfig(ctx)
	if err != nil {
		return err
	}
	if !enabled {
		return fmt.Errorf("bucket %s does not have Object Lock enabled; S3 only enables it when a bucket is created (aws s3api create-bucket --object-lock-enabled-for-bucket, mc mb --with-lock)", s.loc.Bucket)
	}
	if rule != "" {
		return fmt.Errorf("bucket %s has a default retention rule (%s), which would lock tidemark's lock and gc objects too; remove it (mc retention clear --default): tidemark puts retention on chunks and manifests itself", s.loc.Bucket, rule)
	}
	return nil
}

func (s *Store) lockConfig(ctx context.Context) (enabled bool, rule string, err error) {
	err = s.call(ctx, "get object lock configuration of", "", func(ctx context.Context) error {
		on, mode, validity, unit, err := s.client.GetObjectLockConfig(ctx, s.loc.Bucket)
		if err != nil {
			if minio.ToErrorResponse(err).Code == "ObjectLockConfigurationNotFoundError" {
				return nil
			}
			return err
		}
		enabled = on == "Enabled"
		if mode != nil && validity != nil && unit != nil {
			rule = fmt.Sprintf("%s %d %s", *mode, *validity, *unit)
		}
		return nil
	})
	return enabled, rule, err
}

// locked reports, once per Store, whether the bucket has Object Lock.
func (s *Store) locked(ctx context.Context) (bool, error) {
	s.lockMu.Lock()
	defer s.lockMu.Unlock()
	if s.lockKnown {
		return s.lockOn, nil
	}
	on, _, err := s.lockConfig(ctx)
	if errors.Is(err, storage.ErrPermission) {
		// Credentials without s3:GetBucketObjectLockConfiguration: delete
		// as on any bucket (a delete marker where Object Lock is on).
		on, err = false, nil
	}
	if err != nil {
		return false, err
	}
	s.lockKnown, s.lockOn = true, on
	return on, nil
}

// retentionOptions sets the Object Lock headers of a put.
func retentionOptions(popts *minio.PutObjectOptions, opts storage.PutOptions) error {
	if opts.RetainUntil.IsZero() {
		return nil
	}
	switch opts.RetentionMode {
	case storage.RetentionGovernance:
		popts.Mode = minio.Governance
	case storage.RetentionCompliance:
		popts.Mode = minio.Compliance
	default:
		return fmt.Errorf("retention mode %q: use %s or %s", opts.RetentionMode, storage.RetentionGovernance, storage.RetentionCompliance)
	}
	popts.RetainUntilDate = opts.RetainUntil
	// S3 wants a checksum of the body with any Object Lock header.
	popts.SendContentMd5 = true
	return nil
}

// deleteVersions removes every version of key (and its delete markers).
func (s *Store) deleteVersions(ctx context.Context, key, obj string) error {
	var versions []minio.ObjectInfo
	err := s.call(ctx, "list versions of", key, func(ctx context.Context) error {
		versions = versions[:0]
		for oi := range s.client.ListObjectsIter(ctx, s.loc.Bucket, minio.ListObjectsOptions{Prefix: obj, WithVersions: true}) {
			if oi.Err != nil {
				return oi.Err
			}
			if oi.Key == obj {
				versions = append(versions, oi)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, v := range versions {
		err := s.call(ctx, "delete", key, func(ctx context.Context) error {
			err := s.client.RemoveObject(ctx, s.loc.Bucket, obj, minio.RemoveObjectOptions{VersionID: v.VersionID})
			if minio.ToErrorResponse(err).Code == minio.NoSuchKey || minio.ToErrorResponse(err).Code == "NoSuchVersion" {
				return nil
			}
			return err
		})
		// MinIO answers "Object is WORM protected" with its own code, AWS
		// with AccessDenied: the version's retention tells for both.
		if err != nil && !v.IsDeleteMarker && ctx.Err() == nil {
			if until, ok := s.retainedUntil(ctx, obj, v.VersionID); ok {
				said := err.Error()
				var r minio.ErrorResponse
				if errors.As(err, &r) && r.Message != "" {
					said = r.Message
				}
				return fmt.Errorf("delete %s: %w until %s (the store said: %s)", s.objectURL(key), storage.ErrRetained, until.UTC().Format(time.RFC3339), said)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// retainedUntil returns a version's retention date if it is in the future.
func (s *Store) retainedUntil(ctx context.Context, obj, version string) (time.Time, bool) {
	callCtx, cancel := s.callContext(ctx)
	defer cancel()
	_, until, err := s.client.GetObjectRetention(callCtx, s.loc.Bucket, obj, version)
	if err != nil || until == nil || !until.After(time.Now()) {
		return time.Time{}, false
	}
	return *until, true
}

// ExtendRetention implements storage.Retainer. S3 refuses to shorten a
// retention (in governance mode without the bypass header, which is never
// sent); a refusal for a version already retained at least until is success.
func (s *Store) ExtendRetention(ctx context.Context, key string, until time.Time, mode string) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	var popts minio.PutObjectOptions
	if err := retentionOptions(&popts, storage.PutOptions{RetainUntil: until, RetentionMode: mode}); err != nil {
		return fmt.Errorf("extend retention of %s: %w", s.objectURL(key), err)
	}
	err = s.call(ctx, "extend retention of", key, func(ctx context.Context) error {
		return s.client.PutObjectRetention(ctx, s.loc.Bucket, obj, minio.PutObjectRetentionOptions{Mode: &popts.Mode, RetainUntilDate: &until})
	})
	if err != nil && ctx.Err() == nil {
		if cur, ok := s.retainedUntil(ctx, obj, ""); ok && !cur.Before(until.Truncate(time.Second)) {
			return nil
		}
	}
	return err
}

// PurgeOldVersions implements storage.VersionPurger: it deletes every
// version of key but the current one (on an unversioned bucket there is
// none). The repository calls it after rewriting its config, whose older
// versions hold key slots that were removed.
func (s *Store) PurgeOldVersions(ctx context.Context, key string) error {
	obj, err := s.object(key)
	if err != nil {
		return err
	}
	var old []string
	err = s.call(ctx, "list versions of", key, func(ctx context.Context) error {
		old = old[:0]
		for oi := range s.client.ListObjectsIter(ctx, s.loc.Bucket, minio.ListObjectsOptions{Prefix: obj, WithVersions: true}) {
			if oi.Err != nil {
				return oi.Err
			}
			if oi.Key == obj && !oi.IsLatest && oi.VersionID != "" && oi.VersionID != "null" {
				old = append(old, oi.VersionID)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, v := range old {
		if err := s.call(ctx, "delete an older version of", key, func(ctx context.Context) error {
			return s.client.RemoveObject(ctx, s.loc.Bucket, obj, minio.RemoveObjectOptions{VersionID: v})
		}); err != nil {
			return err
		}
	}
	return nil
}

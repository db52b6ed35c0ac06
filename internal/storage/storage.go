package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Sentinel errors. Every backend translates its own failures into these at
// its boundary (a minio 404 becomes ErrNotFound, EEXIST becomes ErrExists), so
// nothing above this package knows which backend it talks to. Backends wrap
// them with %w and the object key.
var (
	// ErrNotFound: the object (or bucket, or directory) does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrExists: a create-only put found the key already taken.
	ErrExists = errors.New("object already exists")
	// ErrPermission: credentials were refused or lack a permission.
	ErrPermission = errors.New("permission denied")
	// ErrUnavailable: the store could not be reached or answered with a
	// transient failure (5xx, throttling, timeout) after retries.
	ErrUnavailable = errors.New("storage unavailable")
	// ErrNoSpace: the store is full (ENOSPC, quota).
	ErrNoSpace = errors.New("no space left in storage")
	// ErrRetained: the object is under a retention period (S3 Object Lock)
	// and the store refused to delete or overwrite it.
	ErrRetained = errors.New("object is under retention (object lock)")
)

// Retention modes of PutOptions.RetentionMode (S3 Object Lock).
const (
	// RetentionGovernance: a user with s3:BypassGovernanceRetention can
	// still delete the object early.
	RetentionGovernance = "governance"
	// RetentionCompliance: no one can, until the period ends.
	RetentionCompliance = "compliance"
)

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string    // full key relative to the store's root, '/'-separated
	Size    int64     // bytes
	ModTime time.Time // last modification as the store reports it
}

// PutOptions tunes one Put.
type PutOptions struct {
	// IfNotExists makes the put create-only: if Key already exists the put
	// fails with ErrExists and the stored object is unchanged. Backends
	// implement it atomically (O_EXCL / link on files, If-None-Match: * on S3).
	IfNotExists bool
	// DeferSync lets a backend that implements Syncer return before the
	// object is durable: it is visible at once, but may be lost in a crash
	// (or, when Sync fails, removed) until a later Sync returns nil. A
	// backend without Syncer ignores it: its puts are durable on return, as
	// S3's are. Use it for objects nothing refers to until a Sync: the
	// archive's chunks, synced once before their manifest is stored. Objects
	// that are a commit point themselves (manifest, config, lock) never
	// defer.
	DeferSync bool
	// RetainUntil, when set, puts the object under retention until then,
	// in RetentionMode: a store that implements Retainer refuses to delete
	// or overwrite it before (ErrRetained). Other stores ignore it; the
	// archive only sets it on a repository created over a Retainer.
	RetainUntil   time.Time
	RetentionMode string
}

// Retainer is the optional capability behind PutOptions.RetainUntil. Store
// wrappers pass it through.
type Retainer interface {
	// CheckRetention returns nil when puts with RetainUntil are honoured
	// (on S3: the bucket has Object Lock enabled), and otherwise an error
	// that says what to change.
	CheckRetention(ctx context.Context) error
	// ExtendRetention keeps key under retention in mode until at least
	// until. A key already retained longer is left as it is (retention can
	// only grow).
	ExtendRetention(ctx context.Context, key string, until time.Time, mode string) error
}

// VersionPurger is the optional capability of a store that keeps older
// versions of an overwritten object (a versioned S3 bucket, as every bucket
// with Object Lock is). Store wrappers pass it through.
type VersionPurger interface {
	// PurgeOldVersions deletes every version of key but the current one.
	PurgeOldVersions(ctx context.Context, key string) error
}

// PurgeOldVersions calls s.PurgeOldVersions if s implements VersionPurger:
// a store that keeps no older versions has nothing to purge.
func PurgeOldVersions(ctx context.Context, s Storage, key string) error {
	if p, ok := s.(VersionPurger); ok {
		return p.PurgeOldVersions(ctx, key)
	}
	return nil
}

// ExtendRetention calls s.ExtendRetention, or says that s cannot retain.
func ExtendRetention(ctx context.Context, s Storage, key string, until time.Time, mode string) error {
	if r, ok := s.(Retainer); ok {
		return r.ExtendRetention(ctx, key, until, mode)
	}
	return fmt.Errorf("%s cannot keep objects under retention", s)
}

// CheckRetention calls s.CheckRetention, or says that s cannot retain.
func CheckRetention(ctx context.Context, s Storage) error {
	if r, ok := s.(Retainer); ok {
		return r.CheckRetention(ctx)
	}
	return fmt.Errorf("%s cannot keep objects under retention: Object Lock needs an s3:// repository whose bucket was created with object locking", s)
}

// Syncer is the optional capability behind PutOptions.DeferSync.
type Syncer interface {
	// Sync makes durable every object the store shows when Sync is called:
	// every put made with DeferSync that returned nil, whichever process
	// made it, along with the directory entries that name them. A store
	// wrapper passes Sync through once, never retried: after a failed sync
	// the data it covered is in doubt, and a second attempt could succeed
	// over lost data. An error means some of those objects may not survive
	// a crash; the caller must not commit anything that refers to them.
	// Sync may be called concurrently with puts; those are covered or not.
	Sync(ctx context.Context) error
}

// Sync calls s.Sync if s implements Syncer, and otherwise returns nil: a
// store without the capability makes every put durable before it returns.
func Sync(ctx context.Context, s any) error {
	if sy, ok := s.(Syncer); ok {
		return sy.Sync(ctx)
	}
	return nil
}

// Localer is the optional capability of a store on this machine's own
// disks. Writing to one is CPU work (copies into the page cache) with no
// latency to hide, so a writer keeps no more uploads in flight than cores.
// Store wrappers pass it through.
type Localer interface {
	Local() bool
}

// IsLocal reports whether s says it is local.
func IsLocal(s any) bool {
	l, ok := s.(Localer)
	return ok && l.Local()
}

// Reader reads objects.
type Reader interface {
	// Get returns length bytes of key starting at offset; length < 0 reads to
	// the end. Ranges are clamped: bytes past the end are not returned and an
	// offset at or past the end gives an empty reader; a negative offset is
	// an error. The caller closes the returned reader. A missing key returns
	// ErrNotFound from Get itself, not from the first Read.
	Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Stat returns the object's size and time, or ErrNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
}

// Lister enumerates objects.
type Lister interface {
	// List calls fn for every object whose key starts with prefix, in no
	// guaranteed order, from the calling goroutine. An error from fn stops
	// the listing and is returned. Objects written before List was called
	// are listed (list-after-write consistency is required of a store).
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
}

// Writer stores objects.
type Writer interface {
	// Put stores size bytes read from r under key. size < 0 means unknown;
	// callers that know the size pass it (chunk puts always do, so S3 sends a
	// single PUT). An object becomes visible under key only once complete: a
	// failed or canceled Put never leaves a partial object behind. When r is
	// an io.Seeker, a retrying backend may rewind it and send it again.
	//
	// Durability: a Put that returns nil has made the object durable (it
	// survives a crash of the process or of the machine), unless it was made
	// with DeferSync on a store that implements Syncer; such an object is
	// durable only once a later Sync returns nil. The rule for callers: an
	// object that refers to others (a manifest) is put only after they are
	// all durable, so a Sync between deferred puts and that object.
	Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) error
}

// Deleter removes objects.
type Deleter interface {
	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// Storage is a full backend. Implementations are safe for concurrent use by
// many goroutines.
type Storage interface {
	Reader
	Lister
	Writer
	Deleter
	// String names the store for messages, without any secret.
	String() string
	// Close releases the backend's resources.
	Close() error
}

// IsTransient reports whether err is worth retrying.
func IsTransient(err error) bool {
	return errors.Is(err, ErrUnavailable)
}

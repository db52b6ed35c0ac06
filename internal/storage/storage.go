package storage

import (
	"context"
	"errors"
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

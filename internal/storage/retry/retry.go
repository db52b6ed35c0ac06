package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// Defaults for Options' zero fields.
const (
	DefaultAttempts = 5
	DefaultBase     = 200 * time.Millisecond
	DefaultCap      = 10 * time.Second
)

// Options tunes the retries.
type Options struct {
	// Attempts is the number of tries per operation, the first included;
	// 1 disables retrying. Default DefaultAttempts.
	Attempts int
	// Base is the first backoff; each retry doubles it, up to Cap. The wait
	// is drawn at random from the upper half of that value, so clients that
	// failed together do not retry together. Defaults DefaultBase and
	// DefaultCap.
	Base, Cap time.Duration
	// Observer, when set, sees every operation once it ended (all its
	// attempts) and every retry.
	Observer Observer
	// Logger, when set, gets one warning per retry with its reason.
	Logger *slog.Logger
}

// Observer is told about the Store's operations, from the goroutine that
// ran each; it must be cheap and safe for concurrent use. op is one of
// "get", "stat", "list", "put", "delete", "retention". Op is called once
// per call of the Store's method with its final error (Get: the opening of
// the body only); Retry once per retry, before its wait.
type Observer interface {
	Op(op string, took time.Duration, err error)
	Retry(op string)
}

// Store retries the operations of the store it wraps that fail with
// storage.ErrUnavailable. It is safe for concurrent use if the wrapped store
// is.
//
//   - Get retries opening the object, never a read of the returned body.
//   - List retries only until the first object reached fn, so fn never sees
//     an object twice.
//   - Put retries only a body that is an io.Seeker, rewound to where it was
//     when Put was called; any other body gets one attempt.
//   - Sync is passed through once (see Sync).
type Store struct {
	inner storage.Storage
	opts  Options
}

var (
	_ storage.Storage = (*Store)(nil)
	_ storage.Syncer  = (*Store)(nil)
)

// Wrap returns inner with retries.
func Wrap(inner storage.Storage, opts Options) *Store {
	if opts.Attempts <= 0 {
		opts.Attempts = DefaultAttempts
	}
	if opts.Base <= 0 {
		opts.Base = DefaultBase
	}
	if opts.Cap <= 0 {
		opts.Cap = DefaultCap
	}
	return &Store{inner: inner, opts: opts}
}

// Unwrap returns the wrapped store, for its backend-specific methods.
func (s *Store) Unwrap() storage.Storage { return s.inner }

// String names the wrapped store.
func (s *Store) String() string { return s.inner.String() }

// Local passes the wrapped store's storage.Localer through.
func (s *Store) Local() bool { return storage.IsLocal(s.inner) }

// Close closes the wrapped store.
func (s *Store) Close() error { return s.inner.Close() }

// Get retries opening key.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (rc io.ReadCloser, err error) {
	err = s.do(ctx, "get", key, nil, func() error {
		rc, err = s.inner.Get(ctx, key, offset, length)
		return err
	})
	return rc, err
}

// Stat retries.
func (s *Store) Stat(ctx context.Context, key string) (oi storage.ObjectInfo, err error) {
	err = s.do(ctx, "stat", key, nil, func() error {
		oi, err = s.inner.Stat(ctx, key)
		return err
	})
	return oi, err
}

// List retries while fn has not been called yet.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	delivered := false
	return s.do(ctx, "list", prefix, func() bool { return !delivered }, func() error {
		return s.inner.List(ctx, prefix, func(oi storage.ObjectInfo) error {
			delivered = true
			return fn(oi)
		})
	})
}

// Sync passes through to the wrapped store, if it is a storage.Syncer, and
// is never retried: a failed sync leaves the data it covered in doubt, and a
// second one could report success over what the first lost.
func (s *Store) Sync(ctx context.Context) error { return storage.Sync(ctx, s.inner) }

// Delete retries (deleting is idempotent).
func (s *Store) Delete(ctx context.Context, key string) error {
	return s.do(ctx, "delete", key, nil, func() error { return s.inner.Delete(ctx, key) })
}

// Put retries a seekable body. A create-only put that failed in a way that
// may have stored the object (a lost response) and then finds the key taken
// compares the stored object with its body: if they are equal the object is
// its own, and the put succeeded.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	seeker, ok := r.(io.Seeker)
	if !ok {
		return s.once(ctx, "put", func() error { return s.inner.Put(ctx, key, r, size, opts) })
	}
	start, err := seeker.Seek(0, io.SeekCurrent)
	if err != nil {
		// cannot rewind: one attempt
		return s.once(ctx, "put", func() error { return s.inner.Put(ctx, key, r, size, opts) })
	}
	attempts := 0
	err = s.do(ctx, "put", key, nil, func() error {
		if attempts > 0 {
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return fmt.Errorf("put %s: rewinding the body to retry: %w", key, err)
			}
		}
		attempts++
		return s.inner.Put(ctx, key, r, size, opts)
	})
	if opts.IfNotExists && errors.Is(err, storage.ErrExists) && attempts > 1 {
		if same, cerr := s.storedEquals(ctx, key, r, seeker, start, size); cerr == nil && same {
			return nil
		}
	}
	return err
}

// storedEquals reports whether key holds exactly the body (from start).
func (s *Store) storedEquals(ctx context.Context, key string, r io.Reader, seeker io.Seeker, start, size int64) (bool, error) {
	if _, err := seeker.Seek(start, io.SeekStart); err != nil {
		return false, err
	}
	if size >= 0 {
		r = io.LimitReader(r, size)
	}
	stored, err := s.Get(ctx, key, 0, -1)
	if err != nil {
		return false, err
	}
	defer func() { _ = stored.Close() }()
	a, b := make([]byte, 32<<10), make([]byte, 32<<10)
	for {
		na, erra := io.ReadFull(r, a)
		nb, errb := io.ReadFull(stored, b)
		if !bytes.Equal(a[:na], b[:nb]) {
			return false, nil
		}
		endA := errors.Is(erra, io.EOF) || errors.Is(erra, io.ErrUnexpectedEOF)
		endB := errors.Is(errb, io.EOF) || errors.Is(errb, io.ErrUnexpectedEOF)
		switch {
		case erra != nil && !endA:
			return false, erra
		case errb != nil && !endB:
			return false, errb
		case endA || endB:
			return endA && endB, nil
		}
	}
}

// once runs fn a single time, observed as op.
func (s *Store) once(_ context.Context, op string, fn func() error) error {
	start := time.Now()
	err := fn()
	if s.opts.Observer != nil {
		s.opts.Observer.Op(op, time.Since(start), err)
	}
	return err
}

// do runs fn until it succeeds, fails with an error that is not transient,
// runs out of attempts, or ctx ends. canRetry, if set, can veto a retry. op
// and key name the operation for the observer and the retry log.
func (s *Store) do(ctx context.Context, op, key string, canRetry func() bool, fn func() error) (err error) {
	if s.opts.Observer != nil {
		start := time.Now()
		defer func() { s.opts.Observer.Op(op, time.Since(start), err) }()
	}
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !storage.IsTransient(err) || (canRetry != nil && !canRetry()) {
			return err
		}
		if attempt >= s.opts.Attempts {
			if attempt == 1 {
				return err
			}
			return fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
		}
		wait := s.backoff(attempt)
		if s.opts.Observer != nil {
			s.opts.Observer.Retry(op)
		}
		if s.opts.Logger != nil {
			s.opts.Logger.Warn("storage operation failed; retrying", "store", s.inner.String(), "op", op, "key", key,
				"attempt", attempt, "of", s.opts.Attempts, "wait", wait.Round(time.Millisecond), "reason", err.Error())
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (while waiting to retry after: %w)", ctx.Err(), err)
		}
	}
}

// backoff returns the wait before retry number n (1-based): Base doubled
// n-1 times, at most Cap, of which a random upper half.
func (s *Store) backoff(n int) time.Duration {
	d := s.opts.Base
	for i := 1; i < n && d < s.opts.Cap; i++ {
		d *= 2
	}
	d = min(d, s.opts.Cap)
	half := d / 2
	return half + rand.N(d-half+1)
}

// ExtendRetention passes the wrapped store's storage.Retainer through,
// retried like any idempotent call.
func (s *Store) ExtendRetention(ctx context.Context, key string, until time.Time, mode string) error {
	return s.do(ctx, "retention", key, nil, func() error { return storage.ExtendRetention(ctx, s.inner, key, until, mode) })
}

// PurgeOldVersions passes the wrapped store's storage.VersionPurger
// through, retried like any idempotent call.
func (s *Store) PurgeOldVersions(ctx context.Context, key string) error {
	return s.do(ctx, "delete", key, nil, func() error { return storage.PurgeOldVersions(ctx, s.inner, key) })
}

// CheckRetention passes the wrapped store's storage.Retainer through.
func (s *Store) CheckRetention(ctx context.Context) error {
	return storage.CheckRetention(ctx, s.inner)
}

package throttle

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// ListPage is how many listed objects count as one request: an S3
// ListObjectsV2 response holds up to 1,000 keys, and a store's work (and an
// S3 bill) grows with pages, not with calls of List.
const ListPage = 1000

// Store sends the operations of the store it wraps no faster than its rate.
// Each Get (opening the object; reading its body is not counted), Stat,
// Put, Delete and retention change is one request; a List is one request
// when it starts and one more before each further ListPage objects reach
// its callback, so a long listing is slowed between pages as a store
// serving it page by page would be. A caller over the rate waits its turn
// (callers are served in the order they asked) or until its context ends.
// Safe for concurrent use if the wrapped store is.
type Store struct {
	inner storage.Storage
	lim   *limiter
}

var (
	_ storage.Storage       = (*Store)(nil)
	_ storage.Syncer        = (*Store)(nil)
	_ storage.Retainer      = (*Store)(nil)
	_ storage.VersionPurger = (*Store)(nil)
)

// Wrap returns inner limited to rate requests per second, with bursts of at
// most a tenth of a second's worth (at least one request). rate must be a
// positive, finite number: a caller that wants no limit does not wrap.
func Wrap(inner storage.Storage, rate float64) (*Store, error) {
	if !(rate > 0) || math.IsInf(rate, 1) {
		return nil, fmt.Errorf("throttle %s: rate %v requests/s: want a positive number (no limit: do not wrap the store)", inner, rate)
	}
	return &Store{inner: inner, lim: newLimiter(rate, max(1, math.Ceil(rate/10)))}, nil
}

// Rate returns the limit in requests per second.
func (s *Store) Rate() float64 { return s.lim.rate }

// Wait takes one request's turn without sending anything. A caller whose
// request must go out within a deadline of its own (gc's deletes are bounded
// in time after the lock check that allows them) waits here first, then
// sends the request through Unwrap, so waiting in line never eats into that
// deadline.
func (s *Store) Wait(ctx context.Context) error { return s.lim.wait(ctx) }

// Unwrap returns the wrapped store, for its backend-specific methods.
func (s *Store) Unwrap() storage.Storage { return s.inner }

// String names the wrapped store.
func (s *Store) String() string { return s.inner.String() }

// Local passes the wrapped store's storage.Localer through.
func (s *Store) Local() bool { return storage.IsLocal(s.inner) }

// Close closes the wrapped store.
func (s *Store) Close() error { return s.inner.Close() }

// Get waits for a token, then opens key.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := s.lim.wait(ctx); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return s.inner.Get(ctx, key, offset, length)
}

// Stat waits for a token.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := s.lim.wait(ctx); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	return s.inner.Stat(ctx, key)
}

// List waits for a token before it starts and before each further
// ListPage objects.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := s.lim.wait(ctx); err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	n := 0
	return s.inner.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		if n++; n > ListPage && n%ListPage == 1 {
			if err := s.lim.wait(ctx); err != nil {
				return fmt.Errorf("list %s: %w", prefix, err)
			}
		}
		return fn(oi)
	})
}

// Put waits for a token.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	if err := s.lim.wait(ctx); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return s.inner.Put(ctx, key, r, size, opts)
}

// Delete waits for a token.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.lim.wait(ctx); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return s.inner.Delete(ctx, key)
}

// Sync passes the wrapped store's storage.Syncer through, unlimited: it is
// one call per commit, and a durability barrier should not wait in line.
func (s *Store) Sync(ctx context.Context) error { return storage.Sync(ctx, s.inner) }

// ExtendRetention waits for a token, then passes the wrapped store's
// storage.Retainer through.
func (s *Store) ExtendRetention(ctx context.Context, key string, until time.Time, mode string) error {
	if err := s.lim.wait(ctx); err != nil {
		return fmt.Errorf("extending retention of %s: %w", key, err)
	}
	return storage.ExtendRetention(ctx, s.inner, key, until, mode)
}

// CheckRetention passes the wrapped store's storage.Retainer through.
func (s *Store) CheckRetention(ctx context.Context) error {
	return storage.CheckRetention(ctx, s.inner)
}

// PurgeOldVersions waits for a token, then passes the wrapped store's
// storage.VersionPurger through.
func (s *Store) PurgeOldVersions(ctx context.Context, key string) error {
	if err := s.lim.wait(ctx); err != nil {
		return fmt.Errorf("purging old versions of %s: %w", key, err)
	}
	return storage.PurgeOldVersions(ctx, s.inner, key)
}

// limiter is a token bucket that hands out reservations: a caller takes its
// token at once, possibly driving the bucket below zero, and sleeps until
// the refill would have covered it. Waiters are so served in the order they
// arrived, and the long-run rate holds whatever their number.
type limiter struct {
	rate, burst float64

	mu     sync.Mutex
	tokens float64
	last   time.Time

	// now and sleep are time.Now and a timer; tests replace them.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

func newLimiter(rate, burst float64) *limiter {
	return &limiter{rate: rate, burst: burst, tokens: burst, now: time.Now, sleep: sleepCtx}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wait takes one token, sleeping as long as the bucket owes it. A context
// that ends while waiting returns the token and ctx's error.
func (l *limiter) wait(ctx context.Context) error {
	l.mu.Lock()
	now := l.now()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	l.tokens--
	owed := -l.tokens
	l.mu.Unlock()
	if owed <= 0 {
		return ctx.Err()
	}
	if err := l.sleep(ctx, time.Duration(owed/l.rate*float64(time.Second))); err != nil {
		l.mu.Lock()
		l.tokens++
		l.mu.Unlock()
		return err
	}
	return nil
}

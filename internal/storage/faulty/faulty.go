package faulty

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// Op names a storage operation.
type Op string

// The operations a Fault can target.
const (
	Get    Op = "get"
	Stat   Op = "stat"
	List   Op = "list"
	Put    Op = "put"
	Delete Op = "delete"
	Sync   Op = "sync" // storage.Syncer's Sync; its key is ""
)

// Fault describes what to do to some calls of one operation. Of the calls
// that match Op and KeyPrefix, the first After pass untouched, the next Times
// (0: all the rest) are faulted: delayed by Delay, then failed with what Hook
// or Err return; a call neither fails goes on to the wrapped store, with
// Corrupt applied.
type Fault struct {
	Op        Op
	KeyPrefix string // "" matches every key; for List, matched against the prefix listed
	After     int    // matching calls let through first ("fail the 3rd put": After 2, Times 1)
	Times     int    // faulted calls after those; 0 means every one

	Delay time.Duration // wait first (cut short, with ctx's error, if ctx ends)
	Hook  func(ctx context.Context, op Op, key string) error
	Err   error // returned, wrapped with the op and key, instead of calling the store

	// ReadFirst (Put with Err) reads up to this many bytes of the body
	// before failing, like a connection dropped mid-upload.
	ReadFirst int64
	// Corrupt (Get) flips one bit of the first byte read.
	Corrupt bool
}

type fault struct {
	Fault
	seen, injected int
}

// Store wraps a storage.Storage and applies the injected faults. Safe for
// concurrent use; faults are checked in the order they were injected and the
// first one due applies.
type Store struct {
	inner storage.Storage

	mu     sync.Mutex
	faults []*fault
	calls  map[Op]int
}

var (
	_ storage.Storage = (*Store)(nil)
	_ storage.Syncer  = (*Store)(nil)
)

// New wraps inner with no faults.
func New(inner storage.Storage) *Store {
	return &Store{inner: inner, calls: map[Op]int{}}
}

// Inject adds a fault.
func (s *Store) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &fault{Fault: f})
}

// Reset removes every fault and zeroes the call counts.
func (s *Store) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
	s.calls = map[Op]int{}
}

// Calls returns how many times op was called, faulted or not.
func (s *Store) Calls(op Op) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// Unwrap returns the wrapped store.
func (s *Store) Unwrap() storage.Storage { return s.inner }

// String names the wrapped store.
func (s *Store) String() string { return s.inner.String() }

// Close closes the wrapped store.
func (s *Store) Close() error { return s.inner.Close() }

// due counts the call and returns the fault to apply to it, if any.
func (s *Store) due(op Op, key string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[op]++
	var chosen *Fault
	for _, f := range s.faults {
		if f.Op != op || !strings.HasPrefix(key, f.KeyPrefix) {
			continue
		}
		f.seen++
		if chosen == nil && f.seen > f.After && (f.Times == 0 || f.injected < f.Times) {
			f.injected++
			c := f.Fault
			chosen = &c
		}
	}
	return chosen
}

// apply delays and fails the call as f says; nil means go on.
func apply(ctx context.Context, f *Fault, op Op, key string) error {
	if f == nil {
		return nil
	}
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s %s: %w", op, key, ctx.Err())
		}
	}
	if f.Hook != nil {
		if err := f.Hook(ctx, op, key); err != nil {
			return err
		}
	}
	if f.Err != nil {
		return fmt.Errorf("%s %s: injected fault: %w", op, key, f.Err)
	}
	return nil
}

// Get applies faults, then reads from the wrapped store.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	f := s.due(Get, key)
	if err := apply(ctx, f, Get, key); err != nil {
		return nil, err
	}
	rc, err := s.inner.Get(ctx, key, offset, length)
	if err != nil || f == nil || !f.Corrupt {
		return rc, err
	}
	return &corruptReader{ReadCloser: rc}, nil
}

// corruptReader flips the lowest bit of the first byte it returns.
type corruptReader struct {
	io.ReadCloser
	done bool
}

func (r *corruptReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if n > 0 && !r.done {
		p[0] ^= 1
		r.done = true
	}
	return n, err
}

// Stat applies faults, then stats in the wrapped store.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := apply(ctx, s.due(Stat, key), Stat, key); err != nil {
		return storage.ObjectInfo{}, err
	}
	return s.inner.Stat(ctx, key)
}

// List applies faults, then lists the wrapped store.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := apply(ctx, s.due(List, prefix), List, prefix); err != nil {
		return err
	}
	return s.inner.List(ctx, prefix, fn)
}

// Put applies faults (reading ReadFirst bytes of a failing body), then puts
// to the wrapped store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	f := s.due(Put, key)
	if f != nil && f.Err != nil && f.ReadFirst > 0 {
		if _, err := io.CopyN(io.Discard, r, f.ReadFirst); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("%s %s: reading body: %w", Put, key, err)
		}
	}
	if err := apply(ctx, f, Put, key); err != nil {
		return err
	}
	return s.inner.Put(ctx, key, r, size, opts)
}

// Delete applies faults, then deletes from the wrapped store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := apply(ctx, s.due(Delete, key), Delete, key); err != nil {
		return err
	}
	return s.inner.Delete(ctx, key)
}

// Sync applies faults, then syncs the wrapped store if it is a
// storage.Syncer (one that is not makes every put durable on return).
func (s *Store) Sync(ctx context.Context) error {
	if err := apply(ctx, s.due(Sync, ""), Sync, ""); err != nil {
		return err
	}
	return storage.Sync(ctx, s.inner)
}

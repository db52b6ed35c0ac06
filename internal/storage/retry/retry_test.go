package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/faulty"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/storage/storagetest"
)

var fast = Options{Attempts: 5, Base: time.Millisecond, Cap: 5 * time.Millisecond}

func newFaulty(t *testing.T) *faulty.Store {
	st, err := file.Open(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return faulty.New(st)
}

// TestConformance: the wrapper keeps the contract of the store it wraps.
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage { return Wrap(newFaulty(t), fast) })
}

func TestTransientThenSuccess(t *testing.T) {
	ctx := context.Background()
	f := newFaulty(t)
	st := Wrap(f, fast)
	data := storagetest.Data(1, 100_000)

	// Each failed attempt consumes part of the body: the retry must rewind
	// it to where it was when Put was called, not to 0.
	f.Inject(faulty.Fault{Op: faulty.Put, Times: 3, Err: storage.ErrUnavailable, ReadFirst: 5000})
	body := bytes.NewReader(append([]byte("skipped"), data...))
	if _, err := body.Seek(7, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "k", body, int64(len(data)), storage.PutOptions{}); err != nil {
		t.Fatalf("put: %v", err)
	}
	if n := f.Calls(faulty.Put); n != 4 {
		t.Errorf("put calls: %d, want 4", n)
	}
	if !bytes.Equal(storagetest.Get(t, f, "k"), data) {
		t.Error("stored data differs: the body was not rewound")
	}

	f.Reset()
	for _, op := range []faulty.Op{faulty.Get, faulty.Stat, faulty.List, faulty.Delete} {
		f.Inject(faulty.Fault{Op: op, Times: 2, Err: storage.ErrUnavailable})
	}
	if !bytes.Equal(storagetest.Get(t, st, "k"), data) {
		t.Error("get after retries: wrong data")
	}
	if _, err := st.Stat(ctx, "k"); err != nil {
		t.Errorf("stat: %v", err)
	}
	n := 0
	if err := st.List(ctx, "", func(storage.ObjectInfo) error { n++; return nil }); err != nil || n != 1 {
		t.Errorf("list: %d objects, %v", n, err)
	}
	if err := st.Delete(ctx, "k"); err != nil {
		t.Errorf("delete: %v", err)
	}
	for _, op := range []faulty.Op{faulty.Get, faulty.Stat, faulty.List, faulty.Delete} {
		if c := f.Calls(op); c != 3 {
			t.Errorf("%s calls: %d, want 3", op, c)
		}
	}
}

func TestGiveUp(t *testing.T) {
	f := newFaulty(t)
	st := Wrap(f, fast)
	f.Inject(faulty.Fault{Op: faulty.Stat, Err: storage.ErrUnavailable})
	_, err := st.Stat(context.Background(), "k")
	if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "gave up after 5 attempts") {
		t.Errorf("stat: got %v", err)
	}
	if n := f.Calls(faulty.Stat); n != 5 {
		t.Errorf("stat calls: %d, want 5", n)
	}
}

func TestNotRetried(t *testing.T) {
	ctx := context.Background()
	f := newFaulty(t)
	st := Wrap(f, fast)

	// A body that cannot be rewound gets one attempt.
	f.Inject(faulty.Fault{Op: faulty.Put, Times: 1, Err: storage.ErrUnavailable})
	err := st.Put(ctx, "k", io.MultiReader(bytes.NewReader([]byte("abc"))), 3, storage.PutOptions{})
	if !errors.Is(err, storage.ErrUnavailable) || f.Calls(faulty.Put) != 1 {
		t.Errorf("non-seekable put: got %v after %d calls, want the first error after 1", err, f.Calls(faulty.Put))
	}

	// Errors that are not transient are final.
	for _, sentinel := range []error{storage.ErrNotFound, storage.ErrPermission, storage.ErrExists, storage.ErrNoSpace, errors.New("other")} {
		f.Reset()
		f.Inject(faulty.Fault{Op: faulty.Stat, Err: sentinel})
		if _, err := st.Stat(ctx, "k"); !errors.Is(err, sentinel) || f.Calls(faulty.Stat) != 1 {
			t.Errorf("stat failing with %v: got %v after %d calls", sentinel, err, f.Calls(faulty.Stat))
		}
	}
}

// TestCancelStopsBackoff: a canceled context ends the wait at once.
func TestCancelStopsBackoff(t *testing.T) {
	f := newFaulty(t)
	st := Wrap(f, Options{Attempts: 10, Base: time.Hour, Cap: time.Hour})
	f.Inject(faulty.Fault{Op: faulty.Get, Err: storage.ErrUnavailable})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := st.Get(ctx, "k", 0, -1)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("get: got %v, want context.Canceled with the last error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v to stop the backoff", d)
	}
	if n := f.Calls(faulty.Get); n != 1 {
		t.Errorf("get calls: %d, want 1", n)
	}
}

// failAfterFirst lists one object and then fails transiently.
type failAfterFirst struct{ storage.Storage }

func (s failAfterFirst) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := fn(storage.ObjectInfo{Key: "first"}); err != nil {
		return err
	}
	return storage.ErrUnavailable
}

func TestListNotRetriedAfterDelivery(t *testing.T) {
	st := Wrap(failAfterFirst{newFaulty(t)}, fast)
	var seen []string
	err := st.List(context.Background(), "", func(oi storage.ObjectInfo) error {
		seen = append(seen, oi.Key)
		return nil
	})
	if !errors.Is(err, storage.ErrUnavailable) || len(seen) != 1 {
		t.Errorf("list: got %v with %q; want the error, each object once", err, seen)
	}
}

// lostResponse stores the first put but reports it failed, as when the
// connection drops before the response arrives.
type lostResponse struct {
	storage.Storage
	lost bool
}

func (s *lostResponse) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	if err := s.Storage.Put(ctx, key, r, size, opts); err != nil {
		return err
	}
	if !s.lost {
		s.lost = true
		return storage.ErrUnavailable
	}
	return nil
}

// TestCreateOnlyLostResponse: the retry of a create-only put that actually
// succeeded finds its own object and succeeds; someone else's stays ErrExists.
func TestCreateOnlyLostResponse(t *testing.T) {
	ctx := context.Background()
	inner := &lostResponse{Storage: newFaulty(t)}
	st := Wrap(inner, fast)
	data := storagetest.Data(1, 1000)
	if err := st.Put(ctx, "lock", bytes.NewReader(data), int64(len(data)), storage.PutOptions{IfNotExists: true}); err != nil {
		t.Errorf("create-only put with a lost response: %v", err)
	}

	inner.lost = false
	storagetest.Put(t, inner.Storage, "taken", []byte("someone else's"))
	err := st.Put(ctx, "taken", bytes.NewReader(data), int64(len(data)), storage.PutOptions{IfNotExists: true})
	if !errors.Is(err, storage.ErrExists) {
		t.Errorf("create-only put of a key someone else holds: got %v, want ErrExists", err)
	}
	// First attempt, no ambiguity: ErrExists as is.
	err = st.Put(ctx, "taken", bytes.NewReader([]byte("someone else's")), 14, storage.PutOptions{IfNotExists: true})
	if !errors.Is(err, storage.ErrExists) {
		t.Errorf("plain create-only put of a taken key: got %v", err)
	}
}

func TestBackoff(t *testing.T) {
	s := Wrap(nil, Options{Base: 100 * time.Millisecond, Cap: time.Second})
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 100: time.Second} {
		for range 50 {
			if d := s.backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
	d := Wrap(nil, Options{})
	if d.opts != (Options{Attempts: DefaultAttempts, Base: DefaultBase, Cap: DefaultCap}) {
		t.Errorf("defaults: %+v", d.opts)
	}
}

type recorder struct {
	mu      sync.Mutex
	ops     []string
	retries []string
}

func (r *recorder) Op(op string, _ time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, fmt.Sprintf("%s:%v", op, err == nil))
}

func (r *recorder) Retry(op string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retries = append(r.retries, op)
}

// TestObserverAndRetryLog: every operation is observed once with its final
// outcome, every retry is counted and logged with its reason.
func TestObserverAndRetryLog(t *testing.T) {
	ctx := context.Background()
	f := newFaulty(t)
	rec := &recorder{}
	var logs bytes.Buffer
	opts := fast
	opts.Observer = rec
	opts.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	st := Wrap(f, opts)
	f.Inject(faulty.Fault{Op: faulty.Put, Times: 2, Err: fmt.Errorf("s3 said 503: %w", storage.ErrUnavailable)})
	if err := st.Put(ctx, "k", bytes.NewReader([]byte("x")), 1, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Stat(ctx, "missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("stat of a missing key: %v", err)
	}
	if got := strings.Join(rec.ops, ","); got != "put:true,stat:false" {
		t.Errorf("observed ops %s, want put:true,stat:false", got)
	}
	if got := strings.Join(rec.retries, ","); got != "put,put" {
		t.Errorf("observed retries %s, want put,put", got)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one log line per retry, got %q", logs.String())
	}
	for _, l := range lines {
		for _, w := range []string{`"op":"put"`, `"key":"k"`, `s3 said 503`, `"level":"WARN"`} {
			if !strings.Contains(l, w) {
				t.Errorf("retry log line %s lacks %s", l, w)
			}
		}
	}
}

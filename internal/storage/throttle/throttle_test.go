package throttle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/file"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// stamped records when each request reached the store it wraps.
type stamped struct {
	storage.Storage
	mu    sync.Mutex
	times []time.Time
}

func (s *stamped) stamp() {
	s.mu.Lock()
	s.times = append(s.times, time.Now())
	s.mu.Unlock()
}

func (s *stamped) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	s.stamp()
	return s.Storage.Stat(ctx, key)
}

func (s *stamped) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	s.stamp()
	return s.Storage.Put(ctx, key, r, size, opts)
}

func (s *stamped) Delete(ctx context.Context, key string) error {
	s.stamp()
	return s.Storage.Delete(ctx, key)
}

// listing lists n objects and does nothing else.
type listing struct {
	storage.Storage
	n int
}

func (l listing) List(_ context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	for i := range l.n {
		if err := fn(storage.ObjectInfo{Key: fmt.Sprintf("%s%05d", prefix, i)}); err != nil {
			return err
		}
	}
	return nil
}

func newFileStore(t *testing.T) storage.Storage {
	t.Helper()
	st, err := file.Open(t.TempDir(), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Requests from many goroutines against a real store reach it no faster
// than the rate: in every window of half a second no more than the burst
// plus half a second's worth, and the whole run takes at least what the
// rate allows. Sleeping only ever overshoots, so these bounds hold however
// loaded the machine is.
func TestRateBoundsRequests(t *testing.T) {
	const rate, n = 100.0, 150
	inner := &stamped{Storage: newFileStore(t)}
	s, err := Wrap(inner, rate)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			key := fmt.Sprintf("k/%d", i)
			switch i % 3 {
			case 0:
				return s.Put(gctx, key, strings.NewReader("x"), 1, storage.PutOptions{})
			case 1:
				_, err := s.Stat(gctx, key)
				if errors.Is(err, storage.ErrNotFound) {
					err = nil
				}
				return err
			default:
				return s.Delete(gctx, key)
			}
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	burst := math.Ceil(rate / 10)
	if min := time.Duration((n - burst) / rate * float64(time.Second)); took < min {
		t.Errorf("%d requests at %v/s took %v, less than the %v the rate allows", n, rate, took, min)
	}
	if max := testenv.Wait(10 * time.Second); took > max {
		t.Errorf("%d requests at %v/s took %v: the limiter waits far longer than the rate asks", n, rate, took)
	}
	times := slices.Clone(inner.times)
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	if len(times) != n {
		t.Fatalf("the store saw %d requests, want %d", len(times), n)
	}
	const window = 500 * time.Millisecond
	limit := int(burst + rate*window.Seconds())
	for i := range times {
		j, _ := slices.BinarySearchFunc(times, times[i].Add(window), func(a, b time.Time) int { return a.Compare(b) })
		if j-i > limit {
			t.Fatalf("%d requests reached the store within %v from request %d; the rate allows %d", j-i, window, i, limit)
		}
	}
	t.Logf("%d requests in %v (%.0f/s)", n, took.Round(time.Millisecond), float64(n)/took.Seconds())
}

// A listing costs a request when it starts and one more per ListPage
// objects delivered, taken before the object that starts the page.
func TestListCountsPages(t *testing.T) {
	s, err := Wrap(listing{n: 2*ListPage + 1}, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// A frozen clock and a sleep that only records: every token is
	// counted and nothing refills.
	frozen := time.Now()
	s.lim.now = func() time.Time { return frozen }
	var slept []time.Duration
	s.lim.sleep = func(_ context.Context, d time.Duration) error {
		slept = append(slept, d)
		return nil
	}
	seen := 0
	if err := s.List(ctx, "p/", func(storage.ObjectInfo) error { seen++; return nil }); err != nil {
		t.Fatal(err)
	}
	if seen != 2*ListPage+1 {
		t.Fatalf("listed %d objects, want %d", seen, 2*ListPage+1)
	}
	// Burst 1: the first request is free, the pages at 1,001 and 2,001
	// wait one and two seconds.
	if want := []time.Duration{time.Second, 2 * time.Second}; !slices.Equal(slept, want) {
		t.Fatalf("waits %v, want %v (a request per started page of %d)", slept, want, ListPage)
	}
}

// A caller whose context ends while it waits gets the context's error,
// names the request, and gives its token back.
func TestWaitCanceled(t *testing.T) {
	s, err := Wrap(newFileStore(t), 0.5) // one token, then one per 2 s
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Stat(ctx, "a"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("first stat: %v, want not found", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err = s.Delete(cctx, "a")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "delete a") {
		t.Fatalf("delete waiting past its deadline: %v", err)
	}
	if took := time.Since(t0); took > testenv.Wait(time.Second) {
		t.Fatalf("canceled wait returned after %v", took)
	}
	s.lim.mu.Lock()
	tokens := s.lim.tokens
	s.lim.mu.Unlock()
	if tokens < -0.01 || tokens > 0.2 {
		t.Fatalf("after a canceled wait the bucket holds %.2f tokens, want about 0 (the token given back)", tokens)
	}
}

func TestWrapRefusesBadRates(t *testing.T) {
	for _, rate := range []float64{0, -1, math.NaN(), math.Inf(1), math.Inf(-1)} {
		_, err := Wrap(newFileStore(t), rate)
		if err == nil || !strings.Contains(err.Error(), "want a positive number") {
			t.Errorf("rate %v: %v, want a refusal that says what is wanted", rate, err)
		}
	}
}

package archive

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

	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// stampStore records when each request reached the store, and its key; a
// listing is a request when it starts and one more per 1,000 objects.
type stampStore struct {
	storage.Storage
	mu   sync.Mutex
	reqs []stampedReq
}

type stampedReq struct {
	at  time.Time
	key string
}

func (s *stampStore) stamp(key string) {
	s.mu.Lock()
	s.reqs = append(s.reqs, stampedReq{time.Now(), key})
	s.mu.Unlock()
}

// since returns the requests made from t0 on whose keys have none of the
// prefixes.
func (s *stampStore) since(t0 time.Time, except ...string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Time
	for _, q := range s.reqs {
		if q.at.Before(t0) || slices.ContainsFunc(except, func(p string) bool { return strings.HasPrefix(q.key, p) }) {
			continue
		}
		out = append(out, q.at)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

func (s *stampStore) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	s.stamp(key)
	return s.Storage.Get(ctx, key, off, n)
}

func (s *stampStore) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	s.stamp(key)
	return s.Storage.Stat(ctx, key)
}

func (s *stampStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	s.stamp(key)
	return s.Storage.Put(ctx, key, r, size, opts)
}

func (s *stampStore) Delete(ctx context.Context, key string) error {
	s.stamp(key)
	return s.Storage.Delete(ctx, key)
}

func (s *stampStore) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	s.stamp(prefix)
	n := 0
	return s.Storage.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		if n++; n%1000 == 1 && n > 1 {
			s.stamp(prefix)
		}
		return fn(oi)
	})
}

func (s *stampStore) Sync(ctx context.Context) error { return storage.Sync(ctx, s.Storage) }

// maxInWindow is the most requests any window of length w holds.
func maxInWindow(times []time.Time, w time.Duration) int {
	most := 0
	for i := range times {
		j, _ := slices.BinarySearchFunc(times, times[i].Add(w), func(a, b time.Time) int { return a.Compare(b) })
		most = max(most, j-i)
	}
	return most
}

// gcGarbage makes a repository on st with backups of distinct data and
// deletes every other manifest: chunks for a condemning run, then a sweep.
func gcGarbage(t *testing.T, st storage.Storage, backups int) *Repo {
	t.Helper()
	ctx := context.Background()
	r, err := Init(ctx, st, InitOptions{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	if err := r.SetLockTiming(testRefresh, testStale); err != nil {
		t.Fatal(err)
	}
	for i := range backups {
		id, err := backupData(ctx, r, "", 1<<20, uint64(1000+i), nil)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := st.Delete(ctx, manifestKey(id)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return r
}

// GCOptions.MaxRate bounds what a condemning and a sweeping run send to
// the store, counted where the requests reach it: in no half second more
// than the burst and half a second's worth. The run's own lock and fence
// checks are left out of the count, and out of the bound by design.
func TestGCMaxRateBoundsRequests(t *testing.T) {
	ctx := context.Background()
	st := &stampStore{Storage: openFileStore(t, t.TempDir())}
	r := gcGarbage(t, st, 6)
	const rate = 40.0
	burst := math.Ceil(rate / 10)
	limit := int(burst + rate/2)
	// Each run has a bucket of its own, full when it starts: each is
	// checked on its own.
	var reqs int
	var took time.Duration
	for i := range 2 {
		t0 := time.Now()
		rep, err := r.GC(ctx, GCOptions{MaxRate: rate})
		if err != nil {
			t.Fatal(err)
		}
		d := time.Since(t0)
		if i == 0 && rep.ChunksCondemned == 0 {
			t.Fatalf("first run condemned nothing: %+v", rep)
		}
		if i == 1 && rep.ChunksDeleted < 30 {
			t.Fatalf("second run deleted %d chunks, want the ~48 of the 3 deleted backups: %+v", rep.ChunksDeleted, rep)
		}
		run := st.since(t0, lockPrefix+lockGC+"-", fencedDir)
		if most := maxInWindow(run, 500*time.Millisecond); most > limit {
			t.Fatalf("run %d: %d requests reached the store within half a second; %v/s allows %d", i+1, most, rate, limit)
		}
		if floor := time.Duration((float64(len(run)) - burst) / rate * float64(time.Second)); d < floor {
			t.Fatalf("run %d: %d requests in %v, faster than %v/s allows (%v)", i+1, len(run), d, rate, floor)
		}
		reqs, took = reqs+len(run), took+d
	}
	t.Logf("%d requests in %v (%.0f/s)", reqs, took.Round(time.Millisecond), float64(reqs)/took.Seconds())
}

// A gc run bounded to one request a second does not slow a backup on the
// same Repo: the backup (dozens of requests) commits while the gc is still
// in its first steps.
func TestGCMaxRateLeavesBackupsAlone(t *testing.T) {
	ctx := context.Background()
	st := &stampStore{Storage: openFileStore(t, t.TempDir())}
	r := gcGarbage(t, st, 2)
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gcDone := make(chan error, 1)
	go func() {
		_, err := r.GC(gctx, GCOptions{MaxRate: 1})
		gcDone <- err
	}()
	if _, err := backupData(ctx, r, "", 1<<20, 77, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-gcDone:
		t.Fatalf("gc at 1 request/s ended before the backup did (%v): the backup waited on its bound", err)
	default:
	}
	cancel()
	select {
	case err := <-gcDone:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled gc: %v", err)
		}
	case <-time.After(testenv.Wait(10 * time.Second)):
		t.Fatal("gc did not return after its context was canceled")
	}
}

func TestGCMaxRateRefusesBadValues(t *testing.T) {
	r, _ := gcRepo(t, false, nil, "")
	for _, rate := range []float64{-1, math.NaN(), math.Inf(1)} {
		_, err := r.GC(context.Background(), GCOptions{MaxRate: rate})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("max rate %v", rate)) || !strings.Contains(err.Error(), "0 for no bound") {
			t.Errorf("max rate %v: %v, want a refusal naming the value and the choices", rate, err)
		}
	}
	if keys := countKeys(t, r.store, lockPrefix); keys != 0 {
		t.Fatalf("a refused gc left %d locks", keys)
	}
}

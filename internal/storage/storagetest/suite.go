package storagetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// Run checks that the stores made by newStore keep the storage.Storage
// contract. Every subtest calls newStore once for a store of its own, which
// must start empty; subtests run in parallel, so newStore must be safe for
// concurrent use. newStore registers the store's cleanup on the t it gets.
func Run(t *testing.T, newStore func(t *testing.T) storage.Storage) {
	tests := []struct {
		name string
		fn   func(t *testing.T, st storage.Storage)
	}{
		{"RoundTrip", testRoundTrip},
		{"Large", testLarge},
		{"BytesReader", testBytesReader},
		{"RangedGet", testRangedGet},
		{"Stat", testStat},
		{"Missing", testMissing},
		{"CreateOnly", testCreateOnly},
		{"Overwrite", testOverwrite},
		{"ShortBody", testShortBody},
		{"FailingBody", testFailingBody},
		{"CanceledPut", testCanceledPut},
		{"CanceledContext", testCanceledContext},
		{"List", testList},
		{"ListMany", testListMany},
		{"ListStop", testListStop},
		{"ListAfterWrite", testListAfterWrite},
		{"Delete", testDelete},
		{"ConcurrentPuts", testConcurrentPuts},
		{"ConcurrentCreateOnly", testConcurrentCreateOnly},
		{"UnusualKeys", testUnusualKeys},
		{"InvalidKeys", testInvalidKeys},
		{"DeferSync", testDeferSync},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

// Data returns n reproducible pseudo-random bytes for seed.
func Data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, (n+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n]
}

// opaque hides every method of r but Read (io.Seeker, io.WriterTo,
// io.ReaderAt), as a body streamed from a pipe would.
type opaque struct{ r io.Reader }

func (o opaque) Read(p []byte) (int, error) { return o.r.Read(p) }

// Put stores data under key with its size known, failing t on error.
func Put(t testing.TB, st storage.Storage, key string, data []byte) {
	t.Helper()
	if err := st.Put(context.Background(), key, bytes.NewReader(data), int64(len(data)), storage.PutOptions{}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// Get returns the whole object under key, failing t on error.
func Get(t testing.TB, st storage.Storage, key string) []byte {
	t.Helper()
	return getRange(t, st, key, 0, -1)
}

func getRange(t testing.TB, st storage.Storage, key string, offset, length int64) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), key, offset, length)
	if err != nil {
		t.Fatalf("get %s [%d,%d): %v", key, offset, length, err)
	}
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s [%d,%d): %v", key, offset, length, err)
	}
	return b
}

// keys lists prefix and returns the sorted keys.
func keys(t testing.TB, st storage.Storage, prefix string) []string {
	t.Helper()
	var ks []string
	err := st.List(context.Background(), prefix, func(oi storage.ObjectInfo) error {
		ks = append(ks, oi.Key)
		return nil
	})
	if err != nil {
		t.Fatalf("list %q: %v", prefix, err)
	}
	slices.Sort(ks)
	return ks
}

func checkAbsent(t testing.TB, st storage.Storage, key string) {
	t.Helper()
	if _, err := st.Stat(context.Background(), key); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("stat %s: got %v, want ErrNotFound (no object left behind)", key, err)
	}
	if slices.Contains(keys(t, st, key), key) {
		t.Errorf("list after a failed put of %s: listed", key)
	}
}

func equal(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got %d bytes, want %d bytes (equal length: %v)", what, len(got), len(want), len(got) == len(want))
	}
}

func testRoundTrip(t *testing.T, st storage.Storage) {
	ctx := context.Background()
	for _, n := range []int{0, 1, 1000, 1<<20 + 3} {
		for _, known := range []bool{true, false} {
			key := fmt.Sprintf("rt/%d-%v", n, known)
			data := Data(uint64(n), n)
			size := int64(n)
			var r io.Reader = bytes.NewReader(data)
			if !known {
				size, r = -1, opaque{r}
			}
			if err := st.Put(ctx, key, r, size, storage.PutOptions{}); err != nil {
				t.Fatalf("put %s: %v", key, err)
			}
			equal(t, "get "+key, Get(t, st, key), data)
			oi, err := st.Stat(ctx, key)
			if err != nil {
				t.Fatalf("stat %s: %v", key, err)
			}
			if oi.Size != int64(n) || oi.Key != key {
				t.Errorf("stat %s: got %+v, want size %d", key, oi, n)
			}
		}
	}
}

// testBytesReader puts bodies made of several slices, as the archive puts
// a chunk's header and payload, create-only, of a size given exactly.
func testBytesReader(t *testing.T, st storage.Storage) {
	ctx := context.Background()
	data := Data(7, 3<<20+11)
	for i, cut := range [][]int{{0}, {2}, {2, 2}, {1000, 3 << 20}, {len(data)}} {
		var parts [][]byte
		prev := 0
		for _, c := range cut {
			parts = append(parts, data[prev:c])
			prev = c
		}
		parts = append(parts, data[prev:])
		key := fmt.Sprintf("parts/%d", i)
		r := storage.NewBytesReader(parts...)
		if err := st.Put(ctx, key, r, r.Size(), storage.PutOptions{IfNotExists: true, DeferSync: true}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		equal(t, "get "+key, Get(t, st, key), data)
	}
	if err := storage.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
}

// testLarge puts objects larger than one S3 part, known and unknown size, and
// create-only.
func testLarge(t *testing.T, st storage.Storage) {
	ctx := context.Background()
	data := Data(20, 20<<20+5)
	for _, known := range []bool{true, false} {
		key := fmt.Sprintf("large/%v", known)
		size := int64(len(data))
		var r io.Reader = bytes.NewReader(data)
		if !known {
			size, r = -1, opaque{r}
		}
		if err := st.Put(ctx, key, r, size, storage.PutOptions{IfNotExists: true}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		equal(t, "get "+key, Get(t, st, key), data)
		equal(t, "get tail of "+key, getRange(t, st, key, int64(len(data))-100, -1), data[len(data)-100:])
	}
}

func testRangedGet(t *testing.T, st storage.Storage) {
	data := Data(3, 1000)
	Put(t, st, "r", data)
	Put(t, st, "empty", nil)
	for _, tc := range []struct {
		off, n int64
		want   []byte
	}{
		{0, -1, data},
		{10, -1, data[10:]},
		{0, 10, data[:10]},
		{10, 20, data[10:30]},
		{999, -1, data[999:]},
		{990, 20, data[990:]},      // past the end: clamped
		{1000, -1, nil},            // at the end
		{1000, 10, nil},            // at the end, with length
		{2000, 10, nil},            // beyond the end
		{2000, -1, nil},            // beyond the end, to the end
		{5, 0, nil},                // nothing asked
		{0, 1000, data},            // exactly all
		{0, 1 << 40, data},         // more than all
		{500, 1 << 62, data[500:]}, // no overflow
	} {
		got := getRange(t, st, "r", tc.off, tc.n)
		equal(t, fmt.Sprintf("get r [%d,+%d)", tc.off, tc.n), got, tc.want)
	}
	for _, tc := range [][2]int64{{0, -1}, {0, 5}, {3, -1}, {0, 0}} {
		equal(t, fmt.Sprintf("get empty [%d,+%d)", tc[0], tc[1]), getRange(t, st, "empty", tc[0], tc[1]), nil)
	}
	if rc, err := st.Get(context.Background(), "r", -1, 5); err == nil {
		_ = rc.Close()
		t.Error("get with a negative offset: got no error")
	}
	if _, err := st.Get(context.Background(), "missing", 10, 5); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("ranged get of a missing key: got %v, want ErrNotFound", err)
	}
	if _, err := st.Get(context.Background(), "missing", 0, 0); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("empty-range get of a missing key: got %v, want ErrNotFound", err)
	}
}

func testStat(t *testing.T, st storage.Storage) {
	before := time.Now()
	Put(t, st, "dir/s", Data(4, 4321))
	oi, err := st.Stat(context.Background(), "dir/s")
	if err != nil {
		t.Fatal(err)
	}
	if oi.Key != "dir/s" || oi.Size != 4321 {
		t.Errorf("stat: got %+v, want key dir/s size 4321", oi)
	}
	// Object stores keep whole seconds; allow for that and some clock skew.
	if oi.ModTime.Before(before.Add(-time.Minute)) || oi.ModTime.After(time.Now().Add(time.Minute)) {
		t.Errorf("stat: modification time %v not around %v", oi.ModTime, before)
	}
	// A "directory" is not an object.
	if _, err := st.Stat(context.Background(), "dir"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("stat of a key prefix: got %v, want ErrNotFound", err)
	}
}

func testMissing(t *testing.T, st storage.Storage) {
	ctx := context.Background()
	Put(t, st, "present/x", []byte("x"))
	for _, key := range []string{"nope", "present/nope", "deep/er/nope", "present/x/below"} {
		rc, err := st.Get(ctx, key, 0, -1)
		if err == nil {
			_ = rc.Close()
		}
		if !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("get %s: got %v, want ErrNotFound from Get itself", key, err)
		} else if !bytes.Contains([]byte(err.Error()), []byte(key)) {
			t.Errorf("get %s: error %q does not name the key", key, err)
		}
		if _, err := st.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("stat %s: got %v, want ErrNotFound", key, err)
		}
	}
	rc, err := st.Get(ctx, "present", 0, -1)
	if err == nil {
		_ = rc.Close()
	}
	if !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("get of a key prefix: got %v, want ErrNotFound", err)
	}
}

func testCreateOnly(t *testing.T, st storage.Storage) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		n     int
		known bool
	}{{"small", 100, true}, {"small-unknown", 100, false}, {"empty", 0, true}, {"large-unknown", 17 << 20, false}} {
		key := "c/" + tc.name
		first, second := Data(1, tc.n), Data(2, tc.n+1)
		put := func(data []byte) error {
			if tc.known {
				return st.Put(ctx, key, bytes.NewReader(data), int64(len(data)), storage.PutOptions{IfNotExists: true})
			}
			return st.Put(ctx, key, opaque{bytes.NewReader(data)}, -1, storage.PutOptions{IfNotExists: true})
		}
		if err := put(first); err != nil {
			t.Fatalf("first create-only put %s: %v", key, err)
		}
		err := put(second)
		if !errors.Is(err, storage.ErrExists) {
			t.Fatalf("second create-only put %s: got %v, want ErrExists", key, err)
		}
		equal(t, "after a refused put, "+key, Get(t, st, key), first)
	}
}

func testOverwrite(t *testing.T, st storage.Storage) {
	Put(t, st, "o", Data(1, 2000))
	second := Data(2, 1000)
	Put(t, st, "o", second)
	equal(t, "overwritten", Get(t, st, "o"), second)
	if ks := keys(t, st, ""); !slices.Equal(ks, []string{"o"}) {
		t.Errorf("list after overwrite: got %q", ks)
	}
}

func testShortBody(t *testing.T, st storage.Storage) {
	err := st.Put(context.Background(), "short", opaque{bytes.NewReader(Data(1, 50))}, 100, storage.PutOptions{})
	if err == nil {
		t.Fatal("put of 50 bytes declared as 100: got no error")
	}
	if storage.IsTransient(err) {
		t.Errorf("put of a short body: %v is transient; a retry would fail the same way", err)
	}
	checkAbsent(t, st, "short")
}

var errBody = errors.New("body failed")

// failingReader returns n bytes of data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func testFailingBody(t *testing.T, st storage.Storage) {
	for _, tc := range []struct {
		name string
		n    int // bytes before the failure
		size int64
	}{{"known", 1000, 5000}, {"unknown", 1000, -1}, {"unknown-large", 17 << 20, -1}, {"known-large", 17 << 20, 20 << 20}} {
		key := "fail-" + tc.name
		r := &failingReader{data: Data(1, tc.n), err: errBody}
		err := st.Put(context.Background(), key, r, tc.size, storage.PutOptions{})
		if !errors.Is(err, errBody) {
			t.Errorf("put %s with a failing body: got %v, want the body's error", key, err)
		}
		if storage.IsTransient(err) {
			t.Errorf("put %s with a failing body: %v is transient; it is the caller's failure", key, err)
		}
	}
	checkAbsent(t, st, "fail-known")
}

// blockingReader returns n bytes of data, then blocks until ctx is done and
// ends with err (io.EOF: a clean end, as a pipe closed by a canceled
// producer gives).
type blockingReader struct {
	ctx     context.Context
	data    []byte
	err     error
	blocked chan struct{}
	once    sync.Once
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if len(r.data) > 0 {
		n := copy(p, r.data)
		r.data = r.data[n:]
		return n, nil
	}
	r.once.Do(func() { close(r.blocked) })
	<-r.ctx.Done()
	return 0, r.err
}

func testCanceledPut(t *testing.T, st storage.Storage) {
	for _, tc := range []struct {
		name     string
		n        int
		size     int64
		endErr   error
		ifNotExt bool
	}{
		{"known-eof", 1000, 5000, io.EOF, false},
		{"unknown-eof", 1000, -1, io.EOF, false},
		{"known-error", 1000, 5000, errBody, false},
		{"create-only", 1000, 5000, io.EOF, true},
		{"unknown-large", 17 << 20, -1, io.EOF, false},
		{"known-large", 17 << 20, 20 << 20, io.EOF, true},
		// The body ends cleanly, at the declared size, as the caller cancels:
		// a put that commits without checking ctx gets this wrong.
		{"complete-body", 1000, 1000, io.EOF, false},
		{"complete-body-unknown", 1000, -1, io.EOF, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "cancel-" + tc.name
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := &blockingReader{ctx: ctx, data: Data(1, tc.n), err: tc.endErr, blocked: make(chan struct{})}
			go func() {
				<-r.blocked
				cancel()
			}()
			var body io.Reader = r
			complete := tc.name == "complete-body" || tc.name == "complete-body-unknown"
			if complete {
				body = &cancelAtEnd{r: bytes.NewReader(Data(1, tc.n)), cancel: cancel}
			}
			err := st.Put(ctx, key, body, tc.size, storage.PutOptions{IfNotExists: tc.ifNotExt})
			if storage.IsTransient(err) {
				t.Errorf("canceled put: %v is transient", err)
			}
			if complete {
				// A remote store may commit a complete body before it sees
				// the cancellation; it must never commit anything else.
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("canceled put: got %v, want nil or context.Canceled", err)
				}
				rc, gerr := st.Get(context.Background(), key, 0, -1)
				switch {
				case errors.Is(gerr, storage.ErrNotFound):
				case gerr != nil:
					t.Fatal(gerr)
				default:
					got, rerr := io.ReadAll(rc)
					_ = rc.Close()
					if rerr != nil || !bytes.Equal(got, Data(1, tc.n)) {
						t.Errorf("canceled put left %d bytes (%v), want the whole object or none", len(got), rerr)
					}
				}
				if err != nil && gerr == nil {
					t.Logf("canceled put of a complete body committed it anyway (allowed for remote stores)")
				}
				return
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("canceled put: got %v, want context.Canceled", err)
			}
			checkAbsent(t, st, key)
		})
	}
}

// cancelAtEnd cancels the put's context as it hands out its last byte.
type cancelAtEnd struct {
	r      *bytes.Reader
	cancel context.CancelFunc
}

func (c *cancelAtEnd) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.r.Len() == 0 {
		c.cancel()
	}
	return n, err
}

func testCanceledContext(t *testing.T, st storage.Storage) {
	Put(t, st, "k", []byte("v"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := st.Get(ctx, "k", 0, -1); !errors.Is(err, context.Canceled) {
		t.Errorf("get with a canceled context: got %v", err)
	}
	if _, err := st.Stat(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("stat with a canceled context: got %v", err)
	}
	if err := st.List(ctx, "", func(storage.ObjectInfo) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("list with a canceled context: got %v", err)
	}
	if err := st.Put(ctx, "k2", bytes.NewReader([]byte("v")), 1, storage.PutOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("put with a canceled context: got %v", err)
	}
	if err := st.Delete(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("delete with a canceled context: got %v", err)
	}
	if ks := keys(t, st, ""); !slices.Equal(ks, []string{"k"}) {
		t.Errorf("after canceled calls: got %q, want [k]", ks)
	}
}

func testList(t *testing.T, st storage.Storage) {
	all := []string{
		"a", "ab", "abc/d", "abc/e/f", "b/c",
		"chunks/ab/1", "chunks/ab/2", "chunks/ac/3", "chunks/b0/4", "chunks/abx",
	}
	for i, k := range all {
		Put(t, st, k, Data(uint64(i), i+1))
	}
	slices.Sort(all)
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", all},
		{"a", []string{"a", "ab", "abc/d", "abc/e/f"}},
		{"ab", []string{"ab", "abc/d", "abc/e/f"}},
		{"abc", []string{"abc/d", "abc/e/f"}},
		{"abc/", []string{"abc/d", "abc/e/f"}},
		{"abc/e/", []string{"abc/e/f"}},
		{"chunks/", []string{"chunks/ab/1", "chunks/ab/2", "chunks/abx", "chunks/ac/3", "chunks/b0/4"}},
		{"chunks/a", []string{"chunks/ab/1", "chunks/ab/2", "chunks/abx", "chunks/ac/3"}},
		{"chunks/ab", []string{"chunks/ab/1", "chunks/ab/2", "chunks/abx"}},
		{"chunks/ab/", []string{"chunks/ab/1", "chunks/ab/2"}},
		{"chunks/ab/1", []string{"chunks/ab/1"}},
		{"chunks/ab/1/", nil},
		{"chunks/zz", nil},
		{"zzz", nil},
		{"zzz/", nil},
		{"b/c/", nil},
	} {
		if got := keys(t, st, tc.prefix); !slices.Equal(got, tc.want) {
			t.Errorf("list %q: got %q, want %q", tc.prefix, got, tc.want)
		}
	}
	sizes := map[string]int64{}
	if err := st.List(context.Background(), "", func(oi storage.ObjectInfo) error {
		sizes[oi.Key] = oi.Size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i, k := range []string{"a", "ab", "abc/d"} {
		if sizes[k] != int64(i+1) {
			t.Errorf("list: size of %s is %d, want %d", k, sizes[k], i+1)
		}
	}
}

func testListMany(t *testing.T, st storage.Storage) {
	const n = 1100 // more than one S3 list page
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("many/%02x/%04d", i%7, i))
	}
	parallel(t, 16, len(want), func(i int) error {
		return st.Put(context.Background(), want[i], bytes.NewReader([]byte{byte(i)}), 1, storage.PutOptions{})
	})
	slices.Sort(want)
	if got := keys(t, st, "many/"); !slices.Equal(got, want) {
		t.Errorf("list many: got %d keys, want %d", len(got), len(want))
	}
}

func testListStop(t *testing.T, st storage.Storage) {
	for i := range 5 {
		Put(t, st, fmt.Sprintf("s/%d", i), []byte{1})
	}
	errStop := errors.New("stop")
	calls := 0
	err := st.List(context.Background(), "s/", func(storage.ObjectInfo) error {
		calls++
		return errStop
	})
	if !errors.Is(err, errStop) || calls != 1 {
		t.Errorf("list stopped by fn: got %v after %d calls, want fn's error after 1", err, calls)
	}
}

func testListAfterWrite(t *testing.T, st storage.Storage) {
	for i := range 20 {
		key := fmt.Sprintf("law/%d", i)
		Put(t, st, key, []byte("x"))
		if ks := keys(t, st, "law/"); !slices.Contains(ks, key) || len(ks) != 1 {
			t.Fatalf("list right after put %s: got %q", key, ks)
		}
		if err := st.Delete(context.Background(), key); err != nil {
			t.Fatal(err)
		}
		if ks := keys(t, st, "law/"); len(ks) != 0 {
			t.Fatalf("list right after delete %s: got %q", key, ks)
		}
	}
}

func testDelete(t *testing.T, st storage.Storage) {
	ctx := context.Background()
	Put(t, st, "d/x", []byte("x"))
	Put(t, st, "d/y", []byte("y"))
	if err := st.Delete(ctx, "d/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Stat(ctx, "d/x"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("stat after delete: got %v, want ErrNotFound", err)
	}
	for _, key := range []string{"d/x", "never", "no/such/dir/key", "d"} {
		if err := st.Delete(ctx, key); err != nil {
			t.Errorf("delete of missing %s: %v", key, err)
		}
	}
	if ks := keys(t, st, ""); !slices.Equal(ks, []string{"d/y"}) {
		t.Errorf("after deletes: got %q, want [d/y]", ks)
	}
	equal(t, "survivor", Get(t, st, "d/y"), []byte("y"))
}

// parallel runs fn(0..n-1) on workers goroutines, failing t on any error.
func parallel(t testing.TB, workers, n int, fn func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				errs[i] = fn(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func testConcurrentPuts(t *testing.T, st storage.Storage) {
	const workers, perWorker = 16, 8
	key := func(i int) string { return fmt.Sprintf("conc/%d/%d", i%workers, i) }
	parallel(t, workers, workers*perWorker, func(i int) error {
		data := Data(uint64(i), 1000+i)
		return st.Put(context.Background(), key(i), bytes.NewReader(data), int64(len(data)), storage.PutOptions{})
	})
	for i := range workers * perWorker {
		equal(t, key(i), Get(t, st, key(i)), Data(uint64(i), 1000+i))
	}
}

func testConcurrentCreateOnly(t *testing.T, st storage.Storage) {
	const racers = 16
	for round := range 5 {
		key := fmt.Sprintf("race/%d", round)
		start := make(chan struct{})
		errs := make([]error, racers)
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() {
				data := Data(uint64(i), 5000)
				<-start
				errs[i] = st.Put(context.Background(), key, bytes.NewReader(data), int64(len(data)), storage.PutOptions{IfNotExists: true})
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("%s: racers %d and %d both won a create-only put", key, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, storage.ErrExists):
				t.Errorf("%s: racer %d: got %v, want nil or ErrExists", key, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%s: no racer won", key)
		}
		equal(t, key+" holds the winner's data", Get(t, st, key), Data(uint64(winner), 5000))
	}
}

// UnusualKeys are valid keys every backend must store as they are.
var UnusualKeys = []string{
	"with space/a b",
	"plus+sign=eq&amp",
	"percent%20not-escaped",
	"unicode/ü日本語",
	"quote'double\"",
	"colon:semi;comma,",
	"question?hash#bang!",
	"tilde~at@dollar$",
	"paren(bracket)[brace]{",
	"dots.../x..y/.hidden",
	"star*caret^pipe|",
	"back\\slash",
	"very/deeply/nested/key/with/many/levels/x",
	"long-" + string(bytes.Repeat([]byte("n"), 200)),
}

// InvalidKeys are refused by every backend.
var InvalidKeys = []string{
	"", "/abs", "a//b", "trailing/", "../up", "a/../b", "a/./b", ".", "..", "a/..", "a/.tmp-x",
}

func testUnusualKeys(t *testing.T, st storage.Storage) {
	ctx := context.Background()
	for i, key := range UnusualKeys {
		data := Data(uint64(i), 10+i)
		Put(t, st, key, data)
		equal(t, "get "+key, Get(t, st, key), data)
		if oi, err := st.Stat(ctx, key); err != nil || oi.Key != key {
			t.Errorf("stat %q: got %+v, %v", key, oi, err)
		}
		if ks := keys(t, st, key); !slices.Equal(ks, []string{key}) {
			t.Errorf("list %q: got %q", key, ks)
		}
	}
	want := slices.Sorted(slices.Values(UnusualKeys))
	if ks := keys(t, st, ""); !slices.Equal(ks, want) {
		t.Errorf("list: got %q, want %q", ks, want)
	}
	for _, key := range UnusualKeys {
		if err := st.Delete(ctx, key); err != nil {
			t.Errorf("delete %q: %v", key, err)
		}
	}
	if ks := keys(t, st, ""); len(ks) != 0 {
		t.Errorf("after deleting all: got %q", ks)
	}
}

func testInvalidKeys(t *testing.T, st storage.Storage) {
	ctx := context.Background()
	for _, key := range InvalidKeys {
		if err := st.Put(ctx, key, bytes.NewReader([]byte("x")), 1, storage.PutOptions{}); err == nil {
			t.Errorf("put %q: got no error", key)
		} else if storage.IsTransient(err) {
			t.Errorf("put %q: %v is transient", key, err)
		}
		if rc, err := st.Get(ctx, key, 0, -1); err == nil {
			_ = rc.Close()
			t.Errorf("get %q: got no error", key)
		}
		if _, err := st.Stat(ctx, key); err == nil {
			t.Errorf("stat %q: got no error", key)
		}
		if err := st.Delete(ctx, key); err == nil {
			t.Errorf("delete %q: got no error", key)
		}
	}
	for _, prefix := range []string{"/abs", "../x", "a//b", "a/../"} {
		if err := st.List(ctx, prefix, func(storage.ObjectInfo) error { return nil }); err == nil {
			t.Errorf("list %q: got no error", prefix)
		}
	}
	if ks := keys(t, st, ""); len(ks) != 0 {
		t.Errorf("invalid keys stored something: %q", ks)
	}
}

// testDeferSync puts with DeferSync: each object is visible and complete at
// once, create-only still holds, and storage.Sync (a no-op for a store that
// is not a Syncer) returns nil and leaves every object as it was, also when
// a deferred object was deleted or overwritten before it, and when called
// again with nothing pending. Concurrent deferred puts and Syncs must not
// race.
func testDeferSync(t *testing.T, st storage.Storage) {
	ctx := context.Background()
	deferred := storage.PutOptions{DeferSync: true}
	createOnly := storage.PutOptions{DeferSync: true, IfNotExists: true}
	want := map[string][]byte{}
	for i := range 20 {
		key := fmt.Sprintf("defer/%02x/c%d", i%4, i)
		data := Data(uint64(100+i), 1000+i)
		if err := st.Put(ctx, key, bytes.NewReader(data), int64(len(data)), createOnly); err != nil {
			t.Fatalf("deferred put %s: %v", key, err)
		}
		equal(t, "get "+key+" before sync", Get(t, st, key), data)
		want[key] = data
	}
	if err := st.Put(ctx, "defer/00/c0", bytes.NewReader([]byte("other")), 5, createOnly); !errors.Is(err, storage.ErrExists) {
		t.Errorf("deferred create-only put over an existing key: got %v, want ErrExists", err)
	}
	if err := st.Put(ctx, "defer/01/c1", opaque{bytes.NewReader([]byte("new"))}, -1, deferred); err != nil {
		t.Fatalf("deferred overwrite: %v", err)
	}
	want["defer/01/c1"] = []byte("new")
	if err := st.Delete(ctx, "defer/02/c2"); err != nil {
		t.Fatal(err)
	}
	delete(want, "defer/02/c2")
	if got := keys(t, st, "defer/"); len(got) != len(want) {
		t.Errorf("listed %d deferred objects before sync, want %d", len(got), len(want))
	}

	if err := storage.Sync(ctx, st); err != nil {
		t.Fatalf("sync: %v", err)
	}
	for key, data := range want {
		equal(t, "get "+key+" after sync", Get(t, st, key), data)
	}
	if err := storage.Sync(ctx, st); err != nil {
		t.Fatalf("second sync, nothing pending: %v", err)
	}
	checkAbsent(t, st, "defer/02/c2")

	parallel(t, 4, 40, func(i int) error {
		if i%10 == 9 {
			return storage.Sync(ctx, st)
		}
		data := Data(uint64(200+i), 100)
		return st.Put(ctx, fmt.Sprintf("defer/p/%d", i), bytes.NewReader(data), int64(len(data)), createOnly)
	})
	if err := storage.Sync(ctx, st); err != nil {
		t.Fatalf("sync after concurrent puts: %v", err)
	}
	if got := keys(t, st, "defer/p/"); len(got) != 36 {
		t.Errorf("listed %d objects after concurrent deferred puts, want 36", len(got))
	}
}

package file

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/storagetest"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

func newStore(t *testing.T) storage.Storage {
	st, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, newStore)
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "repo", "sub")

	_, err := Open(missing, Options{})
	if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "repository directory "+missing+" does not exist: create it or check the path") {
		t.Errorf("open of a missing root: got %v", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("open without Create made %s", missing)
	}

	st, err := Open(missing, Options{Create: true})
	if err != nil {
		t.Fatalf("open with Create: %v", err)
	}
	if st.String() != "file://"+missing {
		t.Errorf("String: got %q", st.String())
	}
	if _, err := Open(missing, Options{}); err != nil {
		t.Errorf("reopen: %v", err)
	}

	if _, err := Open("relative/dir", Options{Create: true}); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("open of a relative path: got %v", err)
	}
	f := filepath.Join(dir, "afile")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(f, Options{}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("open of a file: got %v", err)
	}
}

func TestLayout(t *testing.T) {
	root := t.TempDir()
	st, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	storagetest.Put(t, st, "chunks/ab/cdef", []byte("data"))
	b, err := os.ReadFile(filepath.Join(root, "chunks", "ab", "cdef"))
	if err != nil || string(b) != "data" {
		t.Fatalf("object file: %q, %v", b, err)
	}
	// Nothing but the object: no temporary file left over.
	entries, err := os.ReadDir(filepath.Join(root, "chunks", "ab"))
	if err != nil || len(entries) != 1 {
		t.Errorf("directory holds %v (%v), want just the object", entries, err)
	}
}

// TestTempFilesInvisible: a put in flight, or one whose process died, is
// never listed and never read as an object.
func TestTempFilesInvisible(t *testing.T) {
	root := t.TempDir()
	st, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	storagetest.Put(t, st, "chunks/ab/x", []byte("x"))
	old := filepath.Join(root, "chunks", "ab", tempPrefix+"123")
	fresh := filepath.Join(root, tempPrefix+"456")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := st.List(context.Background(), "", func(oi storage.ObjectInfo) error {
		got = append(got, oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "chunks/ab/x" {
		t.Errorf("list: got %q, want only the object", got)
	}

	n, err := st.RemoveStaleTemp(context.Background(), time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("RemoveStaleTemp: removed %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temp file still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temp file (a put in flight) removed: %v", err)
	}
}

// TestFailedPutLeavesNothing checks the directory itself, not just the API.
func TestFailedPutLeavesNothing(t *testing.T) {
	root := t.TempDir()
	st, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	errBody := errors.New("boom")
	err = st.Put(context.Background(), "d/k", io.MultiReader(bytes.NewReader(make([]byte, 100_000)), errReader{errBody}), -1, storage.PutOptions{})
	if !errors.Is(err, errBody) {
		t.Fatalf("put: got %v", err)
	}

	// Canceled exactly when the body is complete: the file store checks
	// the context before it commits, so nothing may appear.
	ctx, cancel := context.WithCancel(context.Background())
	data := []byte("complete")
	err = st.Put(ctx, "d/c", &cancelAfter{r: bytes.NewReader(data), cancel: cancel}, int64(len(data)), storage.PutOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled put: got %v", err)
	}

	var files []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Errorf("failed puts left %q", files)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

type cancelAfter struct {
	r      *bytes.Reader
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.r.Len() == 0 {
		c.cancel()
	}
	return n, err
}

func TestKeyConflicts(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	storagetest.Put(t, st, "a/b", []byte("x"))
	// "a" is a directory: no object, and a put there must fail cleanly.
	if err := st.Put(ctx, "a", bytes.NewReader([]byte("y")), 1, storage.PutOptions{}); err == nil {
		t.Error("put over a directory: got no error")
	}
	if err := st.Put(ctx, "a", bytes.NewReader([]byte("y")), 1, storage.PutOptions{IfNotExists: true}); err == nil {
		t.Error("create-only put over a directory: got no error")
	}
	if err := st.Delete(ctx, "a"); err != nil {
		t.Errorf("delete of a directory name: %v", err)
	}
	storagetest.Get(t, st, "a/b")
}

func TestPermission(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	root := t.TempDir()
	st, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(root, 0o700) })
	err = st.Put(context.Background(), "k", bytes.NewReader([]byte("x")), 1, storage.PutOptions{})
	if !errors.Is(err, storage.ErrPermission) {
		t.Errorf("put into a read-only directory: got %v, want ErrPermission", err)
	}
}

func TestTranslate(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		want  error
	}{
		{syscall.ENOSPC, storage.ErrNoSpace},
		{syscall.EDQUOT, storage.ErrNoSpace},
		{syscall.EACCES, storage.ErrPermission},
		{syscall.EPERM, storage.ErrPermission},
		{syscall.EROFS, storage.ErrPermission},
		{syscall.ENOENT, storage.ErrNotFound},
		{syscall.ENOTDIR, storage.ErrNotFound},
	} {
		raw := &fs.PathError{Op: "write", Path: "/repo/chunks/.tmp-1", Err: tc.errno}
		err := translate("put", "chunks/x", raw)
		if !errors.Is(err, tc.want) || !errors.Is(err, tc.errno) {
			t.Errorf("%v: got %v, want %v wrapping the errno", tc.errno, err, tc.want)
		}
		if !strings.Contains(err.Error(), "put chunks/x") {
			t.Errorf("%v: %q does not name the key", tc.errno, err)
		}
	}
	if err := translate("put", "k", syscall.EIO); errors.Is(err, storage.ErrUnavailable) || !errors.Is(err, syscall.EIO) {
		t.Errorf("EIO: got %v", err)
	}
}

// TestDeferSync checks what the conformance suite cannot see: a deferred put
// is left to Sync (and only a deferred one), Sync hands each over once, and
// a Sync that cannot reach the root fails.
func TestDeferSync(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	st, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pending := func() int {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.pendingFile)
	}
	put := func(key string, opts storage.PutOptions) {
		t.Helper()
		if err := st.Put(ctx, key, bytes.NewReader([]byte(key)), int64(len(key)), opts); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	put("chunks/ab/1", storage.PutOptions{DeferSync: true, IfNotExists: true})
	put("chunks/cd/2", storage.PutOptions{DeferSync: true})
	put("manifests/m", storage.PutOptions{IfNotExists: true})
	want := 2
	if !canDefer {
		want = 0
	}
	if n := pending(); n != want {
		t.Fatalf("%d puts pending a sync, want %d", n, want)
	}
	if err := st.Sync(ctx); err != nil {
		t.Fatalf("sync: %v", err)
	}
	if n := pending(); n != 0 {
		t.Fatalf("%d puts still pending after sync", n)
	}
	put("chunks/ab/3", storage.PutOptions{DeferSync: true, IfNotExists: true})
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(ctx); canDefer && !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("sync of a removed root: got %v, want ErrNotFound", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := st.Sync(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("sync with a canceled context: got %v", err)
	}
}

// TestSyncFailureSticks: once a Sync failed, every later Sync of the store
// fails too, since the failed one may have taken another writer's puts.
func TestSyncFailureSticks(t *testing.T) {
	if !canDefer {
		t.Skip("puts are synced one by one on this system")
	}
	ctx := context.Background()
	root := t.TempDir()
	st, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string) {
		t.Helper()
		if err := st.Put(ctx, key, bytes.NewReader([]byte(key)), int64(len(key)), storage.PutOptions{DeferSync: true}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	put("chunks/ab/1")
	// The deferred object can no longer be opened (a symlink loop): its
	// fsync fails.
	p := filepath.Join(root, "chunks", "ab", "1")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(p, p); err != nil {
		t.Fatal(err)
	}
	if err := st.Sync(ctx); err == nil || !strings.Contains(err.Error(), "chunks/ab/1") {
		t.Fatalf("sync over an unreadable deferred object: %v", err)
	}
	put("chunks/cd/2")
	if err := st.Sync(ctx); err == nil || !strings.Contains(err.Error(), "an earlier sync") {
		t.Fatalf("sync after a failed one: %v, want it to fail too", err)
	}
	// A store opened anew starts trusting again.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	st2, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st2.Sync(ctx); err != nil {
		t.Fatalf("sync of a fresh store: %v", err)
	}
}

// directObject is size bytes in three unaligned parts, as the archive hands a
// chunk over (a short header, then the payload), with a pattern that shows
// any byte out of place.
func directObject(size int) *storage.BytesReader {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	return storage.NewBytesReader(b[:7], b[7:size/2+3], b[size/2+3:])
}

func readAll(t *testing.T, st storage.Storage, key string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), key, 0, -1)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

// TestDirectPut: large in-memory objects are written with O_DIRECT, in
// aligned blocks with the last one padded and cut back, and read back
// exactly; small ones go through the page cache.
func TestDirectPut(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	st, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{directMin, 3<<20 + 1234, 2*directBuf + 5, directBuf, 100_000}
	before := directPuts.Load()
	for i, size := range sizes {
		key := "chunks/d/" + strconv.Itoa(i)
		want := directObject(size)
		if err := st.Put(ctx, key, want, int64(size), storage.PutOptions{DeferSync: i%2 == 0, IfNotExists: true}); err != nil {
			t.Fatalf("put %d bytes: %v", size, err)
		}
		_, _ = want.Seek(0, io.SeekStart)
		wantBytes, _ := io.ReadAll(want)
		if got := readAll(t, st, key); !bytes.Equal(got, wantBytes) {
			t.Fatalf("%d bytes put: read back %d bytes that differ", size, len(got))
		}
		fi, err := os.Stat(filepath.Join(root, "chunks", "d", strconv.Itoa(i)))
		if err != nil || fi.Size() != int64(size) {
			t.Fatalf("%d bytes put: file %v, %v", size, fi, err)
		}
	}
	if err := st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got := directPuts.Load() - before
	if st.noDirect.Load() {
		if testenv.CI() {
			t.Fatalf("the filesystem of %s refused O_DIRECT; CI runs where it does not", root)
		}
		t.Skipf("the filesystem of %s has no O_DIRECT: %d puts went through the page cache", root, len(sizes))
	}
	if got != int64(len(sizes)-1) {
		t.Fatalf("%d puts written with O_DIRECT, want %d (all but the small one)", got, len(sizes)-1)
	}
}

// TestDirectFallback: a direct write that fails part way leaves nothing of
// itself: the put starts over through the page cache and stores the object
// exactly, and a store whose filesystem refused O_DIRECT stops trying it.
func TestDirectFallback(t *testing.T) {
	ctx := context.Background()
	st, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	writeDirectFn = func(f *os.File, r io.Reader, size int64) error {
		calls++
		// Three blocks really written with O_DIRECT, then the refusal.
		if err := writeDirect(f, io.LimitReader(r, 3*directAlign), 3*directAlign); err != nil {
			return err
		}
		return errNoDirect
	}
	t.Cleanup(func() { writeDirectFn = writeDirect })
	before := directPuts.Load()
	for i := range 2 {
		key := "chunks/f/" + strconv.Itoa(i)
		size := 2<<20 + 77
		obj := directObject(size)
		// The reader is handed over part read: the put must store only
		// what was left, as the buffered path does.
		_, _ = obj.Seek(5, io.SeekStart)
		if err := st.Put(ctx, key, obj, int64(size-5), storage.PutOptions{}); err != nil {
			t.Fatalf("put after a refused direct write: %v", err)
		}
		_, _ = obj.Seek(5, io.SeekStart)
		want, _ := io.ReadAll(obj)
		if got := readAll(t, st, key); !bytes.Equal(got, want) {
			t.Fatalf("object stored after the fallback: %d bytes, want %d equal ones", len(got), len(want))
		}
	}
	if calls != 1 || !st.noDirect.Load() || directPuts.Load() != before {
		t.Fatalf("direct attempts %d, noDirect %v, direct puts %d: want one attempt, then none", calls, st.noDirect.Load(), directPuts.Load()-before)
	}
}

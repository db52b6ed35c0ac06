package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// tempPrefix starts the name of every file still being written. List skips
// such files and keys may not use the prefix, so a half-written file is never
// mistaken for an object.
const tempPrefix = storage.ReservedPrefix

// dirMode is used for every directory the store creates. Files get 0600 from
// os.CreateTemp: a repository holds database contents.
const dirMode = 0o700

// Options tunes Open.
type Options struct {
	// Create makes Open create the root directory (and its parents) when it
	// is missing. Without it a missing root is an error, so a mistyped path
	// never silently starts a new, empty repository.
	Create bool
}

// Store is a storage.Storage over a local directory. Keys are paths relative
// to the root; a put becomes visible under its key only once complete, and
// returns once its data and directory entry are on disk, unless it was made
// with DeferSync (see Sync).
type Store struct {
	root string

	mu          sync.Mutex
	pendingFile map[string]struct{} // deferred puts not yet synced
	pendingDir  map[string]struct{} // their directories
	// syncErr is the first failed Sync's error, returned by every later
	// Sync: one Sync takes every pending put, including those of a
	// concurrent writer, so the writer whose chunk was lost may never see
	// the error itself. After a failed fsync nothing on this store is
	// trusted to be durable again (PostgreSQL's lesson); open it anew.
	syncErr error
	// noDirect is set once the filesystem refused O_DIRECT.
	noDirect atomic.Bool
}

// directPuts counts puts written with O_DIRECT, for tests.
var directPuts atomic.Int64

// writeDirectFn is writeDirect; tests replace it to fail part way.
var writeDirectFn = writeDirect

var (
	_ storage.Storage = (*Store)(nil)
	_ storage.Syncer  = (*Store)(nil)
)

// Open returns the store rooted at the absolute directory root.
func Open(root string, opts Options) (*Store, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("repository directory %q is not an absolute path", root)
	}
	root = filepath.Clean(root)
	fi, err := os.Stat(root)
	switch {
	case err == nil && !fi.IsDir():
		return nil, fmt.Errorf("repository directory %s is not a directory", root)
	case err == nil:
	case errors.Is(err, fs.ErrNotExist) && opts.Create:
		if err := os.MkdirAll(root, dirMode); err != nil {
			return nil, translate("create repository directory", root, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("repository directory %s does not exist: create it or check the path: %w", root, storage.ErrNotFound)
	default:
		return nil, translate("open repository directory", root, err)
	}
	return &Store{root: root}, nil
}

// String names the store by its URI.
func (s *Store) String() string { return "file://" + s.root }

// Local implements storage.Localer.
func (s *Store) Local() bool { return true }

// Close releases nothing: the store holds no open files between calls.
func (s *Store) Close() error { return nil }

// Put writes to a temporary file next to the final one, syncs it, and only
// then links (create-only) or renames it into place, so a crash or a failed
// put never leaves a partial object under key. With DeferSync (on Linux) it
// skips both fsyncs, of the file and of its directory, and leaves them to
// Sync, only starting the file's writeback so that Sync has less left to
// write: the object is complete when it appears, but may vanish in a crash
// until Sync returns nil. A storage.BytesReader of at least 1 MiB is written
// with O_DIRECT where the filesystem allows it, bypassing the page cache.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	dir := filepath.Dir(p)
	if err := s.mkdirs(dir, key); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return translate("put", key, err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			_ = f.Close() // already failing; the write error is the one to report
		}
		if tmp != "" {
			// Best effort: a leftover is invisible to List and removed by
			// RemoveStaleTemp, and must not turn a committed put into an error.
			_ = os.Remove(tmp)
		}
	}()

	src := ctxReader{ctx: ctx, r: r}
	var n int64
	br, inMemory := r.(*storage.BytesReader)
	inMemory = inMemory && size >= 0 && int64(br.Len()) == size
	direct := false
	if inMemory && size >= directMin && !s.noDirect.Load() {
		if direct, err = s.putDirect(f, br, size); err != nil {
			return translate("put", key, err)
		}
	}
	if direct {
		n = size
	} else if inMemory {
		// Bytes in memory: written as they are, no staging buffer.
		n, err = br.WriteTo(f)
	} else if size >= 0 {
		n, err = io.CopyN(f, src, size)
	} else {
		n, err = io.Copy(f, src)
	}
	if ctxErr := ctx.Err(); err != nil && ctxErr != nil {
		// Whatever the body said, the caller gave up first.
		return fmt.Errorf("put %s: %w", key, ctxErr)
	}
	if size >= 0 && errors.Is(err, io.EOF) {
		return fmt.Errorf("put %s: body ended after %d of %d bytes: %w", key, n, size, io.ErrUnexpectedEOF)
	}
	if err != nil {
		return translate("put", key, err)
	}
	deferSync := opts.DeferSync && canDefer
	if deferSync {
		startWriteback(f)
	} else if err := f.Sync(); err != nil {
		return translate("put", key, err)
	}
	closeErr := f.Close()
	f = nil
	if closeErr != nil {
		return translate("put", key, closeErr)
	}
	// The reader may have returned EOF only because the caller gave up; a
	// canceled put must not commit.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}

	if opts.IfNotExists {
		// link(2) fails with EEXIST if key exists: an atomic create-only
		// commit, which rename(2) (it replaces) cannot give.
		if err := os.Link(tmp, p); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("put %s: %w", key, storage.ErrExists)
			}
			return translate("put", key, err)
		}
	} else {
		if err := os.Rename(tmp, p); err != nil {
			return translate("put", key, err)
		}
		tmp = ""
	}
	if deferSync {
		s.mu.Lock()
		if s.pendingFile == nil {
			s.pendingFile, s.pendingDir = map[string]struct{}{}, map[string]struct{}{}
		}
		s.pendingFile[p] = struct{}{}
		s.pendingDir[dir] = struct{}{}
		s.mu.Unlock()
		return nil
	}
	// The new directory entry must be durable before the put reports done.
	return syncDir(dir, key)
}

// putDirect writes br to the new, empty temporary file f with O_DIRECT (see
// direct_linux.go) and reports whether it did. When it did not, f is empty
// again and br rewound, for a write through the page cache that either
// succeeds (the filesystem refused direct I/O, which this store then stops
// trying) or fails with the error as the filesystem means it: a short direct
// write on a full disk would say little. The error is for when neither can
// be set up again.
func (s *Store) putDirect(f *os.File, br *storage.BytesReader, size int64) (bool, error) {
	pos, err := br.Seek(0, io.SeekCurrent)
	if err != nil {
		return false, err
	}
	err = writeDirectFn(f, br, size)
	if err == nil {
		directPuts.Add(1)
		return true, nil
	}
	if errors.Is(err, errNoDirect) {
		s.noDirect.Store(true)
	}
	if _, err := br.Seek(pos, io.SeekStart); err != nil {
		return false, err
	}
	return false, endDirect(f)
}

// syncParallel bounds the fsyncs Sync runs at a time.
const syncParallel = 8

// Sync makes every object under the root durable, deferred puts first among
// them. It runs syncfs(2) on the root's filesystem, then fsyncs each file put
// with DeferSync since the last Sync and each of their directories.
//
// syncfs is what makes the store's promise hold: it flushes every dirty page
// and commits the journal, so it also covers deferred objects this Store did
// not write, such as chunks left by a backup that died before its Sync and
// reused by the next one, or the object a create-only put found already
// there. One syncfs costs one journal commit where per-file fsyncs would
// each wait for their own. The fsyncs after it write almost nothing; they
// are there to report a writeback error against the file it hit on every
// kernel (syncfs reports errors only since Linux 5.8, and for the whole
// filesystem) and to reach filesystems whose syncfs does not (FUSE).
//
// A file whose fsync fails is removed, so that it is not served as an object
// whose contents were lost, and Sync returns the error. A deferred object
// deleted before Sync is skipped. The cost is a flush of the whole
// filesystem, other programs' writes included, once per call.
func (s *Store) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sync %s: %w", s, err)
	}
	s.mu.Lock()
	files, dirs, failed := s.pendingFile, s.pendingDir, s.syncErr
	s.pendingFile, s.pendingDir = nil, nil
	s.mu.Unlock()
	if failed != nil {
		return fmt.Errorf("an earlier sync of %s failed, so deferred puts may be lost: %w", s, failed)
	}
	if !canDefer {
		return nil // every put was synced on its own
	}
	err := s.sync(files, dirs)
	if err != nil {
		s.mu.Lock()
		if s.syncErr == nil {
			s.syncErr = err
		}
		s.mu.Unlock()
	}
	return err
}

// sync is Sync's work on the puts it took.
func (s *Store) sync(files, dirs map[string]struct{}) error {

	root, err := os.Open(s.root)
	if err != nil {
		return translate("sync", s.root, err)
	}
	err = syncFS(root)
	if cerr := root.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return translate("sync", s.root, err)
	}

	var g errgroup.Group
	g.SetLimit(syncParallel)
	for p := range files {
		g.Go(func() error { return s.syncFile(p) })
	}
	ferr := g.Wait()
	// Directories after files: a new entry must not outlive its data.
	for d := range dirs {
		if err := syncDir(d, s.key(d)); err != nil && !errors.Is(err, storage.ErrNotFound) {
			ferr = errors.Join(ferr, err)
		}
	}
	return ferr
}

// syncFile fsyncs one deferred object, removing it if that fails.
func (s *Store) syncFile(p string) error {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // deleted since: nothing left to make durable
	}
	if err != nil {
		return translate("sync", s.key(p), err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(p) // best effort; the error below fails the caller anyway
		return translate("sync", s.key(p), err)
	}
	return nil
}

// key turns a path under the root back into its key, for messages.
func (s *Store) key(p string) string {
	rel, err := filepath.Rel(s.root, p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(rel)
}

// Get opens key and returns a reader over [offset, offset+length), clamped to
// the file's end: bytes past the end are simply not returned.
func (s *Store) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("get %s: negative offset %d", key, offset)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, translate("get", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, translate("get", key, err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("get %s: %w", key, storage.ErrNotFound)
	}
	start := min(offset, fi.Size())
	n := fi.Size() - start
	if length >= 0 && length < n {
		n = length
	}
	return &sectionFile{SectionReader: io.NewSectionReader(f, start, n), f: f}, nil
}

// sectionFile reads a section of an open file and closes the file.
type sectionFile struct {
	*io.SectionReader
	f *os.File
}

func (r *sectionFile) Close() error { return r.f.Close() }

// Stat returns key's size and modification time.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return storage.ObjectInfo{}, translate("stat", key, err)
	}
	if !fi.Mode().IsRegular() {
		return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, storage.ErrNotFound)
	}
	return storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// errStop carries fn's error through filepath.WalkDir untouched (fn may
// return fs.SkipDir, which WalkDir would otherwise interpret).
type errStop struct{ err error }

func (e errStop) Error() string { return e.err.Error() }

// List walks only the directory that holds prefix's last segment (prefix may
// end mid-name, as in "chunks/ab"), skipping temporary files.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := storage.CheckPrefix(prefix); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %q: %w", prefix, err)
	}
	start := s.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = filepath.Join(s.root, filepath.FromSlash(prefix[:i]))
	}
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// A missing start directory means no objects; entries deleted
			// while we walk are simply gone.
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil
			}
			return translate("list", prefix, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == start {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			// Only entries directly under start can miss the prefix, and
			// then so does everything below them.
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return translate("list", prefix, err)
		}
		if err := fn(storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return errStop{err}
		}
		return nil
	})
	if stop, ok := errors.AsType[errStop](err); ok {
		return stop.err
	}
	if err != nil {
		return fmt.Errorf("list %q: %w", prefix, err)
	}
	return nil
}

// Delete removes key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil
	}
	if err != nil {
		return translate("delete", key, err)
	}
	if fi.IsDir() {
		return nil // a directory is not an object; never remove one
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return translate("delete", key, err)
	}
	return nil
}

// RemoveStaleTemp removes temporary files left by puts that died with their
// process (a crash, a kill), if older than olderThan so that puts still in
// flight are spared. It returns how many it removed. Garbage collection calls
// it.
func (s *Store) RemoveStaleTemp(ctx context.Context, olderThan time.Duration) (removed int, err error) {
	cutoff := time.Now().Add(-olderThan)
	err = filepath.WalkDir(s.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return translate("remove stale temporary files in", s.root, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return translate("remove stale temporary file", p, err)
		}
		if !fi.ModTime().Before(cutoff) {
			return nil
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return translate("remove stale temporary file", p, err)
		}
		removed++
		return nil
	})
	return removed, err
}

// path maps a key to its file, after checking the key cannot escape the root.
func (s *Store) path(key string) (string, error) {
	if err := storage.CheckKey(key); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// translate wraps a filesystem error with the operation, the key, and the
// storage sentinel it amounts to, keeping the original error in the chain.
func translate(op, key string, err error) error {
	var sentinel error
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		sentinel = storage.ErrNoSpace
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		sentinel = storage.ErrPermission
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		sentinel = storage.ErrNotFound
	default:
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	return fmt.Errorf("%s %s: %w: %w", op, key, sentinel, err)
}

// mkdirs creates dir and its missing parents under the root, syncing the
// parent of each new directory: a committed object must not vanish in a
// crash with the directory that holds it.
func (s *Store) mkdirs(dir, key string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	rel, err := filepath.Rel(s.root, dir)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	cur := s.root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		next := filepath.Join(cur, part)
		switch err := os.Mkdir(next, dirMode); {
		case err == nil:
			if err := syncDir(cur, key); err != nil {
				return err
			}
		case !errors.Is(err, fs.ErrExist):
			return translate("put", key, err)
		}
		cur = next
	}
	return nil
}

// syncDir makes a directory's entries durable.
func syncDir(dir, key string) error {
	d, err := os.Open(dir)
	if err != nil {
		return translate("put: sync directory of", key, err)
	}
	err = d.Sync()
	if closeErr := d.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return translate("put: sync directory of", key, err)
	}
	return nil
}

// ctxReader stops a copy at the next Read once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

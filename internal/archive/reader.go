package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/internal/storage"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// DamageError reports a chunk that is missing or does not decode to its id,
// after a second read ruled out a transient fault.
type DamageError struct {
	Backup string
	Stream string
	Chunk  ChunkID
	Reason error
}

func (e *DamageError) Error() string {
	return fmt.Sprintf("backup %s, stream %s: chunk %s is damaged: %v", e.Backup, e.Stream, e.Chunk, e.Reason)
}

func (e *DamageError) Unwrap() []error { return []error{ErrDamaged, e.Reason} }

// LoadManifest reads one backup's manifest.
func (r *Repo) LoadManifest(ctx context.Context, backupID string) (*v1.Manifest, error) {
	if err := ValidBackupID(backupID); err != nil {
		return nil, err
	}
	key := manifestKey(backupID)
	raw, err := r.readBlob(ctx, key, -1)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("backup %s: %w in %s; `tidemark backups --repo URI` lists what there is", backupID, ErrBackupMissing, r.store)
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s: reading manifest: %w", backupID, err)
	}
	if isTombstone(raw) {
		return nil, fmt.Errorf("backup %s: %w: it was abandoned (gc fenced its writer, which had stopped refreshing its lock) and never committed", backupID, ErrBackupMissing)
	}
	plain, err := r.codec.decodeNamed(nil, key, raw, maxBlobPlain)
	if err != nil {
		return nil, fmt.Errorf("backup %s: manifest is damaged: %w: %w", backupID, ErrDamaged, err)
	}
	m := &v1.Manifest{}
	if err := proto.Unmarshal(plain, m); err != nil {
		return nil, fmt.Errorf("backup %s: manifest does not decode: %w: %w", backupID, ErrDamaged, err)
	}
	if m.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("backup %s: manifest format %d, this tidemark reads %d: %w", backupID, m.FormatVersion, FormatVersion, ErrBadFormat)
	}
	if m.BackupId != backupID {
		return nil, fmt.Errorf("backup %s: manifest names backup %q: %w", backupID, m.BackupId, ErrDamaged)
	}
	return m, nil
}

// BackupIDs lists the ids of every backup with a manifest, oldest first.
func (r *Repo) BackupIDs(ctx context.Context) ([]string, error) {
	var ids []string
	var maybeTomb []string
	err := r.store.List(ctx, manifestPrefix, func(oi storage.ObjectInfo) error {
		id := strings.TrimPrefix(oi.Key, manifestPrefix)
		switch {
		case !validID(id):
		case oi.Size == int64(len(tombstone)):
			maybeTomb = append(maybeTomb, id)
		default:
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing backups in %s: %w", r.store, err)
	}
	// A tombstone (gc fenced the backup's writer) is no backup. Objects of
	// its exact size are rare; read them to tell.
	for _, id := range maybeTomb {
		tomb, err := r.readTombstone(ctx, manifestKey(id))
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listing backups in %s: %w", r.store, err)
		}
		if !tomb {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Manifests loads every backup's manifest in parallel, oldest first. A
// backup deleted between the listing and its load is left out.
func (r *Repo) Manifests(ctx context.Context) ([]*v1.Manifest, error) {
	ids, err := r.BackupIDs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*v1.Manifest, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, id := range ids {
		g.Go(func() error {
			m, err := r.LoadManifest(gctx, id)
			if errors.Is(err, ErrBackupMissing) {
				return nil // deleted since the listing: it is gone
			}
			out[i] = m
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(out, func(m *v1.Manifest) bool { return m == nil }), nil
}

// eachManifest loads every backup's manifest in parallel and hands each to
// fn, one call at a time, then lets it go: gc's memory follows the set of
// chunk ids, not every manifest of the repository at once. A backup
// deleted between the listing and its load is skipped.
func (r *Repo) eachManifest(ctx context.Context, fn func(*v1.Manifest) error) error {
	ids, err := r.BackupIDs(ctx)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, id := range ids {
		g.Go(func() error {
			m, err := r.LoadManifest(gctx, id)
			if errors.Is(err, ErrBackupMissing) {
				return nil
			}
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			return fn(m)
		})
	}
	return g.Wait()
}

func (r *Repo) readBlob(ctx context.Context, key string, size int64) ([]byte, error) {
	return r.readBlobInto(ctx, key, size, nil)
}

// readBlobInto reads an object of expected size into buf (grown if needed).
func (r *Repo) readBlobInto(ctx context.Context, key string, size int64, buf []byte) ([]byte, error) {
	rc, err := r.store.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	if size < 0 {
		return io.ReadAll(io.LimitReader(rc, 1<<30))
	}
	// One byte more than expected tells a longer object from a right one.
	if int64(cap(buf)) < size+1 {
		buf = make([]byte, size+1)
	}
	buf = buf[:size+1]
	n, err := io.ReadFull(rc, buf)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return buf[:n], nil
	case err != nil:
		return nil, err
	}
	return buf[:n], nil
}

// fetchChunk reads and verifies one chunk, reading it a second time before
// calling it damaged so a flaky network is not reported as corruption.
func (r *Repo) fetchChunk(ctx context.Context, id ChunkID, storedSize int64, dst []byte) ([]byte, error) {
	var lastErr error
	rawp, _ := r.rawBufs.Get().(*[]byte)
	if rawp == nil {
		rawp = new([]byte)
	}
	defer r.rawBufs.Put(rawp)
	for attempt := 0; attempt < 2; attempt++ {
		raw, err := r.readBlobInto(ctx, chunkKey(id), storedSize, *rawp)
		if cap(raw) > cap(*rawp) {
			*rawp = raw[:0]
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, storage.ErrNotFound) {
				return nil, fmt.Errorf("%w: chunk object %s is missing", ErrDamaged, chunkKey(id))
			}
			lastErr = err
			continue
		}
		if storedSize >= 0 && int64(len(raw)) != storedSize {
			lastErr = fmt.Errorf("%w: stored object has %d bytes, manifest says %d", errCorrupt, len(raw), storedSize)
			continue
		}
		plain, err := r.codec.decodeChunk(dst[:0], id, raw)
		if err == nil {
			return plain, nil
		}
		lastErr = err
	}
	if errors.Is(lastErr, errCorrupt) {
		return nil, fmt.Errorf("%w: %w", ErrDamaged, lastErr)
	}
	return nil, lastErr
}

// ReadOptions tune a stream read.
type ReadOptions struct {
	// Prefetch is how many chunks are fetched ahead in parallel; memory is
	// about Prefetch × chunk size. 0: 2 × GOMAXPROCS, at least 4.
	Prefetch int
}

// OpenStream returns the plaintext of one stream of a backup, in order.
// Every chunk is verified; a damaged one ends the read with a *DamageError.
func (r *Repo) OpenStream(ctx context.Context, m *v1.Manifest, name string, opts ReadOptions) (io.ReadCloser, error) {
	var ref *v1.StreamRef
	for _, s := range m.Streams {
		if s.Name == name {
			ref = s
			break
		}
	}
	if ref == nil {
		return nil, fmt.Errorf("backup %s has no stream %q", m.BackupId, name)
	}
	return r.openStreamRef(ctx, m.BackupId, ref, opts), nil
}

func (r *Repo) openStreamRef(ctx context.Context, backupID string, ref *v1.StreamRef, opts ReadOptions) io.ReadCloser {
	n := opts.Prefetch
	if n <= 0 {
		n = max(4, 2*runtime.GOMAXPROCS(0))
	}
	ctx, cancel := context.WithCancel(ctx)
	sr := &streamReader{
		cancel:  cancel,
		results: make(chan chan fetched, n),
		free:    make(chan []byte, n+1),
	}
	sem := make(chan struct{}, n)
	// The dispatcher queues one result slot per chunk in order; fetches run
	// in parallel, the reader consumes slots in order.
	go func() {
		defer close(sr.results)
		for _, c := range ref.Chunks {
			slot := make(chan fetched, 1)
			select {
			case sr.results <- slot:
			case <-ctx.Done():
				// Not every chunk was queued: the reader must not take
				// the close for the stream's end (read after the close,
				// which orders this write before it).
				sr.stopped = ctx.Err()
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				slot <- fetched{err: ctx.Err()}
				return
			}
			go func() {
				defer func() { <-sem }()
				id, err := chunkIDFromBytes(c.Id)
				if err != nil {
					slot <- fetched{err: &DamageError{Backup: backupID, Stream: ref.Name, Reason: fmt.Errorf("manifest: %w", err)}}
					return
				}
				var dst []byte
				select {
				case dst = <-sr.free:
				default:
				}
				plain, err := r.fetchChunk(ctx, id, int64(c.StoredSize), dst)
				switch {
				case err != nil && errors.Is(err, ErrDamaged):
					err = &DamageError{Backup: backupID, Stream: ref.Name, Chunk: id, Reason: err}
				case err != nil:
					err = fmt.Errorf("backup %s, stream %s: reading chunk %s: %w", backupID, ref.Name, id, err)
				case uint32(len(plain)) != c.Size:
					err = &DamageError{Backup: backupID, Stream: ref.Name, Chunk: id, Reason: fmt.Errorf("chunk holds %d bytes, manifest says %d", len(plain), c.Size)}
				}
				slot <- fetched{data: plain, err: err}
			}()
		}
	}()
	return sr
}

type fetched struct {
	data []byte
	err  error
}

type streamReader struct {
	cancel  context.CancelFunc
	results chan chan fetched
	free    chan []byte
	cur     []byte
	buf     []byte
	err     error
	once    sync.Once
	// stopped is set by the dispatcher when its context ended before it
	// queued every chunk; read only after results is closed.
	stopped error
}

func (s *streamReader) Read(p []byte) (int, error) {
	for len(s.cur) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.buf != nil {
			select {
			case s.free <- s.buf:
			default:
			}
			s.buf = nil
		}
		slot, ok := <-s.results
		if !ok {
			s.err = io.EOF
			if s.stopped != nil {
				s.err = s.stopped
			}
			return 0, s.err
		}
		f := <-slot
		if f.err != nil {
			s.err = f.err
			s.cancel()
			return 0, f.err
		}
		s.cur, s.buf = f.data, f.data
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}

// WriteTo implements io.WriterTo, handing whole chunks to w without a copy.
func (s *streamReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(s.cur) > 0 {
			n, err := w.Write(s.cur)
			total += int64(n)
			s.cur = s.cur[n:]
			if err != nil {
				return total, err
			}
		}
		var p [0]byte
		if _, err := s.Read(p[:]); err != nil && len(s.cur) == 0 {
			if errors.Is(err, io.EOF) {
				return total, nil
			}
			return total, err
		}
	}
}

// Close stops prefetching; it is safe to call more than once.
func (s *streamReader) Close() error {
	s.once.Do(func() {
		s.cancel()
		// Drain so fetch goroutines blocked on their slot can exit.
		go func() {
			for slot := range s.results {
				<-slot
			}
		}()
	})
	return nil
}

// ManifestKey is the store key of backup id's manifest, for callers that
// report where a backup lives (the agent tells the catalog).
func ManifestKey(backupID string) string { return manifestKey(backupID) }

// DiscardManifest deletes the manifest of backup id if, and only if, it was
// written under fence: a result the controller refused as stale must not
// leave a manifest that claims a backup the catalog never accepted, while
// one another attempt wrote under a newer fence must stay. It reports
// whether it deleted one. The chunks stay until gc finds them unreferenced.
// In an Object Lock repository the store refuses the delete until the
// manifest's retention ends (storage.ErrRetained, with the date): the
// manifest then stays, unknown to the catalog.
func (r *Repo) DiscardManifest(ctx context.Context, id string, fence *v1.LeaseToken) (bool, error) {
	m, err := r.LoadManifest(ctx, id)
	if errors.Is(err, ErrBackupMissing) || errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("backup %s: reading manifest: %w", id, err)
	}
	if !proto.Equal(m.GetFence(), fence) {
		return false, nil
	}
	if err := r.store.Delete(ctx, manifestKey(id)); err != nil {
		return false, fmt.Errorf("backup %s: deleting manifest: %w", id, err)
	}
	return true, nil
}

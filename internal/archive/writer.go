package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/version"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// BackupOptions describe one backup being written.
type BackupOptions struct {
	ID               string // "" generates a time-ordered id
	Instance         string
	Engine           string
	Labels           map[string]string
	Workers          int    // parallel chunk uploads; 0: GOMAXPROCS to a local store, 2 × GOMAXPROCS to others
	Compression      string // "" uses the repository default
	CompressionLevel int
	Fence            *v1.LeaseToken
	ParentBackupID   string
	// Progress, when set, is called from upload workers after each chunk;
	// it must be quick and safe for concurrent use.
	Progress func(Progress)
}

// Progress is a snapshot of a running backup's counters.
type Progress struct {
	LogicalBytes   int64 // plaintext bytes accepted from the engine
	UploadedBytes  int64 // stored bytes sent to the repository
	ChunksNew      int64
	ChunksReused   int64
	ElapsedSeconds float64
}

// Backup is the handle an engine writes through inside WithBackup.
type Backup struct {
	repo  *Repo
	mark  *writerMark
	opts  BackupOptions
	ctx   context.Context
	start time.Time
	chunk int
	compr string
	level int
	jobs  chan *chunkJob
	// queued bounds the bytes (buffer capacity) of chunks handed to the
	// workers and not yet stored: Workers full chunks, or many more small
	// blocks (StreamBlocks), so that a writer of small blocks keeps the
	// workers as busy as one of full chunks instead of waiting for a free
	// worker at every block.
	queued *semaphore.Weighted
	sendMu sync.RWMutex // held for reading while sending on jobs, for writing to close it
	sealed bool         // jobs is closed: fn has returned
	bufs   chan []byte
	// pools hold spare buffers of streams cut into blocks smaller than
	// chunk (StreamBlocks), by capacity.
	poolMu sync.Mutex
	pools  map[int]chan []byte
	failed atomic.Pointer[error]

	mu       sync.Mutex
	streams  []*StreamWriter
	names    map[string]bool
	manifest *v1.Manifest

	// cpu bounds the workers compressing (and encrypting) at once to the
	// cores Go may use: more upload workers than that only hide storage
	// latency, and more threads doing CPU work (cgo calls run outside
	// GOMAXPROCS) would take the core of the database server beside us.
	cpu        chan struct{}
	inflightMu sync.Mutex
	inflight   map[ChunkID]*inflight

	// copyOf is the source manifest when the backup is a Copy: its
	// times, server, consistency point and engine facts are kept.
	copyOf *v1.Manifest

	logical, uploaded, newChunks, reused atomic.Int64
	retained                             atomic.Int64 // reused chunks whose retention was extended
}

type inflight struct {
	done   chan struct{}
	size   int64
	err    error
	stored bool // this backup's put created it (under this backup's retention)
}

type chunkJob struct {
	stream *StreamWriter
	ref    *v1.ChunkRef
	buf    []byte // len = plaintext size
	id     ChunkID
}

// ID returns the backup's id.
func (b *Backup) ID() string { return b.manifest.GetBackupId() }

// SetServer records the server the backup was taken from.
func (b *Backup) SetServer(s *v1.ServerInfo) { b.mu.Lock(); b.manifest.Server = s; b.mu.Unlock() }

// SetConsistency records the point the backup's data corresponds to.
func (b *Backup) SetConsistency(c *v1.ConsistencyPoint) {
	b.mu.Lock()
	b.manifest.Consistency = c
	b.mu.Unlock()
}

// SetLockDuration records how long writes on the server were blocked.
func (b *Backup) SetLockDuration(d time.Duration) {
	b.mu.Lock()
	b.manifest.LockDuration = durationpb.New(d)
	b.mu.Unlock()
}

// SetEngineMetadata records an engine-specific fact in the manifest.
func (b *Backup) SetEngineMetadata(k, v string) {
	b.mu.Lock()
	if b.manifest.EngineMetadata == nil {
		b.manifest.EngineMetadata = map[string]string{}
	}
	b.manifest.EngineMetadata[k] = v
	b.mu.Unlock()
}

// WithBackup writes one backup: fn writes streams through b; when fn returns
// nil, every stream has been closed and every chunk is stored, the store is
// synced so that every chunk is durable, the manifest is written with a
// create-only put, and only then does the backup exist.
// If fn fails, a stream is left open, or any upload fails, no manifest is
// written and the error says why; chunks already uploaded stay until gc.
//
// fn may use b from many goroutines; the context passed to fn is cancelled
// as soon as an upload fails, so engines stop promptly.
//
// gc runs alongside (gc.go): the backup's marker acknowledges what gc has
// condemned and rescues what the backup refers to. If the process is
// paused past the stale time, gc may fence the backup: WithBackup then
// fails with ErrFenced on its next step and commits nothing.
func (r *Repo) WithBackup(ctx context.Context, opts BackupOptions, fn func(ctx context.Context, b *Backup) error) (m *v1.Manifest, err error) {
	if opts.ID == "" {
		opts.ID = newID(time.Now())
	}
	if err := ValidBackupID(opts.ID); err != nil {
		return nil, err
	}
	if opts.Engine == "" {
		return nil, errors.New("backup options: engine is required")
	}
	if opts.Workers <= 0 {
		// Twice the cores hides a remote store's latency; a local disk
		// has none, and more writers than cores would only take CPU from
		// the database server sharing the machine.
		opts.Workers = 2 * runtime.GOMAXPROCS(0)
		if storage.IsLocal(r.store) {
			opts.Workers = runtime.GOMAXPROCS(0)
		}
	}
	compr, level := opts.Compression, opts.CompressionLevel
	if compr == "" {
		compr = r.cfg.Compression
		if level == 0 {
			level = r.cfg.CompressionLevel
		}
	}
	if compr == "zstd" && level == 0 {
		level = DefaultCompressionLevel
	}
	if err := validCompression(compr, level); err != nil {
		return nil, err
	}
	if _, err := r.store.Stat(ctx, manifestKey(opts.ID)); err == nil {
		if tomb, _ := r.readTombstone(ctx, manifestKey(opts.ID)); tomb {
			return nil, fmt.Errorf("backup %s was abandoned in %s (gc fenced its writer): an id is never reused, choose another", opts.ID, r.store)
		}
		return nil, fmt.Errorf("backup %s already exists in %s: choose another id", opts.ID, r.store)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("backup %s: checking the repository: %w", opts.ID, err)
	}

	// No lock excludes gc: the marker takes part in gc's two-phase
	// protocol (gc.go), which never deletes a chunk this backup refers to.
	mark, gcs, err := r.startMark(ctx, opts.ID)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", opts.ID, err)
	}
	defer func() {
		if uerr := mark.release(); uerr != nil && err == nil {
			err = fmt.Errorf("backup %s: releasing lock: %w", opts.ID, uerr)
		}
	}()
	if err := r.syncIndex(ctx, gcs); err != nil {
		return nil, fmt.Errorf("backup %s: %w", opts.ID, err)
	}

	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	b := &Backup{
		repo:  r,
		mark:  mark,
		opts:  opts,
		ctx:   gctx,
		start: start,
		chunk: r.cfg.ChunkSize,
		compr: compr,
		level: level,
		// The bound on memory is queued: buffers handed over and not yet
		// stored hold at most Workers chunks' worth of bytes; besides them
		// each open stream fills one buffer. jobs has room for as many of
		// the smallest blocks, so a send never waits once queued admits it.
		queued: semaphore.NewWeighted(int64(opts.Workers) * int64(r.cfg.ChunkSize)),
		jobs:   make(chan *chunkJob, opts.Workers*max(1, r.cfg.ChunkSize/MinBlockSize)),
		// Free buffers for reuse.
		bufs:     make(chan []byte, opts.Workers+2),
		cpu:      make(chan struct{}, max(1, runtime.GOMAXPROCS(0))),
		names:    map[string]bool{},
		inflight: map[ChunkID]*inflight{},
		manifest: &v1.Manifest{
			FormatVersion:  FormatVersion,
			BackupId:       opts.ID,
			Instance:       opts.Instance,
			Engine:         opts.Engine,
			StartedAt:      timestamppb.New(start),
			Labels:         opts.Labels,
			Fence:          opts.Fence,
			ParentBackupId: opts.ParentBackupID,
			ToolVersion:    version.Get().String(),
			Chunking: &v1.ChunkParams{
				ChunkSize:        uint32(r.cfg.ChunkSize),
				Hash:             r.cfg.Hash,
				Compression:      compr,
				CompressionLevel: int32(level),
				Encryption:       r.cfg.Encryption,
			},
		},
	}
	for range opts.Workers {
		g.Go(func() error { return b.worker(gctx) })
	}
	lockCtx, stopLock := context.WithCancel(gctx)
	g.Go(func() error { return mark.refreshLoop(lockCtx) })

	fnErr := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("backup %s: engine panicked: %v", opts.ID, p)
			}
		}()
		return fn(gctx, b)
	}()
	// No more chunks after fn returns; a stream still open at this point
	// is an engine bug or an aborted run, either way not a complete backup.
	b.mu.Lock()
	var open []string
	for _, s := range b.streams {
		if !s.closed {
			open = append(open, s.name)
		}
	}
	b.mu.Unlock()
	b.sendMu.Lock()
	b.sealed = true
	close(b.jobs)
	b.sendMu.Unlock()
	stopLock()
	gErr := g.Wait()
	if errors.Is(gErr, context.Canceled) && ctx.Err() == nil && fnErr != nil {
		gErr = nil // workers stopped because fn failed; fn's error says why
	}
	switch {
	case fnErr != nil && gErr != nil && !errors.Is(fnErr, gErr):
		return nil, fmt.Errorf("backup %s failed: %w (upload: %w)", opts.ID, fnErr, gErr)
	case gErr != nil:
		return nil, fmt.Errorf("backup %s failed: %w", opts.ID, gErr)
	case fnErr != nil:
		return nil, fmt.Errorf("backup %s failed: %w", opts.ID, fnErr)
	case len(open) > 0:
		return nil, fmt.Errorf("backup %s failed: streams %v were never closed", opts.ID, open)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("backup %s cancelled: %w", opts.ID, err)
	}
	return b.commit(ctx)
}

// commit makes every chunk durable, then writes the manifest.
//
// Chunks are put with DeferSync: a backend that can (the file store) skips
// the fsync per chunk, and one storage.Sync here makes them all durable,
// along with every chunk this backup reused, which may have been left
// unsynced by a backup that failed before this point. The manifest is never
// written over chunks that are not durable: a failed Sync fails the backup.
func (b *Backup) commit(ctx context.Context) (*v1.Manifest, error) {
	m := b.manifest
	if err := storage.Sync(ctx, b.repo.store); err != nil {
		// Chunks this process stored or saw may be lost or removed: list
		// the repository again before trusting any of them.
		b.repo.dropIndex()
		return nil, fmt.Errorf("backup %s failed: making its chunks durable in %s: %w", m.BackupId, b.repo.store, err)
	}
	if err := b.retainReused(ctx); err != nil {
		return nil, fmt.Errorf("backup %s failed: %w", m.BackupId, err)
	}
	var logical, stored uint64
	for _, s := range b.streams {
		m.Streams = append(m.Streams, s.ref)
		logical += s.ref.Size
		for _, c := range s.ref.Chunks {
			stored += uint64(c.StoredSize)
		}
	}
	m.LogicalBytes, m.StoredBytes, m.NewStoredBytes = logical, stored, uint64(b.uploaded.Load())
	m.FinishedAt = timestamppb.Now()
	if src := b.copyOf; src != nil {
		m.StartedAt, m.FinishedAt, m.Server, m.Consistency = src.GetStartedAt(), src.GetFinishedAt(), src.GetServer(), src.GetConsistency()
		m.LockDuration, m.EngineMetadata = src.GetLockDuration(), src.GetEngineMetadata()
	}
	if err := b.repo.putManifest(ctx, m); err != nil {
		if errors.Is(err, storage.ErrExists) {
			if tomb, terr := b.repo.readTombstone(ctx, manifestKey(m.BackupId)); terr == nil && tomb {
				return nil, fmt.Errorf("backup %s: %w: gc fenced it while this process was paused (its lock went stale), so the chunks it reused may be gone; nothing was committed; run the backup again", m.BackupId, ErrFenced)
			}
		}
		return nil, fmt.Errorf("backup %s: storing manifest: %w", m.BackupId, err)
	}
	return m, nil
}

func (r *Repo) putManifest(ctx context.Context, m *v1.Manifest) error {
	raw, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	key := manifestKey(m.BackupId)
	blob, err := r.codec.encodeNamed(key, raw, "zstd", 3)
	if err != nil {
		return err
	}
	return r.store.Put(ctx, key, bytes.NewReader(blob), int64(len(blob)), r.retain(storage.PutOptions{IfNotExists: true}))
}

// dropIndex forgets every chunk the index knows. It empties the index
// rather than unloading it, since a backup running meanwhile records into
// it: from then on a chunk is known only once stored again, and the
// create-only put of one that exists finds it (ErrExists), which is slower
// but correct for a chunk that is durable and re-stores one that was lost.
func (r *Repo) dropIndex() {
	r.indexMu.Lock()
	if r.index != nil {
		r.index = map[ChunkID]int64{}
	}
	r.indexMu.Unlock()
}

func (b *Backup) fail(err error) {
	b.failed.CompareAndSwap(nil, &err)
}

func (b *Backup) getBuf(size int) []byte {
	select {
	case buf := <-b.pool(size):
		return buf[:0]
	default:
		return make([]byte, 0, size)
	}
}

func (b *Backup) putBuf(buf []byte) {
	select {
	case b.pool(cap(buf)) <- buf:
	default: // enough spares; let the GC have it
	}
}

// pool returns the spare buffers of one capacity; a buffer only ever goes
// back to the pool of its own capacity, so a stream always gets buffers of
// its block size.
func (b *Backup) pool(size int) chan []byte {
	if size == b.chunk {
		return b.bufs
	}
	b.poolMu.Lock()
	defer b.poolMu.Unlock()
	p, ok := b.pools[size]
	if !ok {
		if b.pools == nil {
			b.pools = make(map[int]chan []byte)
		}
		p = make(chan []byte, cap(b.bufs))
		b.pools[size] = p
	}
	return p
}

func (b *Backup) worker(ctx context.Context) error {
	var out, scratch []byte
	for job := range b.jobs {
		var err error
		out, scratch, err = b.store(ctx, job, out, scratch)
		b.putBuf(job.buf)
		b.queued.Release(int64(cap(job.buf)))
		job.stream.pending.Done()
		if err != nil {
			b.fail(err)
			// Drain so a blocked Write sees the cancelled context and
			// returns instead of waiting on a send nobody receives.
			go func() {
				for j := range b.jobs {
					b.putBuf(j.buf)
					b.queued.Release(int64(cap(j.buf)))
					j.stream.pending.Done()
				}
			}()
			return err
		}
		if b.opts.Progress != nil {
			b.opts.Progress(b.progress())
		}
	}
	return nil
}

func (b *Backup) progress() Progress {
	return Progress{
		LogicalBytes:   b.logical.Load(),
		UploadedBytes:  b.uploaded.Load(),
		ChunksNew:      b.newChunks.Load(),
		ChunksReused:   b.reused.Load(),
		ElapsedSeconds: time.Since(b.start).Seconds(),
	}
}

// store hashes one chunk and uploads it unless the repository, or another
// upload in flight, already has it.
func (b *Backup) store(ctx context.Context, job *chunkJob, out, scratch []byte) ([]byte, []byte, error) {
	r := b.repo
	id := job.id
	// A chunk of a condemnation record is rescued first, and then stored
	// again rather than trusted to exist (gc.go).
	doomed, err := b.mark.refer(ctx, id)
	if err != nil {
		return out, scratch, err
	}
	select {
	case b.cpu <- struct{}{}:
	case <-ctx.Done():
		return out, scratch, ctx.Err()
	}
	cpuHeld := true
	releaseCPU := func() {
		if cpuHeld {
			cpuHeld = false
			<-b.cpu
		}
	}
	defer releaseCPU()
	job.ref.Id = id[:]
	if size, ok := r.known(id); ok && !doomed {
		job.ref.StoredSize = uint32(size)
		b.reused.Add(1)
		return out, scratch, nil
	}
	b.inflightMu.Lock()
	if f, ok := b.inflight[id]; ok {
		b.inflightMu.Unlock()
		releaseCPU()
		select {
		case <-f.done:
		case <-ctx.Done():
			return out, scratch, ctx.Err()
		}
		if f.err != nil {
			return out, scratch, f.err
		}
		job.ref.StoredSize = uint32(f.size)
		b.reused.Add(1)
		return out, scratch, nil
	}
	f := &inflight{done: make(chan struct{})}
	b.inflight[id] = f
	b.inflightMu.Unlock()
	defer close(f.done)

	key := chunkKey(id)
	var tail []byte
	out, tail, scratch, err = r.codec.encodeParts(out[:0], scratch, id.String(), job.buf, b.compr, b.level)
	releaseCPU()
	if err != nil {
		f.err = err
		return out, scratch, err
	}
	size := len(out) + len(tail)
	// Durable only after the Sync in commit, which comes before anything
	// refers to the chunk.
	err = r.store.Put(ctx, key, storage.NewBytesReader(out, tail), int64(size), r.retain(storage.PutOptions{IfNotExists: true, DeferSync: true}))
	switch {
	case err == nil:
		f.stored = true
		b.uploaded.Add(int64(size))
		b.newChunks.Add(1)
	case errors.Is(err, storage.ErrExists):
		// Another writer stored the same plaintext first; either copy is
		// valid, ours is not needed.
		b.reused.Add(1)
	default:
		f.err = fmt.Errorf("backup %s, stream %s: storing chunk %s: %w", b.manifest.BackupId, job.stream.name, id, err)
		return out, scratch, f.err
	}
	f.size = int64(size)
	job.ref.StoredSize = uint32(size)
	r.remember(id, int64(size))
	return out, scratch, nil
}

// Stream opens a named stream. Names are unique within a backup. Each stream
// is written by one goroutine at a time; different streams may be written
// concurrently.
func (b *Backup) Stream(name string, metadata map[string]string) (*StreamWriter, error) {
	return b.StreamBlocks(name, metadata, 0)
}

// MinBlockSize is the smallest block StreamBlocks accepts.
const MinBlockSize = minChunkSize

// StreamBlocks opens a named stream cut into chunks of block bytes (the
// last may be shorter) instead of the repository's chunk size: physical
// engines write each file in fixed, file-aligned blocks, so that an
// unchanged region of a file is an unchanged chunk the repository already
// holds, and a smaller block stores less around each changed page. block
// must be a power of two from MinBlockSize to the repository's chunk size;
// 0 means the chunk size.
func (b *Backup) StreamBlocks(name string, metadata map[string]string, block int) (*StreamWriter, error) {
	if name == "" {
		return nil, errors.New("stream name is empty")
	}
	if block == 0 {
		block = b.chunk
	}
	if block < MinBlockSize || block > b.chunk || block&(block-1) != 0 {
		return nil, fmt.Errorf("stream %s: block size %d is not a power of two from %d to the repository's chunk size %d", name, block, MinBlockSize, b.chunk)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.names[name] {
		return nil, fmt.Errorf("backup %s: stream %q opened twice", b.manifest.BackupId, name)
	}
	b.names[name] = true
	s := &StreamWriter{b: b, name: name, size: block, ref: &v1.StreamRef{Name: name, Metadata: metadata}}
	b.streams = append(b.streams, s)
	return s, nil
}

// StreamWriter cuts a stream into chunks and hands them to the upload
// workers. Write blocks when every worker is busy: that is the memory bound.
type StreamWriter struct {
	b       *Backup
	name    string
	size    int // chunk size of this stream
	ref     *v1.StreamRef
	buf     []byte
	pending sync.WaitGroup
	closed  bool
	// The chunk's id is hashed as bytes arrive, by the writing goroutine,
	// while they are still in its cache, rather than by an upload worker
	// reading the whole chunk back from memory later.
	h      hash.Hash
	hashed int // buf[:hashed] is in h
}

// hashNew adds what was appended to the chunk since the last call to its
// hash.
func (s *StreamWriter) hashNew() {
	if s.hashed == len(s.buf) {
		return
	}
	if s.h == nil {
		s.h = s.b.repo.codec.newHash()
	}
	s.h.Write(s.buf[s.hashed:])
	s.hashed = len(s.buf)
}

// AvailableBuffer returns an empty buffer over the unused rest of the
// current chunk, as bufio.Writer's does: a caller that appends to it and
// passes the result to the next Write has it taken in place, with no copy.
// Its capacity ends where the chunk does, so an append past that moves the
// bytes elsewhere, and Write then copies them as usual.
func (s *StreamWriter) AvailableBuffer() []byte {
	if s.closed {
		return nil
	}
	if s.buf == nil {
		s.buf = s.b.getBuf(s.size)
	}
	return s.buf[len(s.buf):len(s.buf):s.size]
}

// Write implements io.Writer.
func (s *StreamWriter) Write(p []byte) (int, error) {
	if s.closed {
		return 0, fmt.Errorf("stream %s: write after close", s.name)
	}
	if l := len(s.buf); len(p) > 0 && s.buf != nil && len(p) <= s.size-l && &s.buf[:l+1][l] == &p[0] {
		// Appended to AvailableBuffer: already in place.
		s.buf = s.buf[:l+len(p)]
		s.hashNew()
		if len(s.buf) == s.size {
			if err := s.flush(); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	}
	n := 0
	for len(p) > 0 {
		if s.buf == nil {
			s.buf = s.b.getBuf(s.size)
		}
		k := min(len(p), s.size-len(s.buf))
		s.buf = append(s.buf, p[:k]...)
		s.hashNew()
		p, n = p[k:], n+k
		if len(s.buf) == s.size {
			if err := s.flush(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// ReadFrom implements io.ReaderFrom, filling chunk buffers directly.
func (s *StreamWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if s.closed {
			return total, fmt.Errorf("stream %s: write after close", s.name)
		}
		if s.buf == nil {
			s.buf = s.b.getBuf(s.size)
		}
		n, err := r.Read(s.buf[len(s.buf):s.size])
		s.buf = s.buf[:len(s.buf)+n]
		s.hashNew()
		total += int64(n)
		if len(s.buf) == s.size {
			if ferr := s.flush(); ferr != nil {
				return total, ferr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return total, nil
			}
			return total, err
		}
	}
}

func (s *StreamWriter) flush() error {
	if len(s.buf) == 0 {
		return nil
	}
	s.hashNew()
	var id ChunkID
	s.h.Sum(id[:0])
	s.h.Reset()
	s.hashed = 0
	ref := &v1.ChunkRef{Size: uint32(len(s.buf))}
	s.ref.Chunks = append(s.ref.Chunks, ref)
	s.ref.Size += uint64(len(s.buf))
	s.b.logical.Add(int64(len(s.buf)))
	job := &chunkJob{stream: s, ref: ref, buf: s.buf, id: id}
	s.buf = nil
	s.pending.Add(1)
	s.b.sendMu.RLock()
	defer s.b.sendMu.RUnlock()
	if s.b.sealed {
		s.pending.Done()
		return fmt.Errorf("stream %s: written after the backup function returned", s.name)
	}
	if err := s.b.queued.Acquire(s.b.ctx, int64(cap(job.buf))); err != nil {
		s.pending.Done()
		if e := s.b.failed.Load(); e != nil {
			return *e
		}
		return s.b.ctx.Err()
	}
	select {
	case s.b.jobs <- job:
		return nil
	case <-s.b.ctx.Done():
		s.b.queued.Release(int64(cap(job.buf)))
		s.pending.Done()
		if e := s.b.failed.Load(); e != nil {
			return *e
		}
		return s.b.ctx.Err()
	}
}

// SetMetadata sets one key of the stream's metadata after it was opened:
// for what is known only once its data is written (a physical file's
// holes, physical.File). Call it from the writing goroutine, before Close.
func (s *StreamWriter) SetMetadata(key, value string) error {
	if s.closed {
		return fmt.Errorf("stream %s: metadata set after close", s.name)
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.ref.Metadata == nil {
		s.ref.Metadata = map[string]string{}
	}
	s.ref.Metadata[key] = value
	return nil
}

// Close flushes the last partial chunk and waits until every chunk of the
// stream is stored. A stream that was never closed fails the backup.
func (s *StreamWriter) Close() error {
	if s.closed {
		return nil
	}
	err := s.flush()
	s.pending.Wait()
	s.b.mu.Lock()
	s.closed = true
	s.b.mu.Unlock()
	if s.h != nil {
		s.b.repo.codec.putHash(s.h)
		s.h = nil
	}
	if err != nil {
		return err
	}
	if e := s.b.failed.Load(); e != nil {
		return *e
	}
	return s.b.ctx.Err()
}

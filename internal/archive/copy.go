package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/internal/storage"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// CopyParams name the backup Copy copies.
type CopyParams struct {
	BackupID string
	// Workers: parallel uploads to the destination (0: WithBackup's
	// default); streams are read from the source this many at a time.
	Workers int
	// Progress, when set, is called from upload workers.
	Progress func(Progress)
}

// CopyResult is what Copy did.
type CopyResult struct {
	// Manifest is the copy's manifest as the destination stores it.
	Manifest *v1.Manifest
	// AlreadyThere: the destination held the backup already (an earlier
	// copy); nothing was written, and what is there was verified.
	AlreadyThere bool
	// ChunksRead were read from the source (and stored in the destination
	// unless it had them); ChunksSkipped were not read at all: both
	// repositories name chunks alike and the destination had them.
	ChunksRead, ChunksSkipped int64
	// UploadedBytes is what the copy stored (chunks the destination lacked).
	UploadedBytes int64
	// ChunksVerified is how many distinct chunks were found present, with
	// their recorded size, after the manifest was written.
	ChunksVerified int
}

// Copy copies backup p.BackupID from src to dst: a backup of the same id,
// instance, engine, labels, fence and consistency point, written through
// dst's own writer, so that it takes part in dst's gc protocol, stores
// only the chunks dst lacks (dst's index), encrypts with dst's keys and
// writes the manifest last.
//
// Chunk ids: an unencrypted repository names a chunk by the SHA-256 of its
// plaintext; an encrypted one by an HMAC under its own id key, so the same
// plaintext has different ids in two encrypted repositories (or one
// encrypted and one not). When the two name chunks alike, a chunk dst
// already holds is not even read from src; otherwise every chunk is read,
// verified, and stored under dst's id (deduplicated against dst all the
// same). Chunk boundaries are kept (a source chunk larger than dst's chunk
// size is split), so later copies of similar backups deduplicate.
//
// After the manifest is stored, Copy reads it back and checks that every
// chunk it names is present in dst with its recorded size. src is only
// read. A backup dst already holds under that id is verified and reported
// as AlreadyThere, not written again.
func Copy(ctx context.Context, src, dst *Repo, p CopyParams) (*CopyResult, error) {
	m, err := src.LoadManifest(ctx, p.BackupID)
	if err != nil {
		return nil, fmt.Errorf("copy of backup %s: source %s: %w", p.BackupID, src.store, err)
	}
	res := &CopyResult{}
	if have, err := dst.LoadManifest(ctx, p.BackupID); err == nil {
		if err := sameBackup(m, have); err != nil {
			return nil, fmt.Errorf("copy of backup %s: %s already holds a different backup under that id: %w", p.BackupID, dst.store, err)
		}
		res.Manifest, res.AlreadyThere = have, true
		res.ChunksVerified, err = dst.checkPresent(ctx, have)
		return res, err
	} else if !errors.Is(err, ErrBackupMissing) {
		return nil, fmt.Errorf("copy of backup %s: destination %s: %w", p.BackupID, dst.store, err)
	}
	sameIDs := bytes.Equal(src.codec.idKey, dst.codec.idKey)
	var read, skipped atomic.Int64
	workers := p.Workers
	if workers <= 0 {
		workers = 4
	}
	out, err := dst.WithBackup(ctx, BackupOptions{
		ID: m.GetBackupId(), Instance: m.GetInstance(), Engine: m.GetEngine(), Labels: m.GetLabels(),
		Fence: m.GetFence(), ParentBackupID: m.GetParentBackupId(), Workers: p.Workers, Progress: p.Progress,
		Compression: m.GetChunking().GetCompression(), CompressionLevel: int(m.GetChunking().GetCompressionLevel()),
	}, func(ctx context.Context, b *Backup) error {
		b.copyOf = m
		// Streams are opened in the source's order, so the copy's
		// manifest lists them alike, then filled in parallel.
		sws := make([]*StreamWriter, len(m.GetStreams()))
		for i, ref := range m.GetStreams() {
			sw, err := b.Stream(ref.GetName(), ref.GetMetadata())
			if err != nil {
				return err
			}
			sw.ref.Sha256 = ref.GetSha256()
			sws[i] = sw
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(workers)
		for i, ref := range m.GetStreams() {
			g.Go(func() error {
				return copyStream(gctx, src, b, sws[i], m.GetBackupId(), ref, sameIDs, &read, &skipped)
			})
		}
		return g.Wait()
	})
	if err != nil {
		return nil, fmt.Errorf("copy of backup %s to %s: %w", p.BackupID, dst.store, err)
	}
	res.ChunksRead, res.ChunksSkipped, res.UploadedBytes = read.Load(), skipped.Load(), int64(out.GetNewStoredBytes())
	stored, err := dst.LoadManifest(ctx, p.BackupID)
	if err != nil {
		return nil, fmt.Errorf("copy of backup %s: reading back its manifest from %s: %w", p.BackupID, dst.store, err)
	}
	if !proto.Equal(stored, out) {
		return nil, fmt.Errorf("copy of backup %s: the manifest read back from %s differs from the one written: %w", p.BackupID, dst.store, ErrDamaged)
	}
	res.Manifest = stored
	res.ChunksVerified, err = dst.checkPresent(ctx, stored)
	return res, err
}

// copyStream writes one source stream into sw, chunk by chunk.
func copyStream(ctx context.Context, src *Repo, b *Backup, sw *StreamWriter, backupID string, ref *v1.StreamRef, sameIDs bool, read, skipped *atomic.Int64) error {
	var buf []byte
	for _, c := range ref.GetChunks() {
		id, err := chunkIDFromBytes(c.GetId())
		if err != nil {
			return fmt.Errorf("backup %s, stream %s: %w", backupID, ref.GetName(), err)
		}
		if sameIDs && int(c.GetSize()) <= sw.size {
			ok, err := sw.reuseChunk(ctx, id, c.GetSize())
			if err != nil {
				return err
			}
			if ok {
				skipped.Add(1)
				continue
			}
		}
		plain, err := src.fetchChunk(ctx, id, int64(c.GetStoredSize()), buf)
		if err != nil {
			return fmt.Errorf("backup %s, stream %s, chunk %s in %s: %w", backupID, ref.GetName(), id, src.store, err)
		}
		buf = plain[:0]
		read.Add(1)
		if _, err := sw.Write(plain); err != nil {
			return err
		}
		// Keep the source's chunk boundary.
		if err := sw.flush(); err != nil {
			return err
		}
	}
	return sw.Close()
}

// reuseChunk appends chunk id to the stream without its bytes when the
// repository holds it and gc has not condemned it (the writer's marker
// refers to it first, as for any deduplicated chunk). The stream must be
// at a chunk boundary.
func (s *StreamWriter) reuseChunk(ctx context.Context, id ChunkID, size uint32) (bool, error) {
	if len(s.buf) != 0 {
		return false, fmt.Errorf("stream %s: reusing a chunk in the middle of one", s.name)
	}
	doomed, err := s.b.mark.refer(ctx, id)
	if err != nil {
		return false, err
	}
	stored, ok := s.b.repo.known(id)
	if doomed || !ok {
		return false, nil
	}
	s.ref.Chunks = append(s.ref.Chunks, &v1.ChunkRef{Id: id[:], Size: size, StoredSize: uint32(stored)})
	s.ref.Size += uint64(size)
	s.b.logical.Add(int64(size))
	s.b.reused.Add(1)
	return true, nil
}

// sameBackup reports how two manifests of one id differ in what a restore
// reads: the streams' names, sizes and content (by SHA-256 when recorded,
// else by chunk count), the engine and the consistency point.
func sameBackup(a, b *v1.Manifest) error {
	if a.GetEngine() != b.GetEngine() || a.GetInstance() != b.GetInstance() || !proto.Equal(a.GetConsistency(), b.GetConsistency()) {
		return fmt.Errorf("instance, engine or consistency point differ: %w", ErrDamaged)
	}
	if len(a.GetStreams()) != len(b.GetStreams()) {
		return fmt.Errorf("%d streams, the source has %d: %w", len(b.GetStreams()), len(a.GetStreams()), ErrDamaged)
	}
	for i, s := range a.GetStreams() {
		t := b.GetStreams()[i]
		if s.GetName() != t.GetName() || s.GetSize() != t.GetSize() || !bytes.Equal(s.GetSha256(), t.GetSha256()) {
			return fmt.Errorf("stream %s differs: %w", s.GetName(), ErrDamaged)
		}
	}
	return nil
}

// checkPresent checks that every chunk m names is stored with its
// recorded size; it returns how many distinct chunks it checked.
func (r *Repo) checkPresent(ctx context.Context, m *v1.Manifest) (int, error) {
	want := map[ChunkID]int64{}
	for _, s := range m.GetStreams() {
		for _, c := range s.GetChunks() {
			id, err := chunkIDFromBytes(c.GetId())
			if err != nil {
				return 0, fmt.Errorf("backup %s, stream %s: %w", m.GetBackupId(), s.GetName(), err)
			}
			want[id] = int64(c.GetStoredSize())
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for id, size := range want {
		g.Go(func() error {
			oi, err := r.store.Stat(gctx, chunkKey(id))
			if errors.Is(err, storage.ErrNotFound) {
				return fmt.Errorf("backup %s: chunk %s is missing from %s after the copy: %w", m.GetBackupId(), id, r.store, ErrDamaged)
			}
			if err != nil {
				return fmt.Errorf("backup %s: checking chunk %s in %s: %w", m.GetBackupId(), id, r.store, err)
			}
			if oi.Size != size {
				return fmt.Errorf("backup %s: chunk %s in %s has %d bytes, the manifest says %d: %w", m.GetBackupId(), id, r.store, oi.Size, size, ErrDamaged)
			}
			return nil
		})
	}
	return len(want), g.Wait()
}

// CopyRetry says how CopyWithRetry retries.
type CopyRetry struct {
	// Attempts in all; 0 or 1: one.
	Attempts int
	// Backoff before the second attempt, doubled before each next one up
	// to MaxBackoff (0: 5 minutes).
	Backoff, MaxBackoff time.Duration
	// OnRetry, when set, is told of each failed attempt about to be
	// retried.
	OnRetry func(attempt int, err error, wait time.Duration)
}

// CopyWithRetry runs Copy until it succeeds, fails for a reason another
// attempt cannot change (a damaged or missing source backup, a wrong key,
// a clashing id), or runs out of attempts: a destination that is down for
// a while. Each storage request is already retried briefly by the store's
// own wrapper; this is the longer outage. A failed attempt leaves no
// manifest; the next stores only what is still missing. The source is
// only ever read.
func CopyWithRetry(ctx context.Context, src, dst *Repo, p CopyParams, r CopyRetry) (*CopyResult, error) {
	wait, limit := r.Backoff, r.MaxBackoff
	if limit <= 0 {
		limit = 5 * time.Minute
	}
	for attempt := 1; ; attempt++ {
		res, err := Copy(ctx, src, dst, p)
		if err == nil || attempt >= r.Attempts || permanentCopyError(err) || ctx.Err() != nil {
			if err != nil && attempt > 1 {
				err = fmt.Errorf("after %d attempts: %w", attempt, err)
			}
			return res, err
		}
		if r.OnRetry != nil {
			r.OnRetry(attempt, err, wait)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, fmt.Errorf("copy of backup %s: %w (after %d attempts, the last: %w)", p.BackupID, ctx.Err(), attempt, err)
		}
		wait = min(2*wait, limit)
	}
}

func permanentCopyError(err error) bool {
	for _, e := range []error{ErrDamaged, ErrBackupMissing, ErrBadFormat, ErrWrongKey, ErrNeedKey, ErrNoRepository} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

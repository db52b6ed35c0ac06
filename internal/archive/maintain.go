package archive

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/tidemark-backup/tidemark/internal/storage"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// VerifyOptions select what Verify checks.
type VerifyOptions struct {
	BackupID string // "": every backup
	// ReadData downloads and decodes every referenced chunk once; without
	// it only presence and stored size are checked.
	ReadData bool
	Workers  int
	// Progress is called after each chunk checked with (done, total).
	Progress func(done, total int64)
}

// ChunkProblem is one damaged or missing chunk and every backup that needs it.
type ChunkProblem struct {
	Chunk   string   `json:"chunk"`
	Problem string   `json:"problem"`
	Backups []string `json:"backups"`
	Streams []string `json:"streams"` // "backup/stream" of every reference
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	Backups       int            `json:"backups"`
	Chunks        int            `json:"chunks"`
	BytesRead     int64          `json:"bytes_read"`
	Problems      []ChunkProblem `json:"problems"`
	BadManifests  []string       `json:"bad_manifests,omitempty"`
	DamagedBackup []string       `json:"damaged_backups"`
	// Objects is how many sealed objects (binlog segments, pieces and
	// index entries) were read and checked, with ReadData on a whole
	// repository; BadObjects names those that did not decode.
	Objects    int      `json:"objects"`
	BadObjects []string `json:"bad_objects"`
}

// OK reports whether nothing was found wrong.
func (r *VerifyReport) OK() bool {
	return len(r.Problems) == 0 && len(r.BadManifests) == 0 && len(r.BadObjects) == 0
}

type chunkUse struct {
	storedSize int64
	refs       []string // backup/stream
	backups    map[string]bool
}

// Verify checks backups' structure, and with ReadData every byte. It returns
// a report of every problem rather than stopping at the first; the error is
// only for failures to run (storage unreachable).
func (r *Repo) Verify(ctx context.Context, opts VerifyOptions) (*VerifyReport, error) {
	rep := &VerifyReport{Problems: []ChunkProblem{}, DamagedBackup: []string{}, BadObjects: []string{}}
	var manifests []*v1.Manifest
	if opts.BackupID != "" {
		m, err := r.LoadManifest(ctx, opts.BackupID)
		if err != nil {
			return nil, err
		}
		manifests = []*v1.Manifest{m}
	} else {
		ids, err := r.BackupIDs(ctx)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			m, err := r.LoadManifest(ctx, id)
			if err != nil {
				if errors.Is(err, ErrDamaged) || errors.Is(err, ErrBadFormat) {
					rep.BadManifests = append(rep.BadManifests, id)
					rep.DamagedBackup = append(rep.DamagedBackup, id)
					continue
				}
				return nil, err
			}
			manifests = append(manifests, m)
		}
	}
	rep.Backups = len(manifests)
	uses := map[ChunkID]*chunkUse{}
	for _, m := range manifests {
		for _, s := range m.Streams {
			for _, c := range s.Chunks {
				id, err := chunkIDFromBytes(c.Id)
				if err != nil {
					rep.BadManifests = append(rep.BadManifests, m.BackupId)
					continue
				}
				u := uses[id]
				if u == nil {
					u = &chunkUse{storedSize: int64(c.StoredSize), backups: map[string]bool{}}
					uses[id] = u
				}
				ref := m.BackupId + "/" + s.Name
				if len(u.refs) == 0 || u.refs[len(u.refs)-1] != ref {
					u.refs = append(u.refs, ref)
				}
				u.backups[m.BackupId] = true
			}
		}
	}
	rep.Chunks = len(uses)

	// Presence and size from one listing, not a request per chunk.
	present := map[ChunkID]int64{}
	if err := r.store.List(ctx, chunkPrefix, func(oi storage.ObjectInfo) error {
		if id, err := ParseChunkID(oi.Key[strings.LastIndexByte(oi.Key, '/')+1:]); err == nil {
			present[id] = oi.Size
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing chunks in %s: %w", r.store, err)
	}
	var mu sync.Mutex
	problem := func(id ChunkID, what string) {
		u := uses[id]
		bs := make([]string, 0, len(u.backups))
		for b := range u.backups {
			bs = append(bs, b)
		}
		slices.Sort(bs)
		mu.Lock()
		rep.Problems = append(rep.Problems, ChunkProblem{Chunk: id.String(), Problem: what, Backups: bs, Streams: u.refs})
		mu.Unlock()
	}
	var toRead []ChunkID
	for id, u := range uses {
		size, ok := present[id]
		switch {
		case !ok:
			problem(id, "missing")
		case size != u.storedSize:
			problem(id, fmt.Sprintf("stored object has %d bytes, manifest says %d", size, u.storedSize))
		case opts.ReadData:
			toRead = append(toRead, id)
		}
	}
	if opts.ReadData {
		workers := opts.Workers
		if workers <= 0 {
			workers = 2 * runtime.GOMAXPROCS(0)
		}
		var done, read atomic.Int64
		total := int64(len(toRead))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(workers)
		for _, id := range toRead {
			g.Go(func() error {
				plain, err := r.fetchChunk(gctx, id, uses[id].storedSize, nil)
				if err != nil {
					if !errors.Is(err, ErrDamaged) {
						return fmt.Errorf("reading chunk %s: %w", id, err)
					}
					problem(id, err.Error())
				}
				read.Add(int64(len(plain)))
				if opts.Progress != nil {
					opts.Progress(done.Add(1), total)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		rep.BytesRead = read.Load()
	}
	if opts.ReadData && opts.BackupID == "" {
		if err := r.verifyObjects(ctx, rep); err != nil {
			return nil, err
		}
	}
	damaged := map[string]bool{}
	for _, p := range rep.Problems {
		for _, b := range p.Backups {
			damaged[b] = true
		}
	}
	for _, b := range rep.BadManifests {
		damaged[b] = true
	}
	rep.DamagedBackup = rep.DamagedBackup[:0]
	for b := range damaged {
		rep.DamagedBackup = append(rep.DamagedBackup, b)
	}
	slices.Sort(rep.DamagedBackup)
	slices.SortFunc(rep.Problems, func(a, b ChunkProblem) int { return strings.Compare(a.Chunk, b.Chunk) })
	return rep, nil
}

// verifyObjects reads every sealed object back: decryption (AEAD bound to
// its name) and its plaintext checksum must hold. A binlog segment that a
// listing shows but that was deleted meanwhile (compaction) is not damage.
func (r *Repo) verifyObjects(ctx context.Context, rep *VerifyReport) error {
	var names []string
	if err := r.ListObjects(ctx, "", func(oi ObjectInfo) error {
		names = append(names, oi.Name)
		return nil
	}); err != nil {
		return fmt.Errorf("listing objects: %w", err)
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, name := range names {
		g.Go(func() error {
			_, err := r.GetObject(gctx, name)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				rep.Objects++
			case errors.Is(err, storage.ErrNotFound):
			case errors.Is(err, ErrDamaged):
				rep.Objects++
				rep.BadObjects = append(rep.BadObjects, name)
			default:
				return err
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	slices.Sort(rep.BadObjects)
	return nil
}

// Stats summarise a repository.
type Stats struct {
	Backups       int     `json:"backups"`
	Chunks        int     `json:"chunks"`
	StoredBytes   int64   `json:"stored_bytes"`  // every chunk object in the store
	LogicalBytes  int64   `json:"logical_bytes"` // sum of every backup's plaintext
	ReferencedRaw int64   `json:"referenced_plain_bytes"`
	DedupRatio    float64 `json:"dedup_ratio"` // logical / stored
	Encryption    string  `json:"encryption"`
	Compression   string  `json:"compression"`
}

// Stats counts backups, chunks and bytes.
func (r *Repo) Stats(ctx context.Context) (*Stats, error) {
	manifests, err := r.Manifests(ctx)
	if err != nil {
		return nil, err
	}
	st := &Stats{Backups: len(manifests), Encryption: r.cfg.Encryption, Compression: r.cfg.Compression}
	uniq := map[string]uint32{}
	for _, m := range manifests {
		st.LogicalBytes += int64(m.LogicalBytes)
		for _, s := range m.Streams {
			for _, c := range s.Chunks {
				uniq[string(c.Id)] = c.Size
			}
		}
	}
	for _, sz := range uniq {
		st.ReferencedRaw += int64(sz)
	}
	if err := r.store.List(ctx, chunkPrefix, func(oi storage.ObjectInfo) error {
		st.Chunks++
		st.StoredBytes += oi.Size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing chunks: %w", err)
	}
	if st.StoredBytes > 0 {
		st.DedupRatio = float64(st.LogicalBytes) / float64(st.StoredBytes)
	}
	return st, nil
}

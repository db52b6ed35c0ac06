package archive

import (
	"bytes"

	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/throttle"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

// Garbage collection in two phases, after kopia's rather than restic's:
// nothing stops a backup while gc runs, and a chunk is deleted only after
// every running backup has said it knows the chunk is going.
//
// Phase one (run N): chunks that no manifest references and that are older
// than the grace period are condemned: their ids go into a condemnation
// record, gc/condemned/<run>. Nothing is deleted.
//
// Every running backup keeps a marker under locks/ that it rewrites every
// refresh interval. On each rewrite it reads the records and acknowledges
// the new ones in its marker, listing there as rescued every condemned
// chunk it already refers to. From then on, before it refers to a chunk of
// a known record it rescues it the same way (marker first, then it looks
// whether that record's deletion has begun; if so it waits for the end and
// stores the chunk again from the plaintext it holds).
//
// Phase two (a later run): a record that every live backup has
// acknowledged is swept. gc writes gc/deleting/<record>, then reads every
// marker's rescued chunks, then lists the manifests, and deletes the
// record's chunks that neither mention. A backup that rescued a chunk
// before it saw the deleting marker is read by the sweep; one that saw it
// waits. A backup that committed its manifest before it removed its marker
// is seen in one of the two. Backups that started after the record was
// written read it before their first chunk.
//
// A backup whose marker went stale (its process paused or died) is fenced
// with a tombstone at its manifest's key, then its marker is removed: it can
// never commit, so the chunks it meant to reuse are not needed.
//
// Sealed objects (objects/, binlog segments and their index) and the
// writers of them are outside this protocol: gc never lists, reads or
// deletes under objects/, and a writer of objects takes no marker or lock,
// so neither can block the other.
const (
	gcPrefix       = "gc/"
	condemnedDir   = gcPrefix + "condemned/"
	deletingDir    = gcPrefix + "deleting/"
	sweptDir       = gcPrefix + "swept/"
	fencedDir      = gcPrefix + "fenced/"
	gcRecordFormat = 1
	// gcMarkerKeep is how long swept and fence markers stay. A process
	// whose chunk index is older than a swept marker reloads it; indexes
	// are reloaded after indexMaxAge anyway, far less than this.
	gcMarkerKeep = 7 * 24 * time.Hour
)

func condemnedKey(name string) string { return condemnedDir + name }
func deletingKey(name string) string  { return deletingDir + name }
func sweptKey(name string) string     { return sweptDir + name }

// condemned is one record's chunks, sorted by id.
type condemned struct {
	ids   []ChunkID
	sizes []uint32
}

func (c *condemned) has(id ChunkID) bool {
	_, ok := slices.BinarySearchFunc(c.ids, id, cmpID)
	return ok
}

func cmpID(a, b ChunkID) int { return bytes.Compare(a[:], b[:]) }

type recordHeader struct {
	Format int    `json:"format"`
	Run    string `json:"run"`
	Chunks int    `json:"chunks"`
	Bytes  int64  `json:"bytes"`
}

// encodeRecord is a JSON header line, then 36 bytes per chunk (id, stored
// size big-endian), compressed and sealed like any blob of the repository.
func (r *Repo) encodeRecord(name, run string, c *condemned) ([]byte, error) {
	var total int64
	for _, s := range c.sizes {
		total += int64(s)
	}
	hdr, err := json.Marshal(recordHeader{Format: gcRecordFormat, Run: run, Chunks: len(c.ids), Bytes: total})
	if err != nil {
		return nil, err
	}
	body := make([]byte, 0, len(hdr)+1+36*len(c.ids))
	body = append(append(body, hdr...), '\n')
	for i, id := range c.ids {
		body = binary.BigEndian.AppendUint32(append(body, id[:]...), c.sizes[i])
	}
	return r.codec.encodeNamed(condemnedKey(name), body, "zstd", 1)
}

func (r *Repo) loadRecord(ctx context.Context, name string) (*condemned, error) {
	key := condemnedKey(name)
	raw, err := r.readBlob(ctx, key, -1)
	if err != nil {
		return nil, err
	}
	body, err := r.codec.decodeNamed(nil, key, raw, maxBlobPlain)
	if err != nil {
		return nil, fmt.Errorf("condemnation record %s: %w: %w", name, ErrDamaged, err)
	}
	line, rest, ok := bytes.Cut(body, []byte{'\n'})
	var hdr recordHeader
	if !ok || json.Unmarshal(line, &hdr) != nil || hdr.Format != gcRecordFormat || len(rest) != 36*hdr.Chunks {
		return nil, fmt.Errorf("condemnation record %s: %w: header %q does not describe its %d bytes", name, ErrDamaged, line, len(rest))
	}
	c := &condemned{ids: make([]ChunkID, hdr.Chunks), sizes: make([]uint32, hdr.Chunks)}
	for i := range c.ids {
		c.ids[i] = ChunkID(rest[36*i : 36*i+32])
		c.sizes[i] = binary.BigEndian.Uint32(rest[36*i+32:])
	}
	if !slices.IsSortedFunc(c.ids, cmpID) {
		return nil, fmt.Errorf("condemnation record %s: %w: ids not sorted", name, ErrDamaged)
	}
	return c, nil
}

// gcState is what the gc/ namespace holds: the condemnation records (read
// through a per-Repo cache, as records never change once written) with
// their store times, and the swept markers.
type gcState struct {
	names  []string // records, oldest first
	recs   map[string]*condemned
	times  map[string]time.Time
	swept  map[string]time.Time
	fenced map[string]time.Time
}

func (r *Repo) readGCState(ctx context.Context) (*gcState, error) {
	st := &gcState{recs: map[string]*condemned{}, times: map[string]time.Time{}, swept: map[string]time.Time{}, fenced: map[string]time.Time{}}
	if err := r.store.List(ctx, gcPrefix, func(oi storage.ObjectInfo) error {
		switch {
		case strings.HasPrefix(oi.Key, condemnedDir):
			name := strings.TrimPrefix(oi.Key, condemnedDir)
			st.names = append(st.names, name)
			st.times[name] = oi.ModTime
		case strings.HasPrefix(oi.Key, sweptDir):
			st.swept[strings.TrimPrefix(oi.Key, sweptDir)] = oi.ModTime
		case strings.HasPrefix(oi.Key, fencedDir):
			st.fenced[strings.TrimPrefix(oi.Key, fencedDir)] = oi.ModTime
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing gc state in %s: %w", r.store, err)
	}
	slices.Sort(st.names)
	live := st.names[:0]
	for _, name := range st.names {
		r.condMu.Lock()
		c := r.cond[name]
		r.condMu.Unlock()
		if c == nil {
			var err error
			c, err = r.loadRecord(ctx, name)
			if errors.Is(err, storage.ErrNotFound) {
				continue // swept while we listed
			}
			if err != nil {
				return nil, err
			}
			r.condMu.Lock()
			if r.cond == nil {
				r.cond = map[string]*condemned{}
			}
			r.cond[name] = c
			r.condMu.Unlock()
		}
		st.recs[name] = c
		live = append(live, name)
	}
	st.names = live
	r.condMu.Lock()
	for name := range r.cond {
		if st.recs[name] == nil {
			delete(r.cond, name)
		}
	}
	r.condMu.Unlock()
	return st, nil
}

// GCOptions tune a garbage collection.
type GCOptions struct {
	// Grace protects unreferenced chunks younger than this (by the store's
	// clock) from being condemned. Backups in flight are protected by the
	// protocol, not by Grace; it saves work for chunks about to be used.
	Grace  time.Duration
	DryRun bool
	// Workers bounds the deletes in flight (0: 16). Fewer spare a store
	// that binlog streams upload to at the cost of a longer sweep.
	Workers int
	// MaxRate bounds the requests per second the run sends to the store:
	// every get, stat, put and delete, and every 1,000 objects listed
	// (one S3 list page), shared by the listing, the manifest reads and
	// the deletes (internal/storage/throttle). 0 means no bound; negative
	// is an error. Only this run is slowed: backups and streams on the
	// same Repo are not, nor is the run's own lock, whose refreshes must
	// never wait behind its deletes.
	MaxRate float64
}

// DefaultGCMaxRate is the bound on a gc run's requests per second that
// `repo gc` uses unless told otherwise (GCOptions.MaxRate; the zero
// GCOptions has none). A sweep's deletes are most of a run's requests:
// 200 a second is a fifth of what a single small MinIO deletes here with
// 16 in flight, and far below an S3 prefix's 3,500, so backups and binlog
// streams keep the store; 100,000 deletes take about 8 minutes.
const DefaultGCMaxRate = 200

// GCRecord is one condemnation record as a gc run found or left it.
type GCRecord struct {
	Record      string    `json:"record"`
	CondemnedAt time.Time `json:"condemned_at"` // the store's time when the record was written
	Chunks      int       `json:"chunks"`
	Bytes       int64     `json:"bytes"`
	// State: "new" (written by this run), "waiting" (some backups have not
	// acknowledged it yet), "deletable" (the next run deletes it),
	// "deleted" (swept by this run).
	State      string   `json:"state"`
	WaitingFor []string `json:"waiting_for,omitempty"`
	// DeletableAt is when the record becomes deletable at the latest: every
	// backup still to acknowledge it will have done so, ended, or gone
	// stale and been fenced by then. The first gc run after it deletes.
	DeletableAt time.Time `json:"deletable_at"`
	Rescued     int       `json:"chunks_rescued,omitempty"`  // spared: referenced again
	Deleted     int       `json:"chunks_deleted,omitempty"`  // in a dry run: would be deleted now
	Retained    int       `json:"chunks_retained,omitempty"` // the store refused: under retention
}

// GCReport is what a collection found and did.
type GCReport struct {
	Backups         int   `json:"backups"`
	ChunksTotal     int   `json:"chunks_total"`
	ChunksReferred  int   `json:"chunks_referenced"`
	ChunksCondemned int   `json:"chunks_condemned"` // newly, by this run
	BytesCondemned  int64 `json:"bytes_condemned"`
	ChunksDeleted   int   `json:"chunks_deleted"` // in a dry run: would be deleted by this run
	BytesDeleted    int64 `json:"bytes_deleted"`
	ChunksRescued   int   `json:"chunks_rescued"`
	ChunksInGrace   int   `json:"chunks_in_grace"`
	// ChunksRetained are unreferenced chunks kept because they are under
	// Object Lock retention: not condemned while the repository's lock
	// period says they are, or condemned and then refused by the store.
	// A later run deletes them once the retention ends.
	ChunksRetained  int        `json:"chunks_retained"`
	RetainedUntil   time.Time  `json:"retained_until,omitzero"` // when the last of them is released, as far as known
	MissingReferred int        `json:"chunks_missing"`
	BackupsRunning  []string   `json:"backups_running"`
	BackupsFenced   []string   `json:"backups_fenced"` // stale markers: their backups can no longer commit
	Records         []GCRecord `json:"records"`
	DryRun          bool       `json:"dry_run"`
}

// gcTestHook, when set by a test, is called at named steps of a gc run.
var gcTestHook func(step string)

func gcStep(step string) {
	if gcTestHook != nil {
		gcTestHook(step)
	}
}

// GC sweeps condemnation records that every running backup has
// acknowledged, then condemns what no manifest references now. A chunk is
// thus deleted by the second run after it became unreferenced and older
// than the grace period (later when a backup is paused: until it resumes
// or goes stale). Backups, binlog streams, copies and restores run
// meanwhile; only two gc runs exclude each other (ErrLocked). A manifest
// that cannot be read stops the run before it deletes anything. A dry run
// writes nothing and reports what the records hold and when they become
// deletable.
func (r *Repo) GC(ctx context.Context, opts GCOptions) (*GCReport, error) {
	if !(opts.MaxRate >= 0) || math.IsInf(opts.MaxRate, 1) {
		return nil, fmt.Errorf("gc: max rate %v requests/s: want a positive number, or 0 for no bound", opts.MaxRate)
	}
	if opts.MaxRate == 0 {
		return r.gc(ctx, opts, r)
	}
	ts, err := throttle.Wrap(r.store, opts.MaxRate)
	if err != nil {
		return nil, fmt.Errorf("gc: %w", err)
	}
	return r.through(ts).gc(ctx, opts, r)
}

// gc is GC with its requests sent through r's store, its lock through
// locker's: a throttled view (see through) and the Repo it views.
func (r *Repo) gc(ctx context.Context, opts GCOptions, locker *Repo) (*GCReport, error) {
	t := r.lockTiming()
	rep := &GCReport{DryRun: opts.DryRun, Records: []GCRecord{}, BackupsRunning: []string{}, BackupsFenced: []string{}}
	now := time.Now
	var lock *gcLock
	run := newID(time.Now())
	if !opts.DryRun {
		var err error
		lock, err = locker.acquireGCLock(ctx, run)
		if err != nil {
			return nil, err
		}
		lctx, stop := context.WithCancel(ctx)
		loopDone := make(chan struct{})
		go func() { lock.refreshLoop(lctx); close(loopDone) }()
		defer func() {
			stop()
			<-loopDone
			_ = lock.release()
		}()
		now = lock.clock.now
	}
	gcStep("locked")

	// Running backups: stale ones are fenced, live ones are waited for.
	writers, err := r.listLocks(ctx, lockBackup)
	if err != nil {
		return nil, fmt.Errorf("gc stopped, nothing deleted: %w", err)
	}
	var live []heldLock
	for _, w := range writers {
		if now().Sub(w.oi.ModTime) > t.stale {
			// Looked at again just before judging: had this run been
			// paused since the listing, a healthy backup would look
			// stale by the listing's time and be fenced for nothing.
			oi, err := r.store.Stat(ctx, w.key)
			if errors.Is(err, storage.ErrNotFound) {
				continue // ended meanwhile
			}
			if err != nil {
				return rep, fmt.Errorf("gc stopped, nothing deleted: %w", err)
			}
			w.oi.ModTime = oi.ModTime
		}
		if now().Sub(w.oi.ModTime) <= t.stale {
			live = append(live, w)
			rep.BackupsRunning = append(rep.BackupsRunning, w.info.Owner)
			continue
		}
		rep.BackupsFenced = append(rep.BackupsFenced, w.info.Owner)
		if opts.DryRun {
			continue
		}
		if err := lock.authorize(ctx); err != nil {
			return rep, err
		}
		if err := r.fenceBackup(ctx, w); err != nil {
			return rep, fmt.Errorf("gc stopped, nothing deleted: %w", err)
		}
	}

	st, err := r.readGCState(ctx)
	if err != nil {
		return rep, fmt.Errorf("gc stopped, nothing deleted: %w", err)
	}
	var sweep []int // indexes into rep.Records
	for _, name := range st.names {
		c := st.recs[name]
		rec := GCRecord{Record: name, CondemnedAt: st.times[name], Chunks: len(c.ids), State: "deletable", DeletableAt: now()}
		for _, s := range c.sizes {
			rec.Bytes += int64(s)
		}
		_, err := r.store.Stat(ctx, deletingKey(name))
		deleting := err == nil
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return rep, fmt.Errorf("gc stopped, nothing deleted: %w", err)
		}
		if !deleting {
			for _, w := range live {
				if !slices.Contains(w.info.Acked, name) {
					rec.WaitingFor = append(rec.WaitingFor, w.info.Owner)
					if d := w.oi.ModTime.Add(t.stale); d.After(rec.DeletableAt) {
						rec.DeletableAt = d
					}
				}
			}
		}
		if len(rec.WaitingFor) > 0 {
			rec.State = "waiting"
		} else {
			sweep = append(sweep, len(rep.Records))
		}
		rep.Records = append(rep.Records, rec)
	}

	// Phase two: deleting markers, then rescues, then manifests.
	if !opts.DryRun {
		// Every step that writes checks the lock first: a run fenced
		// while paused stops at its next step.
		if err := lock.authorize(ctx); err != nil {
			return rep, err
		}
		for _, i := range sweep {
			name := rep.Records[i].Record
			if err := r.store.Put(ctx, deletingKey(name), strings.NewReader(run), int64(len(run)), storage.PutOptions{}); err != nil {
				return rep, fmt.Errorf("gc stopped, nothing deleted: marking record %s: %w", name, err)
			}
		}
	}
	gcStep("deleting-marked")
	rescued := map[ChunkID]bool{}
	markers, err := r.listLocks(ctx, lockBackup)
	if err != nil {
		return rep, fmt.Errorf("gc stopped, nothing deleted: %w", err)
	}
	for _, m := range markers {
		for _, h := range m.info.Rescued {
			if id, err := ParseChunkID(h); err == nil {
				rescued[id] = true
			}
		}
	}
	referenced := make(map[ChunkID]struct{})
	if err := r.eachManifest(ctx, func(m *v1.Manifest) error {
		rep.Backups++
		for _, s := range m.Streams {
			for _, c := range s.Chunks {
				id, err := chunkIDFromBytes(c.Id)
				if err != nil {
					return fmt.Errorf("backup %s: %w", m.BackupId, err)
				}
				referenced[id] = struct{}{}
			}
		}
		return nil
	}); err != nil {
		return rep, fmt.Errorf("gc stopped, nothing deleted: %w", err)
	}
	rep.ChunksReferred = len(referenced)
	gcStep("references-read")

	swept := map[string]bool{}
	if opts.DryRun {
		// What the sweep would delete now, by the same rule.
		for _, i := range sweep {
			rec := &rep.Records[i]
			c := st.recs[rec.Record]
			for j, id := range c.ids {
				if _, ok := referenced[id]; ok || rescued[id] {
					rec.Rescued++
					continue
				}
				rec.Deleted++
				rep.BytesDeleted += int64(c.sizes[j])
			}
			rep.ChunksDeleted += rec.Deleted
			rep.ChunksRescued += rec.Rescued
		}
	} else {
		for _, i := range sweep {
			rec := &rep.Records[i]
			retained, err := r.sweepRecord(ctx, lock, rec, st.recs[rec.Record], referenced, rescued, opts.Workers)
			if err != nil {
				return rep, err
			}
			rep.ChunksDeleted += rec.Deleted
			rep.ChunksRescued += rec.Rescued
			rep.ChunksRetained += rec.Retained
			for j, id := range st.recs[rec.Record].ids {
				if _, ok := referenced[id]; !ok && !rescued[id] && !retained[id] {
					rep.BytesDeleted += int64(st.recs[rec.Record].sizes[j])
				}
			}
			swept[rec.Record] = true
		}
	}
	gcStep("swept")

	// Phase one: condemn what no manifest or backup refers to, and no
	// remaining record holds already.
	pending := func(id ChunkID) bool {
		for _, name := range st.names {
			if !swept[name] && st.recs[name].has(id) {
				return true
			}
		}
		return false
	}
	fresh := &condemned{}
	seen := 0
	cutoff := now().Add(-opts.Grace)
	if err := r.store.List(ctx, chunkPrefix, func(oi storage.ObjectInfo) error {
		rep.ChunksTotal++
		id, err := ParseChunkID(oi.Key[strings.LastIndexByte(oi.Key, '/')+1:])
		if err != nil {
			return nil //nolint:nilerr // a stray object is not ours to delete
		}
		if _, ok := referenced[id]; ok {
			seen++
			return nil
		}
		if rescued[id] || pending(id) {
			return nil
		}
		if oi.ModTime.After(cutoff) {
			rep.ChunksInGrace++
			return nil
		}
		if until := r.retainedUntil(oi.ModTime); until.After(now()) {
			rep.ChunksRetained++
			if until.After(rep.RetainedUntil) {
				rep.RetainedUntil = until
			}
			return nil
		}
		fresh.ids = append(fresh.ids, id)
		fresh.sizes = append(fresh.sizes, uint32(min(oi.Size, 1<<32-1)))
		return nil
	}); err != nil {
		return rep, fmt.Errorf("listing chunks: %w", err)
	}
	rep.MissingReferred = len(referenced) - seen
	if len(fresh.ids) > 0 {
		idx := make([]int, len(fresh.ids))
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(a, b int) int { return cmpID(fresh.ids[a], fresh.ids[b]) })
		sorted := &condemned{ids: make([]ChunkID, len(idx)), sizes: make([]uint32, len(idx))}
		for i, j := range idx {
			sorted.ids[i], sorted.sizes[i] = fresh.ids[j], fresh.sizes[j]
		}
		rec := GCRecord{Record: run, CondemnedAt: now(), Chunks: len(sorted.ids), State: "new", DeletableAt: now().Add(t.refresh)}
		for _, s := range sorted.sizes {
			rec.Bytes += int64(s)
		}
		for _, w := range live {
			rec.WaitingFor = append(rec.WaitingFor, w.info.Owner)
			if d := w.oi.ModTime.Add(t.stale); d.After(rec.DeletableAt) {
				rec.DeletableAt = d
			}
		}
		rep.ChunksCondemned, rep.BytesCondemned = rec.Chunks, rec.Bytes
		if !opts.DryRun {
			if err := lock.authorize(ctx); err != nil {
				return rep, err
			}
			blob, err := r.encodeRecord(run, run, sorted)
			if err != nil {
				return rep, err
			}
			if err := r.store.Put(ctx, condemnedKey(run), bytes.NewReader(blob), int64(len(blob)), storage.PutOptions{IfNotExists: true}); err != nil {
				return rep, fmt.Errorf("writing condemnation record %s: %w", run, err)
			}
			if oi, err := r.store.Stat(ctx, condemnedKey(run)); err == nil {
				rec.CondemnedAt = oi.ModTime
			}
		}
		rep.Records = append(rep.Records, rec)
	}

	if !opts.DryRun {
		for name, at := range st.swept {
			if now().Sub(at) > gcMarkerKeep {
				_ = r.store.Delete(ctx, sweptKey(name))
			}
		}
		for name, at := range st.fenced {
			if now().Sub(at) > gcMarkerKeep {
				_ = r.store.Delete(ctx, fenceKey(name))
			}
		}
	}
	return rep, nil
}

// fenceBackup stops a backup whose marker went stale: a tombstone at its
// manifest's key makes its own commit fail, then the marker goes. A real
// manifest already there means the backup committed: nothing to fence.
func (r *Repo) fenceBackup(ctx context.Context, w heldLock) error {
	id := w.info.Owner
	if ValidBackupID(id) == nil {
		err := r.store.Put(ctx, manifestKey(id), strings.NewReader(tombstone), int64(len(tombstone)), storage.PutOptions{IfNotExists: true})
		if err != nil && !errors.Is(err, storage.ErrExists) {
			return fmt.Errorf("fencing backup %s: %w", id, err)
		}
	}
	if err := r.store.Delete(ctx, w.key); err != nil {
		return fmt.Errorf("fencing backup %s: removing its lock: %w", id, err)
	}
	return nil
}

// sweepRecord deletes the record's chunks that nothing refers to, then the
// record. Every delete is authorized by the lock first and bounded in time,
// so a run paused past the stale time deletes nothing more when it wakes.
// It returns the chunks the store kept under retention.
func (r *Repo) sweepRecord(ctx context.Context, lock *gcLock, rec *GCRecord, c *condemned, referenced map[ChunkID]struct{}, rescued map[ChunkID]bool, workers int) (map[ChunkID]bool, error) {
	if workers <= 0 {
		workers = 16
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	// A rate bound's wait comes before the lock check, never inside the
	// delete's time bound: a delete waiting its turn for longer than that
	// would fail, and one allowed by an old check would land late.
	del, turn := r.store, func(context.Context) error { return nil }
	if ts, ok := r.store.(*throttle.Store); ok {
		del, turn = ts.Unwrap(), ts.Wait
	}
	var mu sync.Mutex
	retained := map[ChunkID]bool{}
	for _, id := range c.ids {
		if _, ok := referenced[id]; ok || rescued[id] {
			rec.Rescued++
			continue
		}
		g.Go(func() error {
			if err := turn(gctx); err != nil {
				return fmt.Errorf("record %s: deleting chunk %s: %w", rec.Record, id, err)
			}
			if err := lock.authorize(gctx); err != nil {
				return err
			}
			dctx, cancel := context.WithTimeout(gctx, lock.timing.stale/4)
			defer cancel()
			err := del.Delete(dctx, chunkKey(id))
			if errors.Is(err, storage.ErrRetained) {
				// Object Lock: the chunk stays until its retention ends,
				// and a later run condemns it again. Not an error: a
				// locked repository's gc must go on with the rest.
				mu.Lock()
				rec.Retained++
				retained[id] = true
				mu.Unlock()
				return nil
			}
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return fmt.Errorf("record %s: deleting chunk %s: %w", rec.Record, id, err)
			}
			ix := r
			if r.viewOf != nil {
				ix = r.viewOf
			}
			ix.indexMu.Lock()
			if ix.index != nil {
				delete(ix.index, id)
			}
			ix.indexMu.Unlock()
			mu.Lock()
			rec.Deleted++
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("gc stopped mid-sweep: %w", err)
	}
	gcStep("chunks-deleted")
	if err := lock.authorize(ctx); err != nil {
		return nil, err
	}
	name := rec.Record
	if err := r.store.Put(ctx, sweptKey(name), strings.NewReader(lock.run), int64(len(lock.run)), storage.PutOptions{}); err != nil {
		return nil, fmt.Errorf("record %s: %w", name, err)
	}
	if err := r.store.Delete(ctx, condemnedKey(name)); err != nil {
		return nil, fmt.Errorf("record %s: %w", name, err)
	}
	if err := r.store.Delete(ctx, deletingKey(name)); err != nil {
		return nil, fmt.Errorf("record %s: %w", name, err)
	}
	rec.State = "deleted"
	return retained, nil
}

// tombstone is what gc puts at the manifest key of a backup it fenced.
const tombstone = "tidemark: backup abandoned; its writer stopped refreshing its lock and was fenced by gc\n"

func isTombstone(b []byte) bool { return string(b) == tombstone }

// readTombstone reports whether key holds a tombstone.
func (r *Repo) readTombstone(ctx context.Context, key string) (bool, error) {
	rc, err := r.store.Get(ctx, key, 0, int64(len(tombstone))+1)
	if err != nil {
		return false, err
	}
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	if err != nil {
		return false, err
	}
	return isTombstone(b), nil
}

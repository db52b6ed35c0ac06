package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// writerMark is a running backup's side of the gc protocol (gc.go): its
// marker under locks/, the condemnation records it has acknowledged, the
// chunks it refers to and those it rescued.
type writerMark struct {
	r      *Repo
	backup string
	key    string
	timing lockTiming
	clock  storeClock

	writeMu sync.Mutex // one marker put at a time, each with the latest state

	mu      sync.Mutex
	info    lockInfo
	recs    map[string]*condemned // acknowledged records still in the store
	refd    map[ChunkID]struct{}  // every chunk the backup refers to so far
	rescued map[ChunkID]struct{}
}

// startMark writes the backup's marker, then reads the condemnation
// records and acknowledges them. Writing first means a record written
// after our listing belongs to a gc run that sees our marker and waits for
// our acknowledgement. It returns the swept markers it saw, for the index.
func (r *Repo) startMark(ctx context.Context, backup string) (*writerMark, *gcState, error) {
	host, _ := os.Hostname()
	m := &writerMark{r: r, backup: backup, key: lockKey(lockBackup, backup), timing: r.lockTiming(),
		info: lockInfo{Kind: lockBackup, Owner: backup, Host: host, PID: os.Getpid()},
		recs: map[string]*condemned{}, refd: map[ChunkID]struct{}{}, rescued: map[ChunkID]struct{}{}}
	if err := m.write(ctx, true); err != nil {
		// The put may have landed before the failure (a cancellation
		// between it and the read-back): remove what is ours, never a
		// marker another writer of this id holds.
		if !errors.Is(err, storage.ErrExists) {
			_ = m.release()
		}
		return nil, nil, fmt.Errorf("writing lock %s: %w", m.key, err)
	}
	// Written first, then listed: an older gc starting now sees our marker
	// and backs off, or we see its lock.
	gcs, err := r.listLocks(ctx, lockGC)
	if err != nil {
		_ = m.release()
		return nil, nil, err
	}
	for _, g := range gcs {
		if g.info.Protocol < markerProtocol && m.clock.now().Sub(g.oi.ModTime) <= m.timing.stale {
			_ = m.release()
			return nil, nil, fmt.Errorf("%w: gc %s of an older tidemark is running on %s (lock %s), and it deletes without the two-phase protocol; retry when it ends, and upgrade every host that runs gc",
				ErrLocked, g.info.Owner, g.info.Host, g.key)
		}
	}
	st, err := m.learn(ctx)
	if err != nil {
		_ = m.release()
		return nil, nil, err
	}
	return m, st, nil
}

// write puts the marker with the current state.
func (m *writerMark) write(ctx context.Context, create bool) error {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	m.mu.Lock()
	info := m.info
	info.Acked = make([]string, 0, len(m.recs))
	for name := range m.recs {
		info.Acked = append(info.Acked, name)
	}
	slices.Sort(info.Acked)
	info.Rescued = make([]string, 0, len(m.rescued))
	for id := range m.rescued {
		info.Rescued = append(info.Rescued, id.String())
	}
	m.mu.Unlock()
	oi, err := m.r.putMarker(ctx, m.key, &info, create)
	if err != nil {
		return err
	}
	m.clock.set(oi.ModTime, time.Now())
	return nil
}

// learn reads the records, acknowledges new ones (rescuing every chunk
// already referred to that they hold) and forgets finished ones (dropping
// their chunks from the index: they may be gone).
func (m *writerMark) learn(ctx context.Context) (*gcState, error) {
	st, err := m.r.readGCState(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", m.backup, err)
	}
	m.mu.Lock()
	changed := false
	for name, c := range m.recs {
		if st.recs[name] == nil {
			delete(m.recs, name)
			m.r.forget(c.ids)
			changed = true
		}
	}
	for _, name := range st.names {
		if m.recs[name] != nil {
			continue
		}
		c := st.recs[name]
		m.recs[name] = c
		changed = true
		for id := range m.refd {
			if c.has(id) {
				m.rescued[id] = struct{}{}
			}
		}
	}
	m.mu.Unlock()
	if changed {
		if err := m.write(ctx, false); err != nil {
			return nil, fmt.Errorf("backup %s: writing lock %s: %w", m.backup, m.key, err)
		}
	}
	return st, nil
}

// refer records that the backup refers to id. When a known record holds
// it, the chunk is rescued (the marker rewritten) and refer waits out any
// deletion of that record already begun; it then returns true, and the
// caller must store the chunk rather than trust that it exists.
func (m *writerMark) refer(ctx context.Context, id ChunkID) (bool, error) {
	m.mu.Lock()
	m.refd[id] = struct{}{}
	var in []string
	for name, c := range m.recs {
		if c.has(id) {
			in = append(in, name)
		}
	}
	_, done := m.rescued[id]
	if len(in) > 0 && !done {
		m.rescued[id] = struct{}{}
	}
	m.mu.Unlock()
	if len(in) == 0 {
		return false, nil
	}
	if !done {
		if err := m.write(ctx, false); err != nil {
			return true, fmt.Errorf("backup %s: rescuing condemned chunk %s: %w", m.backup, id, err)
		}
	}
	for _, name := range in {
		if err := m.waitSweep(ctx, name); err != nil {
			return true, fmt.Errorf("backup %s: chunk %s: %w", m.backup, id, err)
		}
	}
	return true, nil
}

// waitSweep returns once record name is not being deleted: the record is
// gone, or its deletion has not begun (then the sweep will read our
// rescue), or the gc run deleting it has ended or been fenced.
func (m *writerMark) waitSweep(ctx context.Context, name string) error {
	poll := min(m.timing.refresh/4, time.Second)
	for {
		if _, err := m.r.store.Stat(ctx, condemnedKey(name)); errors.Is(err, storage.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		owner, err := m.r.readSmall(ctx, deletingKey(name))
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		oi, err := m.r.store.Stat(ctx, lockKey(lockGC, string(owner)))
		if errors.Is(err, storage.ErrNotFound) {
			return nil // ended (its deletes are over) or fenced
		} else if err != nil {
			return err
		}
		if now := m.clock.now(); now.Sub(oi.ModTime) > m.timing.stale {
			dead, err := m.r.fenceGC(ctx, string(owner), now, m.timing)
			if err != nil {
				return err
			}
			if dead {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

// check fails when the backup was fenced while it was not running: a
// tombstone at its manifest key, or its marker gone. A marker re-created
// by a refresh racing the fence is harmless: the tombstone stops the
// commit.
func (m *writerMark) check(ctx context.Context) error {
	if _, err := m.r.store.Stat(ctx, manifestKey(m.backup)); err == nil {
		return fmt.Errorf("backup %s: %w: gc fenced it (its lock went stale); nothing was committed; run the backup again", m.backup, ErrFenced)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("backup %s: refreshing lock: %w", m.backup, err)
	}
	if _, err := m.r.store.Stat(ctx, m.key); errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("backup %s: %w: its lock %s was removed; nothing was committed; run the backup again", m.backup, ErrFenced, m.key)
	} else if err != nil {
		return fmt.Errorf("backup %s: refreshing lock: %w", m.backup, err)
	}
	return nil
}

func (m *writerMark) refreshLoop(ctx context.Context) error {
	t := time.NewTicker(m.timing.refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			err := m.check(ctx)
			if err == nil {
				if _, err = m.learn(ctx); err == nil {
					err = m.write(ctx, false)
				}
			}
			if err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
}

func (m *writerMark) release() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return m.r.store.Delete(ctx, m.key)
}

// forget drops chunks from the index: a finished record may have deleted
// them. A chunk that survived is found again by its create-only put.
func (r *Repo) forget(ids []ChunkID) {
	r.indexMu.Lock()
	if r.index != nil {
		for _, id := range ids {
			delete(r.index, id)
		}
	}
	r.indexMu.Unlock()
}

func (r *Repo) readSmall(ctx context.Context, key string) ([]byte, error) {
	rc, err := r.store.Get(ctx, key, 0, 4096)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	return io.ReadAll(rc)
}

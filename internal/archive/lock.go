package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// Liveness markers. A backup and a gc run each keep an object under locks/
// and rewrite it every refresh interval. They do not exclude each other
// (gc is a two-phase protocol, see gc.go); only two gc runs do.
//
// Whether a marker's owner is alive is decided by the marker's age in the
// store's own clock (its ModTime against the ModTime of an object we just
// wrote), never by the owner's clock nor by a process id. A pid proves
// nothing across containers or pid namespaces that share a host name, and a
// pid is reused; a random per-process nonce checked on the same host proves
// liveness no better, since the owner may be stopped (SIGSTOP, VM pause)
// and wake after we acted. What makes acting on a stale marker safe is a
// fence its owner cannot get past when it wakes:
//   - a backup's fence is a tombstone put create-only at its manifest's key:
//     its own create-only manifest put then fails, so it never commits;
//   - a gc run's fence is an object under gc/fenced/ that the run checks after
//     every refresh and before it deletes anything.
const (
	lockBackup = "backup"
	lockGC     = "gc"

	defaultLockRefresh = 2 * time.Minute
	defaultLockStale   = 10 * time.Minute
)

// ErrLocked means another gc run holds the gc lock.
var ErrLocked = errors.New("repository is locked")

// ErrFenced means this process lost its marker while it was not running
// (paused, stopped, cut off from the store for longer than the stale time),
// another process judged it dead and fenced it: it must stop without
// committing or deleting anything.
var ErrFenced = errors.New("lost its lock while paused")

// lockTiming is how often markers are rewritten and when one is abandoned.
type lockTiming struct {
	refresh, stale time.Duration
}

// SetLockTiming changes how often this process rewrites its markers and
// after how long without a rewrite another process's marker is judged
// abandoned. Every process using a repository must agree on stale; it is
// made short only by tests. stale must be at least three refreshes.
func (r *Repo) SetLockTiming(refresh, stale time.Duration) error {
	if refresh <= 0 || stale < 3*refresh {
		return fmt.Errorf("lock timing: refresh %s, stale %s: stale must be at least three refresh intervals", refresh, stale)
	}
	r.timingMu.Lock()
	r.timing = lockTiming{refresh: refresh, stale: stale}
	r.timingMu.Unlock()
	return nil
}

func (r *Repo) lockTiming() lockTiming {
	r.timingMu.Lock()
	defer r.timingMu.Unlock()
	if r.timing.refresh == 0 {
		return lockTiming{refresh: defaultLockRefresh, stale: defaultLockStale}
	}
	return r.timing
}

// lockInfo is a marker's content. Host, PID and Refreshed are for people
// reading it; no decision uses them.
type lockInfo struct {
	// Protocol is markerProtocol for markers of this two-phase gc; markers
	// written by older tidemark versions have none.
	Protocol  int       `json:"protocol,omitempty"`
	Kind      string    `json:"kind"`
	Owner     string    `json:"owner"` // backup id or gc run id
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Refreshed time.Time `json:"refreshed"`
	// Acked names every condemnation record the backup has taken into
	// account: its chunks from that record are in Rescued, and any it
	// stores later go through the rescue path.
	Acked []string `json:"acked,omitempty"`
	// Rescued lists condemned chunk ids (hex) the backup refers to.
	Rescued []string `json:"rescued,omitempty"`
}

// storeClock estimates the store's clock: the ModTime of an object we just
// wrote plus the time elapsed here since we read it. It runs behind the
// store's real time (the put landed before we read it), so ages computed
// from it are underestimated: the safe side for judging staleness.
type storeClock struct {
	mu   sync.Mutex
	base time.Time // store time
	at   time.Time // local monotonic reading when base was read
}

func (c *storeClock) set(base time.Time, at time.Time) {
	c.mu.Lock()
	c.base, c.at = base, at
	c.mu.Unlock()
}

func (c *storeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.base.IsZero() {
		return time.Time{}
	}
	return c.base.Add(time.Since(c.at))
}

// markerProtocol marks the markers of the two-phase gc. An older tidemark's
// gc deletes without condemning first and sees no acknowledgement, so a
// backup does not run beside one (restic-style exclusion, as before); an
// older backup's marker acknowledges nothing, so gc waits for it to end.
const markerProtocol = 2

func lockKey(kind, owner string) string { return lockPrefix + kind + "-" + owner }

// putMarker writes info under key and returns the store's clock read from
// the object just written.
func (r *Repo) putMarker(ctx context.Context, key string, info *lockInfo, create bool) (storage.ObjectInfo, error) {
	info.Refreshed = time.Now().UTC()
	info.Protocol = markerProtocol
	data, err := json.Marshal(info)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	if err := r.store.Put(ctx, key, bytes.NewReader(data), int64(len(data)), storage.PutOptions{IfNotExists: create}); err != nil {
		return storage.ObjectInfo{}, err
	}
	oi, err := r.store.Stat(ctx, key)
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("reading back %s: %w", key, err)
	}
	return oi, nil
}

func (r *Repo) readLock(ctx context.Context, key string) (lockInfo, error) {
	var info lockInfo
	rc, err := r.store.Get(ctx, key, 0, -1)
	if err != nil {
		return info, err
	}
	defer func() { _ = rc.Close() }()
	data, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(data, &info); err != nil {
		// A marker we cannot read still counts as held, by an owner that
		// acknowledged nothing, until it goes stale.
		kind, owner, _ := strings.Cut(strings.TrimPrefix(key, lockPrefix), "-")
		info = lockInfo{Kind: kind, Owner: owner}
	}
	return info, nil
}

type heldLock struct {
	key  string
	info lockInfo
	oi   storage.ObjectInfo
}

// listLocks reads every marker of one kind ("" for all).
func (r *Repo) listLocks(ctx context.Context, kind string) ([]heldLock, error) {
	var ois []storage.ObjectInfo
	prefix := lockPrefix
	if kind != "" {
		prefix += kind + "-"
	}
	if err := r.store.List(ctx, prefix, func(oi storage.ObjectInfo) error {
		ois = append(ois, oi)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing locks: %w", err)
	}
	out := make([]heldLock, 0, len(ois))
	for _, oi := range ois {
		info, err := r.readLock(ctx, oi.Key)
		if errors.Is(err, storage.ErrNotFound) {
			continue // released while we listed
		}
		if err != nil {
			return nil, fmt.Errorf("reading lock %s: %w", oi.Key, err)
		}
		out = append(out, heldLock{key: oi.Key, info: info, oi: oi})
	}
	return out, nil
}

func fenceKey(run string) string { return gcPrefix + "fenced/" + run }

// gcLock is a gc run's lock. The run refreshes it in the background and
// calls authorize before every delete: a delete is sent only within half
// the stale time of a refresh that found no fence, so a delete from a run
// that was paused lands before anyone can judge the run dead.
type gcLock struct {
	r      *Repo
	run    string
	key    string
	info   lockInfo
	timing lockTiming
	clock  storeClock

	mu       sync.Mutex
	verified time.Time // local monotonic time before the last good refresh was sent
	lost     error
}

// acquireGCLock writes this run's lock, then lists the others: of two runs
// starting together at least one sees the other and backs off. A lock
// whose owner stopped refreshing it is fenced and removed.
func (r *Repo) acquireGCLock(ctx context.Context, run string) (*gcLock, error) {
	host, _ := os.Hostname()
	l := &gcLock{r: r, run: run, key: lockKey(lockGC, run), timing: r.lockTiming(),
		info: lockInfo{Kind: lockGC, Owner: run, Host: host, PID: os.Getpid()}}
	sent := time.Now()
	oi, err := r.putMarker(ctx, l.key, &l.info, true)
	if err != nil {
		if !errors.Is(err, storage.ErrExists) {
			_ = l.release() // the put may have landed before the failure
		}
		return nil, fmt.Errorf("writing lock %s: %w", l.key, err)
	}
	l.clock.set(oi.ModTime, time.Now())
	l.verified = sent
	others, err := r.listLocks(ctx, lockGC)
	if err != nil {
		_ = l.release()
		return nil, err
	}
	for _, o := range others {
		if o.key == l.key {
			continue
		}
		if l.clock.now().Sub(o.oi.ModTime) > l.timing.stale {
			dead, err := r.fenceGC(ctx, o.info.Owner, l.clock.now(), l.timing)
			if err != nil {
				_ = l.release()
				return nil, err
			}
			if dead {
				continue
			}
		}
		_ = l.release()
		return nil, fmt.Errorf("%w: gc %s is running on %s (pid %d, lock %s); retry when it ends",
			ErrLocked, o.info.Owner, o.info.Host, o.info.PID, o.key)
	}
	return l, nil
}

// fenceGC stops the gc run whose lock looked stale at storeNow: it writes
// the run's fence, then looks at the lock again. A run that refreshed
// meanwhile may not have seen the fence yet and may delete until half the
// stale time after that refresh, so it counts as alive until its lock is
// stale again; otherwise its lock is removed and the run is dead: when it
// wakes, its next refresh finds the fence and it deletes nothing more.
func (r *Repo) fenceGC(ctx context.Context, run string, storeNow time.Time, t lockTiming) (bool, error) {
	fk := fenceKey(run)
	body := []byte("fenced: its lock was not refreshed for longer than the stale time\n")
	if err := r.store.Put(ctx, fk, bytes.NewReader(body), int64(len(body)), storage.PutOptions{IfNotExists: true}); err != nil && !errors.Is(err, storage.ErrExists) {
		return false, fmt.Errorf("fencing gc %s: %w", run, err)
	}
	oi, err := r.store.Stat(ctx, lockKey(lockGC, run))
	if errors.Is(err, storage.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("fencing gc %s: %w", run, err)
	}
	if storeNow.Sub(oi.ModTime) <= t.stale {
		return false, nil
	}
	if err := r.store.Delete(ctx, oi.Key); err != nil {
		return false, fmt.Errorf("fencing gc %s: removing its lock: %w", run, err)
	}
	return true, nil
}

// refresh rewrites the lock, then checks the fence: a fence written before
// our put landed is seen here, one written after it came from a judgement
// that our put makes wrong, and fenceGC waits that out.
func (l *gcLock) refresh(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return l.lost
	}
	sent := time.Now()
	if _, err := l.r.store.Stat(ctx, l.key); errors.Is(err, storage.ErrNotFound) {
		l.lost = fmt.Errorf("gc %s: %w: its lock %s was removed by another gc run; nothing more is deleted", l.run, ErrFenced, l.key)
		return l.lost
	} else if err != nil {
		return fmt.Errorf("gc %s: refreshing lock: %w", l.run, err)
	}
	oi, err := l.r.putMarker(ctx, l.key, &l.info, false)
	if err != nil {
		return fmt.Errorf("gc %s: refreshing lock %s: %w", l.run, l.key, err)
	}
	l.clock.set(oi.ModTime, time.Now())
	if _, err := l.r.store.Stat(ctx, fenceKey(l.run)); err == nil {
		l.lost = fmt.Errorf("gc %s: %w: another gc run fenced it; nothing more is deleted", l.run, ErrFenced)
		_ = l.r.store.Delete(ctx, l.key) // the lock we just re-created
		return l.lost
	} else if !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("gc %s: checking fence: %w", l.run, err)
	}
	l.verified = sent
	return nil
}

// authorize returns nil when a delete may be sent now: within half the
// stale time of the last good refresh (refreshing first if needed).
func (l *gcLock) authorize(ctx context.Context) error {
	l.mu.Lock()
	lost, fresh := l.lost, time.Since(l.verified) < l.timing.stale/2
	l.mu.Unlock()
	if lost != nil {
		return lost
	}
	if fresh {
		return nil
	}
	return l.refresh(ctx)
}

// refreshLoop refreshes the lock until ctx ends. A failure is not returned:
// a lost lock is remembered and fails every later authorize, and a
// transient one is retried by authorize before the next delete.
func (l *gcLock) refreshLoop(ctx context.Context) {
	t := time.NewTicker(l.timing.refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = l.refresh(ctx)
		}
	}
}

func (l *gcLock) release() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return l.r.store.Delete(ctx, l.key)
}

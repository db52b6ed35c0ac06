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
	"syscall"
	"time"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// Locks keep gc from sweeping chunks a running backup has decided to reuse.
// A backup and gc each first write their own lock object, then list the
// others: with list-after-write, at least one of two racing parties sees the
// other and backs off. restic's lock protocol works the same way.
const (
	lockBackup = "backup"
	lockGC     = "gc"
	// A lock not refreshed for lockStale is abandoned (its process died on
	// another host); on this host a dead pid is enough.
	lockRefresh = 2 * time.Minute
	lockStale   = 10 * time.Minute
)

// ErrLocked means another operation holds a conflicting lock.
var ErrLocked = errors.New("repository is locked")

type lockInfo struct {
	Kind      string    `json:"kind"`
	Owner     string    `json:"owner"` // backup id or gc run id
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Refreshed time.Time `json:"refreshed"`
}

type repoLock struct {
	repo *Repo
	key  string
	info lockInfo
}

func (r *Repo) acquireLock(ctx context.Context, kind, owner string) (*repoLock, error) {
	host, _ := os.Hostname()
	l := &repoLock{
		repo: r,
		key:  lockPrefix + kind + "-" + owner,
		info: lockInfo{Kind: kind, Owner: owner, Host: host, PID: os.Getpid(), Refreshed: time.Now().UTC()},
	}
	if err := l.write(ctx, true); err != nil {
		return nil, fmt.Errorf("writing lock %s: %w", l.key, err)
	}
	others, err := r.locks(ctx)
	if err != nil {
		_ = l.release()
		return nil, err
	}
	for _, o := range others {
		if o.key == l.key {
			continue
		}
		conflict := (kind == lockGC) || (o.info.Kind == lockGC)
		if conflict {
			_ = l.release()
			return nil, fmt.Errorf("%w: %s %s is running on %s (pid %d, lock %s); retry when it ends, or remove the lock if that process is gone",
				ErrLocked, o.info.Kind, o.info.Owner, o.info.Host, o.info.PID, o.key)
		}
	}
	return l, nil
}

func (l *repoLock) write(ctx context.Context, create bool) error {
	data, err := json.Marshal(l.info)
	if err != nil {
		return err
	}
	return l.repo.store.Put(ctx, l.key, bytes.NewReader(data), int64(len(data)), storage.PutOptions{IfNotExists: create})
}

func (l *repoLock) refreshLoop(ctx context.Context) error {
	t := time.NewTicker(lockRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			l.info.Refreshed = time.Now().UTC()
			if err := l.write(ctx, false); err != nil && ctx.Err() == nil {
				return fmt.Errorf("refreshing lock %s: %w", l.key, err)
			}
		}
	}
}

func (l *repoLock) release() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return l.repo.store.Delete(ctx, l.key)
}

type heldLock struct {
	key  string
	info lockInfo
}

// locks lists live locks, skipping (and removing) stale ones.
func (r *Repo) locks(ctx context.Context) ([]heldLock, error) {
	var keys []string
	if err := r.store.List(ctx, lockPrefix, func(oi storage.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("listing locks: %w", err)
	}
	host, _ := os.Hostname()
	var out []heldLock
	for _, k := range keys {
		info, err := r.readLock(ctx, k)
		if errors.Is(err, storage.ErrNotFound) {
			continue // released while we listed
		}
		if err != nil {
			return nil, err
		}
		if lockIsStale(info, host, time.Now()) {
			_ = r.store.Delete(ctx, k)
			continue
		}
		out = append(out, heldLock{key: k, info: info})
	}
	return out, nil
}

func (r *Repo) readLock(ctx context.Context, key string) (lockInfo, error) {
	var info lockInfo
	rc, err := r.store.Get(ctx, key, 0, -1)
	if err != nil {
		return info, err
	}
	defer func() { _ = rc.Close() }()
	data, err := io.ReadAll(io.LimitReader(rc, 64<<10))
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(data, &info); err != nil {
		// A lock we cannot read still counts as held, by an unknown owner,
		// until it goes stale by its time.
		info = lockInfo{Kind: strings.SplitN(strings.TrimPrefix(key, lockPrefix), "-", 2)[0], Owner: "unknown", Refreshed: time.Now()}
	}
	return info, nil
}

func lockIsStale(info lockInfo, host string, now time.Time) bool {
	if now.Sub(info.Refreshed) > lockStale {
		return true
	}
	if info.Host == host && info.PID > 0 && info.PID != os.Getpid() {
		// Signal 0 probes for existence. ESRCH: the process is gone.
		if err := syscall.Kill(info.PID, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
	}
	return false
}

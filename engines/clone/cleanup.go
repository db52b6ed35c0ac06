package clone

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// CleanupResult says what Cleanup found.
type CleanupResult struct {
	Removed []string // scratch directories (and lone lock files) removed
	// Busy are directories left alone: a backup of ours holds their lock,
	// or the server is cloning into them.
	Busy []string
}

// Cleanup removes the scratch directories a killed run of ours left for
// the server at dsn: only names carrying this server's tag, only when no
// backup holds their lock file and the server's clone_status does not
// show a clone 'In Progress' into them.
func (e *Engine) Cleanup(ctx context.Context, dsn string) (*CleanupResult, error) {
	s, err := connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if err := checkServer(s.srv); err != nil {
		return nil, err
	}
	if err := s.readDirs(ctx); err != nil {
		return nil, err
	}
	return e.cleanup(ctx, s)
}

// cleanup is Cleanup on an open session whose directories are read.
func (e *Engine) cleanup(ctx context.Context, s *session) (*CleanupResult, error) {
	parent, err := e.scratchParent(s.datadir)
	if err != nil {
		return nil, err
	}
	prefix := filepath.Join(parent, ScratchPrefix+tag(s.datadir)+"-")
	matches, err := filepath.Glob(prefix + "*")
	if err != nil {
		return nil, fmt.Errorf("listing %s*: %w", prefix, err)
	}
	// The server's clone, if one runs: a clone whose client was killed
	// runs on until it ends.
	var state, dest sql.NullString
	if err := s.clone.QueryRowContext(ctx, "SELECT STATE, DESTINATION FROM performance_schema.clone_status").Scan(&state, &dest); err != nil && !errors.Is(err, sql.ErrNoRows) {
		// Without the plugin (uninstalled since) nothing can be cloning.
		if err := checkPlugin(ctx, s.clone, s.srv); err == nil {
			return nil, fmt.Errorf("reading performance_schema.clone_status: %w", err)
		}
	}
	cloning := ""
	if state.String == "In Progress" {
		cloning = filepath.Clean(dest.String)
	}
	res := &CleanupResult{}
	listed := map[string]bool{}
	for _, m := range matches {
		listed[m] = true
	}
	for _, m := range matches {
		dir := strings.TrimSuffix(m, ".lock")
		if m != dir && listed[dir] {
			continue // handled with its directory
		}
		if dir == cloning {
			res.Busy = append(res.Busy, dir)
			continue
		}
		removed, err := removeIfFree(dir)
		if err != nil {
			return res, err
		}
		if removed {
			res.Removed = append(res.Removed, m)
		} else {
			res.Busy = append(res.Busy, dir)
		}
	}
	return res, nil
}

// removeIfFree removes dir and its lock file unless a backup holds the
// lock; the lock is held while they are removed.
func removeIfFree(dir string) (bool, error) {
	lockPath := dir + ".lock"
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return false, fmt.Errorf("opening %s: %w", lockPath, err)
	}
	defer func() { _ = f.Close() }()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("locking %s: %w", lockPath, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return false, fmt.Errorf("removing the leftover clone directory %s: %w", dir, err)
	}
	if err := os.Remove(lockPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("removing %s: %w", lockPath, err)
	}
	return true, nil
}

// CleanLeftovers implements engines.Cleaner: Cleanup, with a server the
// engine cannot run on (MariaDB, old MySQL) being nothing to clean.
func (e *Engine) CleanLeftovers(ctx context.Context, dsn string) ([]string, error) {
	res, err := e.Cleanup(ctx, dsn)
	if errors.Is(err, ErrUnsupported) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return res.Removed, nil
}

package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/faulty"
	"github.com/tidemark-backup/tidemark/internal/storage/retry"
)

// recordingStore records, in order, every put (key and whether it deferred
// its sync) and every Sync, and passes them on.
type recordingStore struct {
	storage.Storage
	mu  sync.Mutex
	ops []string
}

func (s *recordingStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	err := s.Storage.Put(ctx, key, r, size, opts)
	if err == nil {
		s.record(fmt.Sprintf("put %s defer=%v", key, opts.DeferSync))
	}
	return err
}

func (s *recordingStore) Sync(ctx context.Context) error {
	s.record("sync")
	return storage.Sync(ctx, s.Storage)
}

func (s *recordingStore) record(op string) {
	s.mu.Lock()
	s.ops = append(s.ops, op)
	s.mu.Unlock()
}

func (s *recordingStore) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ops := s.ops
	s.ops = nil
	return ops
}

// Chunks are put with DeferSync, then the store is synced once, and only
// then is the manifest put, without DeferSync, as are config and locks; the
// Sync reaches the store through the retry wrapper.
func TestChunksSyncedBeforeManifest(t *testing.T) {
	rec := &recordingStore{Storage: openFileStore(t, t.TempDir())}
	r := initRepo(t, retry.Wrap(rec, retry.Options{}), false)
	for pass := range 2 { // the second backup reuses every chunk: it still syncs
		rec.take()
		id, _ := writeStreams(t, r, map[string]int64{"a": 20 << 20, "b": 3 << 20}, 0)
		ops := rec.take()
		syncAt := slices.Index(ops, "sync")
		manifestAt := slices.Index(ops, "put "+manifestKey(id)+" defer=false")
		if syncAt < 0 || manifestAt < syncAt || slices.Contains(ops[syncAt+1:], "sync") {
			t.Fatalf("pass %d: want one sync, before the manifest put: %q", pass, ops)
		}
		chunks := 0
		for i, op := range ops {
			key, _, _ := strings.Cut(strings.TrimPrefix(op, "put "), " ")
			switch {
			case strings.HasPrefix(key, chunkPrefix):
				chunks++
				if !strings.HasSuffix(op, "defer=true") || i > syncAt {
					t.Errorf("pass %d: chunk put %q at %d, sync at %d", pass, op, i, syncAt)
				}
			case strings.HasPrefix(op, "put "):
				if !strings.HasSuffix(op, "defer=false") {
					t.Errorf("pass %d: %q deferred its sync", pass, op)
				}
			}
		}
		if (pass == 0) != (chunks > 0) {
			t.Errorf("pass %d: %d chunk puts", pass, chunks)
		}
	}
}

// A failed Sync fails the backup with no manifest written; the chunks it
// stored are no longer trusted from the index, and the next backup stores
// them again (or finds them) and succeeds.
func TestSyncFailureFailsBackup(t *testing.T) {
	ctx := context.Background()
	f := faulty.New(openFileStore(t, t.TempDir()))
	r := initRepo(t, f, false)
	f.Inject(faulty.Fault{Op: faulty.Sync, Times: 1, Err: errors.New("EIO")})
	_, err := r.WithBackup(ctx, BackupOptions{Engine: "test"}, func(ctx context.Context, b *Backup) error {
		w, err := b.Stream("s", nil)
		if err != nil {
			return err
		}
		if _, err := w.Write(make([]byte, 3<<20)); err != nil {
			return err
		}
		return w.Close()
	})
	if err == nil || !strings.Contains(err.Error(), "making its chunks durable") || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("backup whose sync failed: %v", err)
	}
	if ids, _ := r.BackupIDs(ctx); len(ids) != 0 {
		t.Fatalf("backup with a failed sync listed: %v", ids)
	}
	r.indexMu.Lock()
	known := len(r.index)
	r.indexMu.Unlock()
	if known != 0 {
		t.Errorf("%d chunks still trusted from the index after a failed sync", known)
	}
	puts := f.Calls(faulty.Put)
	id, _ := writeStreams(t, r, map[string]int64{"s": 3 << 20}, 0)
	if f.Calls(faulty.Put)-puts < 2 || f.Calls(faulty.Sync) != 2 {
		t.Errorf("second backup: %d puts, %d syncs in all", f.Calls(faulty.Put)-puts, f.Calls(faulty.Sync))
	}
	if ids, _ := r.BackupIDs(ctx); len(ids) != 1 || ids[0] != id {
		t.Fatalf("backups after the retry: %v", ids)
	}
}

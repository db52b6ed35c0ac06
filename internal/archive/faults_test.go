package archive

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/dumpgen"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/faulty"
	"github.com/tidemark-backup/tidemark/internal/storage/retry"
	"github.com/tidemark-backup/tidemark/internal/testenv"
)

// A chunk upload that keeps failing fails the backup with the chunk named,
// and no manifest is written.
func TestUploadFailureFailsBackup(t *testing.T) {
	ctx := context.Background()
	f := faulty.New(openFileStore(t, t.TempDir()))
	r := initRepo(t, f, false)
	f.Inject(faulty.Fault{Op: faulty.Put, KeyPrefix: chunkPrefix, After: 2, Err: storage.ErrUnavailable, ReadFirst: 1000})
	_, err := r.WithBackup(ctx, BackupOptions{Engine: "test"}, func(ctx context.Context, b *Backup) error {
		w, err := b.Stream("s", nil)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, dumpgen.NewReader(tmpl(), 64<<20, 0)); err != nil {
			return err
		}
		return w.Close()
	})
	if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), "stream s") || !strings.Contains(err.Error(), "chunk") {
		t.Fatalf("backup over a failing store: %v", err)
	}
	f.Reset()
	if ids, _ := r.BackupIDs(ctx); len(ids) != 0 {
		t.Fatalf("failed backup listed: %v", ids)
	}
}

// Transient failures are retried by the retry wrapper and the backup ends
// complete; a corrupted read is read again before being called damage.
func TestTransientFaultsAreRetried(t *testing.T) {
	f := faulty.New(openFileStore(t, t.TempDir()))
	st := retry.Wrap(f, retry.Options{Attempts: 4, Base: 1, Cap: 10})
	r := initRepo(t, st, true)
	f.Inject(faulty.Fault{Op: faulty.Put, KeyPrefix: chunkPrefix, After: 1, Times: 2, Err: storage.ErrUnavailable, ReadFirst: 100})
	id, sums := writeStreams(t, r, map[string]int64{"s": 20 << 20}, 0)
	f.Reset()
	// One flipped bit on the first read of a chunk: the second read is good.
	f.Inject(faulty.Fault{Op: faulty.Get, KeyPrefix: chunkPrefix, Times: 1, Corrupt: true})
	got, err := readStreamSum(t, r, id, "s")
	if err != nil || got != sums["s"] {
		t.Fatalf("read with one transient corruption: %v", err)
	}
}

// A full disk under file:// fails the backup with a clear error and leaves
// no manifest; after space is freed the next backup works.
func TestDiskFullFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", dir).CombinedOutput(); err != nil {
		if testenv.CI() {
			t.Fatalf("mounting a tmpfs for the disk-full test: %v: %s", err, out)
		}
		t.Skipf("cannot mount tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	st := openFileStore(t, dir)
	r := initRepo(t, st, false)
	_, err := r.WithBackup(ctx, BackupOptions{Engine: "test", Compression: "none"}, func(ctx context.Context, b *Backup) error {
		w, err := b.Stream("big", nil)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, dumpgen.NewReader(tmpl(), 64<<20, 0)); err != nil {
			return err
		}
		return w.Close()
	})
	if !errors.Is(err, storage.ErrNoSpace) {
		t.Fatalf("backup onto a full disk: %v, want ErrNoSpace", err)
	}
	if ids, _ := r.BackupIDs(ctx); len(ids) != 0 {
		t.Fatalf("failed backup listed: %v", ids)
	}
	if _, err := r.GC(ctx, GCOptions{}); err != nil {
		t.Fatalf("gc: %v", err)
	}
	if _, err := r.GC(ctx, GCOptions{Grace: 0}); err != nil {
		t.Fatalf("gc: %v", err)
	}
	writeStreams(t, r, map[string]int64{"small": 1 << 20}, 0)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

// A backup whose marker put landed but whose read-back failed (a
// cancellation between the two) removes its marker: a retry of the same
// backup id starts, and gc waits for no dead writer.
func TestMarkerRemovedWhenItsReadBackFails(t *testing.T) {
	ctx := context.Background()
	f := faulty.New(openFileStore(t, t.TempDir()))
	r := initRepo(t, f, false)
	f.Inject(faulty.Fault{Op: faulty.Stat, KeyPrefix: lockPrefix + lockBackup + "-", Times: 1, Err: context.Canceled})
	body := func(ctx context.Context, b *Backup) error {
		w, err := b.Stream("s", nil)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, dumpgen.NewReader(tmpl(), 1<<20, 0)); err != nil {
			return err
		}
		return w.Close()
	}
	_, err := r.WithBackup(ctx, BackupOptions{ID: "b-retry", Engine: "test"}, body)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "writing lock") {
		t.Fatalf("first attempt: %v", err)
	}
	f.Reset()
	if n := countKeys(t, f, lockPrefix); n != 0 {
		t.Fatalf("%d markers left after the failed attempt", n)
	}
	if _, err := r.WithBackup(ctx, BackupOptions{ID: "b-retry", Engine: "test"}, body); err != nil {
		t.Fatalf("retry of the same backup id: %v", err)
	}
}

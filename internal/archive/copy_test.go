package archive

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/faulty"
	v1 "github.com/tidemark-backup/tidemark/proto/gen/tidemark/v1"
)

func otherSecret() Secret {
	return Secret{Passphrase: secret.NewBytes([]byte("another repository's passphrase"))}
}

func initRepoWith(t *testing.T, st storage.Storage, s *Secret) *Repo {
	t.Helper()
	opts := InitOptions{}
	if s != nil {
		opts.Encrypt, opts.Secret, opts.ScryptN = true, *s, 1<<10
	}
	r, err := Init(context.Background(), st, opts)
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// TestCopy copies backups between repositories of every key combination:
// the copy reads back byte for byte, keeps the manifest's identity, stores
// only what the destination lacks (reading nothing the destination holds
// when both name chunks alike), never changes the source, and a copy
// whose chunk went missing is caught.
func TestCopy(t *testing.T) {
	ctx := context.Background()
	srcKey, dstKey := testSecret(), otherSecret()
	for _, tc := range []struct {
		name     string
		src, dst *Secret
		sameIDs  bool
	}{
		{"plain to plain", nil, nil, true},
		{"encrypted to encrypted, other keys", &srcKey, &dstKey, false},
		{"plain to encrypted", nil, &dstKey, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srcSt, dstSt := openFileStore(t, t.TempDir()), openFileStore(t, t.TempDir())
			src, dst := initRepoWith(t, srcSt, tc.src), initRepoWith(t, dstSt, tc.dst)
			sizes := map[string]int64{"t1": 20 << 20, "t2": 3 << 20, "empty": 0}
			if testing.Short() {
				sizes = map[string]int64{"t1": 9 << 20, "t2": 1 << 20, "empty": 0}
			}
			id1, sums := writeStreams(t, src, sizes, 7)
			id2, _ := writeStreams(t, src, sizes, 7) // the same data again
			before := countKeys(t, srcSt, "")

			res, err := Copy(ctx, src, dst, CopyParams{BackupID: id1})
			if err != nil {
				t.Fatal(err)
			}
			if res.AlreadyThere || res.ChunksRead == 0 || res.ChunksSkipped != 0 || res.UploadedBytes == 0 || res.ChunksVerified == 0 {
				t.Errorf("first copy: %+v", res)
			}
			for name, want := range sums {
				if got, err := readStreamSum(t, dst, id1, name); err != nil || got != want {
					t.Errorf("stream %s read from the copy: %x, %v; want %x", name, got, err, want)
				}
			}
			sm, _ := src.LoadManifest(ctx, id1)
			dm, _ := dst.LoadManifest(ctx, id1)
			if dm.GetInstance() != sm.GetInstance() || dm.GetEngine() != sm.GetEngine() || !proto.Equal(dm.GetStartedAt(), sm.GetStartedAt()) ||
				!proto.Equal(dm.GetFinishedAt(), sm.GetFinishedAt()) || dm.GetLogicalBytes() != sm.GetLogicalBytes() || len(dm.GetStreams()) != len(sm.GetStreams()) {
				t.Errorf("copied manifest %v\nsource %v", dm, sm)
			}
			for i := range sm.GetStreams() {
				if a, b := sm.GetStreams()[i], dm.GetStreams()[i]; a.GetName() != b.GetName() || len(a.GetChunks()) != len(b.GetChunks()) {
					t.Errorf("stream %d: %s with %d chunks copied as %s with %d", i, a.GetName(), len(a.GetChunks()), b.GetName(), len(b.GetChunks()))
				}
			}
			if got, err := dst.Verify(ctx, VerifyOptions{ReadData: true}); err != nil || !got.OK() {
				t.Errorf("verify of the destination: %+v, %v", got, err)
			}

			again, err := Copy(ctx, src, dst, CopyParams{BackupID: id1})
			if err != nil || !again.AlreadyThere || again.ChunksVerified != res.ChunksVerified {
				t.Errorf("second copy of the same backup: %+v, %v", again, err)
			}
			// The same data under another id: nothing new is stored; with
			// alike chunk ids nothing is even read.
			r2, err := Copy(ctx, src, dst, CopyParams{BackupID: id2})
			if err != nil {
				t.Fatal(err)
			}
			if r2.UploadedBytes != 0 {
				t.Errorf("copy of identical data uploaded %d bytes", r2.UploadedBytes)
			}
			if tc.sameIDs && (r2.ChunksRead != 0 || r2.ChunksSkipped == 0) {
				t.Errorf("alike ids: read %d chunks, skipped %d; want none read", r2.ChunksRead, r2.ChunksSkipped)
			}
			if !tc.sameIDs && r2.ChunksSkipped != 0 {
				t.Errorf("ids differ, yet %d chunks were skipped unread", r2.ChunksSkipped)
			}
			if after := countKeys(t, srcSt, ""); after != before {
				t.Errorf("the source changed: %d objects, was %d", after, before)
			}

			// A chunk lost from the destination: the copy is found broken.
			var c *v1.ChunkRef
			for _, s := range dm.GetStreams() {
				if len(s.GetChunks()) > 0 {
					c = s.GetChunks()[0]
				}
			}
			id, _ := chunkIDFromBytes(c.GetId())
			if err := dstSt.Delete(ctx, chunkKey(id)); err != nil {
				t.Fatal(err)
			}
			_, err = Copy(ctx, src, dst, CopyParams{BackupID: id1})
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "is missing from") {
				t.Errorf("copy over a damaged destination: %v", err)
			}
		})
	}
}

func TestCopyRefusals(t *testing.T) {
	ctx := context.Background()
	srcSt, dstSt := openFileStore(t, t.TempDir()), openFileStore(t, t.TempDir())
	src, dst := initRepo(t, srcSt, false), initRepo(t, dstSt, false)
	if _, err := Copy(ctx, src, dst, CopyParams{BackupID: "20260101T000000Z-00000000"}); !errors.Is(err, ErrBackupMissing) {
		t.Errorf("missing backup: %v", err)
	}
	if _, err := Copy(ctx, src, dst, CopyParams{BackupID: "../x"}); err == nil {
		t.Error("a bad id was accepted")
	}
	// Another backup under the same id in the destination is not adopted.
	id, _ := writeStreams(t, src, map[string]int64{"a": 1 << 20}, 1)
	if _, err := dst.WithBackup(ctx, BackupOptions{ID: id, Engine: "test", Instance: "db1"}, func(_ context.Context, b *Backup) error {
		w, err := b.Stream("a", nil)
		if err != nil {
			return err
		}
		_, _ = w.Write([]byte("other"))
		return w.Close()
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(ctx, src, dst, CopyParams{BackupID: id}); err == nil || !strings.Contains(err.Error(), "already holds a different backup under that id") {
		t.Errorf("clashing id: %v", err)
	}
}

// TestCopyToS3 copies from a file repository to an encrypted one on a
// real MinIO.
func TestCopyToS3(t *testing.T) {
	ctx := context.Background()
	srv := openS3Store(t)
	src := initRepo(t, openFileStore(t, t.TempDir()), false)
	key := otherSecret()
	dst := initRepoWith(t, subStore(t, srv, "copy"), &key)
	id, sums := writeStreams(t, src, map[string]int64{"t1": 6 << 20, "t2": 1 << 20}, 3)
	res, err := Copy(ctx, src, dst, CopyParams{BackupID: id})
	if err != nil {
		t.Fatal(err)
	}
	if res.ChunksVerified == 0 {
		t.Errorf("nothing verified: %+v", res)
	}
	for name, want := range sums {
		if got, err := readStreamSum(t, dst, id, name); err != nil || got != want {
			t.Errorf("stream %s from MinIO: %x, %v; want %x", name, got, err, want)
		}
	}
}

// TestCopyWithRetry: a destination that fails for a while is retried with
// backoff until the copy goes through; one that stays down is reported
// after the last attempt; the source never changes; a missing source
// backup is not retried at all.
func TestCopyWithRetry(t *testing.T) {
	ctx := context.Background()
	srcSt := openFileStore(t, t.TempDir())
	src := initRepo(t, srcSt, false)
	f := faulty.New(openFileStore(t, t.TempDir()))
	dst := initRepo(t, f, false)
	id, sums := writeStreams(t, src, map[string]int64{"t1": 3 << 20}, 5)
	f.Inject(faulty.Fault{Op: faulty.Put, KeyPrefix: chunkPrefix, Times: 1, Err: storage.ErrUnavailable})
	var waits []time.Duration
	res, err := CopyWithRetry(ctx, src, dst, CopyParams{BackupID: id}, CopyRetry{Attempts: 3, Backoff: 10 * time.Millisecond,
		OnRetry: func(_ int, err error, wait time.Duration) { waits = append(waits, wait) }})
	if err != nil || res.ChunksVerified == 0 {
		t.Fatalf("copy through a short outage: %+v, %v", res, err)
	}
	if len(waits) != 1 || waits[0] != 10*time.Millisecond {
		t.Errorf("retries waited %v, want one of 10ms", waits)
	}
	if got, err := readStreamSum(t, dst, id, "t1"); err != nil || got != sums["t1"] {
		t.Errorf("copy reads %x, %v", got, err)
	}

	id2, _ := writeStreams(t, src, map[string]int64{"t1": 3 << 20}, 6)
	before := countKeys(t, srcSt, "")
	f.Inject(faulty.Fault{Op: faulty.Put, Err: storage.ErrUnavailable})
	waits = nil
	_, err = CopyWithRetry(ctx, src, dst, CopyParams{BackupID: id2}, CopyRetry{Attempts: 3, Backoff: 5 * time.Millisecond,
		OnRetry: func(_ int, err error, wait time.Duration) { waits = append(waits, wait) }})
	if err == nil || !strings.Contains(err.Error(), "after 3 attempts") || !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("destination down: %v", err)
	}
	if !slices.Equal(waits, []time.Duration{5 * time.Millisecond, 10 * time.Millisecond}) {
		t.Errorf("backoff %v, want 5ms then 10ms", waits)
	}
	if after := countKeys(t, srcSt, ""); after != before {
		t.Errorf("the source changed: %d objects, was %d", after, before)
	}
	f.Reset()
	calls := 0
	_, err = CopyWithRetry(ctx, src, dst, CopyParams{BackupID: "20260101T000000Z-00000000"}, CopyRetry{Attempts: 5, Backoff: time.Hour,
		OnRetry: func(int, error, time.Duration) { calls++ }})
	if !errors.Is(err, ErrBackupMissing) || calls != 0 {
		t.Errorf("missing source backup: %v after %d retries", err, calls)
	}
}

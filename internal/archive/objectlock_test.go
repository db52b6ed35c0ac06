package archive

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/crypto"
	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage"
	"github.com/tidemark-backup/tidemark/internal/storage/location"
	"github.com/tidemark-backup/tidemark/internal/storage/s3"
)

func bucketStore(t *testing.T, srv *s3Server, bucket, prefix string) storage.Storage {
	t.Helper()
	uri := fmt.Sprintf("s3://%s/%s?endpoint=%s&tls=false", bucket, prefix, srv.mc.Endpoint)
	st, err := location.Open(context.Background(), uri, location.Options{S3: s3.Config{
		Credentials: &s3.Credentials{AccessKeyID: srv.mc.AccessKey, SecretAccessKey: secret.NewString(srv.mc.SecretKey)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// TestObjectLockS3: on a bucket with Object Lock, chunks and manifests are
// written under retention, MinIO refuses to delete them (shown as
// storage.ErrRetained with its date), gc reports them as retained and
// carries on, and unlocked objects are deleted for good (every version).
func TestObjectLockS3(t *testing.T) {
	ctx := context.Background()
	srv := openS3Store(t)
	srv.mc.NewLockedBucket(t, "locked")
	lock := &ObjectLock{Days: 1, Mode: storage.RetentionGovernance}

	// A bucket without Object Lock, and a file store, are refused.
	_, err := Init(ctx, subStore(t, srv, "plain"), InitOptions{ObjectLock: lock})
	if err == nil || !strings.Contains(err.Error(), "does not have Object Lock enabled") {
		t.Fatalf("object lock on a plain bucket: %v", err)
	}
	if _, err := Init(ctx, openFileStore(t, t.TempDir()), InitOptions{ObjectLock: lock}); err == nil || !strings.Contains(err.Error(), "s3://") {
		t.Fatalf("object lock on a file store: %v", err)
	}
	if _, err := Init(ctx, subStore(t, srv, "plain2"), InitOptions{ObjectLock: &ObjectLock{Days: 0, Mode: "governance"}}); err == nil {
		t.Fatal("a 0-day lock was accepted")
	}

	st := bucketStore(t, srv, "locked", "repo")
	r, err := Init(ctx, st, InitOptions{ObjectLock: lock, ChunkSize: 64 << 10})
	if err != nil {
		t.Fatalf("init with object lock: %v", err)
	}
	t.Cleanup(r.Close)
	if err := r.SetLockTiming(testRefresh, testStale); err != nil {
		t.Fatal(err)
	}
	id, sums := writeStreams(t, r, map[string]int64{"a": 1 << 20}, 1)
	m, err := r.LoadManifest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	cid, _ := chunkIDFromBytes(m.Streams[0].Chunks[0].Id)
	for _, key := range []string{manifestKey(id), chunkKey(cid)} {
		mode, until := srv.mc.Retention(t, "locked", "repo/"+key)
		if mode != "GOVERNANCE" || until.Before(time.Now().Add(23*time.Hour)) || until.After(time.Now().Add(25*time.Hour)) {
			t.Fatalf("%s: retention %q until %v; want governance for a day", key, mode, until)
		}
	}
	// A stolen credential cannot delete them: MinIO refuses, the store
	// says until when.
	for _, key := range []string{manifestKey(id), chunkKey(cid)} {
		err := st.Delete(ctx, key)
		if !errors.Is(err, storage.ErrRetained) || !strings.Contains(err.Error(), "until") {
			t.Fatalf("delete of locked %s: %v", key, err)
		}
		t.Logf("delete refused: %v", err)
	}
	checkRestores(t, r, map[string]map[string][32]byte{id: sums})

	// Sealed objects are retained only when asked (closed binlog segments
	// may be; pieces and indexes, which are deleted or rewritten, not).
	if err := r.PutObject(ctx, "binlog/x/seg", []byte("segment"), ObjectOptions{Retain: true}); err != nil {
		t.Fatal(err)
	}
	if err := r.PutObject(ctx, "binlog/x/piece", []byte("piece"), ObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteObject(ctx, "binlog/x/seg"); !errors.Is(err, storage.ErrRetained) {
		t.Fatalf("delete of a retained object: %v", err)
	}
	if err := r.DeleteObject(ctx, "binlog/x/piece"); err != nil {
		t.Fatalf("delete of an object put without Retain: %v", err)
	}
	if err := r.PutObject(ctx, "binlog/x/idx", []byte("i"), ObjectOptions{Retain: true, Overwrite: true}); err == nil {
		t.Fatal("Retain with Overwrite was accepted")
	}

	// A later backup of the same data stores no chunk, and extends the
	// retention of every chunk it reuses to a full period from its end.
	_, before := srv.mc.Retention(t, "locked", "repo/"+chunkKey(cid))
	time.Sleep(1100 * time.Millisecond) // retention dates have one-second resolution
	id2, _ := writeStreams(t, r, map[string]int64{"a": 1 << 20}, 1)
	m2, err := r.LoadManifest(ctx, id2)
	if err != nil {
		t.Fatal(err)
	}
	if m2.NewStoredBytes != 0 {
		t.Fatalf("the second backup stored %d new bytes, want all reused", m2.NewStoredBytes)
	}
	if _, after := srv.mc.Retention(t, "locked", "repo/"+chunkKey(cid)); !after.After(before) {
		t.Fatalf("a reused chunk's retention stayed at %v (was %v): not extended by the backup that reused it", after, before)
	}

	// gc: an unreferenced chunk under retention is reported as retained,
	// not condemned; an unlocked one is deleted with all its versions.
	locked := putOrphan(t, r, "orphan under retention")
	putOrphan(t, r, "orphan without retention")
	// putOrphan writes without retention; make the first one locked.
	srv.mc.SetRetention(t, "locked", "repo/"+chunkKey(locked), time.Now().Add(time.Hour))
	time.Sleep(1500 * time.Millisecond) // past the grace of 0 on the store's one-second clock
	var rep *GCReport
	for range 2 {
		if rep, err = r.GC(ctx, GCOptions{}); err != nil {
			t.Fatalf("gc: %v", err)
		}
	}
	if rep.ChunksRetained < 2 || rep.RetainedUntil.IsZero() {
		t.Fatalf("gc report: %d retained until %v; want both orphans retained by the repository's lock period", rep.ChunksRetained, rep.RetainedUntil)
	}

	// A repository on the locked bucket that does not know of the lock
	// (so its gc condemns) meets MinIO's refusal in the sweep: reported as
	// retained, and the unlocked chunk is gone, every version of it.
	st2 := bucketStore(t, srv, "locked", "repo2")
	r2, err := Init(ctx, st2, InitOptions{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r2.Close)
	if err := r2.SetLockTiming(testRefresh, testStale); err != nil {
		t.Fatal(err)
	}
	l2 := putOrphan(t, r2, "orphan under retention")
	p2 := putOrphan(t, r2, "orphan without retention")
	srv.mc.SetRetention(t, "locked", "repo2/"+chunkKey(l2), time.Now().Add(time.Hour))
	time.Sleep(1500 * time.Millisecond)
	deleted, retained := 0, 0
	for range 3 {
		rep, err := r2.GC(ctx, GCOptions{})
		if err != nil {
			t.Fatalf("gc meeting a locked chunk stopped: %v", err)
		}
		deleted += rep.ChunksDeleted
		retained += rep.ChunksRetained
	}
	if deleted != 1 || retained < 1 {
		t.Fatalf("gc over a locked and an unlocked orphan: deleted %d, retained %d", deleted, retained)
	}
	if _, err := st2.Stat(ctx, chunkKey(l2)); err != nil {
		t.Fatalf("the locked chunk: %v", err)
	}
	if n := srv.mc.Versions(t, "locked", "repo2/"+chunkKey(p2)); n != 0 {
		t.Fatalf("the deleted chunk left %d versions (or delete markers) behind", n)
	}

	// A key change on a versioned bucket leaves no older config behind:
	// it would still hold the removed key's slot.
	st3 := bucketStore(t, srv, "locked", "keys")
	r3, err := Init(ctx, st3, InitOptions{Encrypt: true, Secret: testSecret(), ScryptN: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r3.Close)
	added, err := r3.AddKey(ctx, AddKeyParams{Secret: Secret{KeyFile: secret.NewBytes(crypto.Random(32))}})
	if err != nil {
		t.Fatal(err)
	}
	if err := openRepo(t, st3, testSecret()).RemoveKey(ctx, added.ID); err != nil {
		t.Fatal(err)
	}
	if n := srv.mc.Versions(t, "locked", "keys/"+configKey); n != 1 {
		t.Fatalf("after two key changes the config has %d versions, want only the current one", n)
	}
}

package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidemark-backup/tidemark/internal/crypto"
	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage"
)

// getRecorder records the keys every Get reads.
type getRecorder struct {
	storage.Storage
	mu   sync.Mutex
	gets []string
}

func (s *getRecorder) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	s.mu.Lock()
	s.gets = append(s.gets, key)
	s.mu.Unlock()
	return s.Storage.Get(ctx, key, off, n)
}

func openRepo(t *testing.T, st storage.Storage, s Secret) *Repo {
	t.Helper()
	r, err := Open(context.Background(), st, s)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// chunkGenerations returns the data key generations that sealed the chunks
// of backup id, read from their stored headers.
func chunkGenerations(t *testing.T, r *Repo, id string) map[int]int {
	t.Helper()
	ctx := context.Background()
	m, err := r.LoadManifest(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	gens := map[int]int{}
	for _, s := range m.Streams {
		for _, c := range s.Chunks {
			cid, err := chunkIDFromBytes(c.Id)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := r.readBlob(ctx, chunkKey(cid), -1)
			if err != nil {
				t.Fatal(err)
			}
			switch raw[0] {
			case blobV1:
				gens[0]++
			case blobV2:
				gens[int(raw[2])<<8|int(raw[3])]++
			default:
				t.Fatalf("chunk %s: blob version %d", cid, raw[0])
			}
		}
	}
	return gens
}

func checkRestores(t *testing.T, r *Repo, want map[string]map[string][32]byte) {
	t.Helper()
	for id, sums := range want {
		for name, sum := range sums {
			got, err := readStreamSum(t, r, id, name)
			if err != nil || got != sum {
				t.Fatalf("backup %s stream %s: read back %x, %v", id, name, got[:4], err)
			}
		}
	}
}

func TestKeysAddRotateRemove(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openFileStore(t, dir)
	pass := testSecret()
	keyFile := Secret{KeyFile: secret.NewBytes(crypto.Random(32))}
	r := initRepo(t, st, true)
	sizes := map[string]int64{"a": 3 << 20, "b": 1 << 20}
	idA, sumsA := writeStreams(t, r, sizes, 1)
	if g := chunkGenerations(t, r, idA); len(g) != 1 || g[0] == 0 {
		t.Fatalf("backup before rotation sealed with generations %v, want only 0", g)
	}

	keys, err := r.Keys()
	if err != nil || len(keys) != 1 || keys[0].Kind != KindPassphrase || !keys[0].Opened {
		t.Fatalf("keys of a new repository: %+v %v", keys, err)
	}
	passID := keys[0].ID
	added, err := r.AddKey(ctx, AddKeyParams{Secret: keyFile})
	if err != nil || added.Kind != KindKeyFile {
		t.Fatalf("add key: %+v %v", added, err)
	}
	// This Repo's view of the config is now stale: a second change from it
	// is refused rather than lose the first.
	if _, err := r.RotateDataKey(ctx); err == nil || !strings.Contains(err.Error(), "changed since it was opened") {
		t.Fatalf("key change from a stale Repo: %v", err)
	}

	if _, err := st.Stat(ctx, configLockKey); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the key-change lock outlived the change: %v", err)
	}
	rk := openRepo(t, st, keyFile)
	// A key change under way elsewhere (or one that crashed) holds the
	// lock: refused, naming it, nothing changed.
	held := "key change by otherhost pid 42 since 2026-01-01T00:00:00Z\n"
	if err := st.Put(ctx, configLockKey, strings.NewReader(held), int64(len(held)), storage.PutOptions{IfNotExists: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := rk.RotateDataKey(ctx); err == nil || !strings.Contains(err.Error(), "otherhost pid 42") || !strings.Contains(err.Error(), configLockKey) {
		t.Fatalf("key change while another holds the lock: %v", err)
	}
	if err := st.Delete(ctx, configLockKey); err != nil {
		t.Fatal(err)
	}
	gen, err := rk.RotateDataKey(ctx)
	if err != nil || gen.Generation != 1 {
		t.Fatalf("rotate: %+v %v", gen, err)
	}
	rk2 := openRepo(t, st, keyFile)
	dks, err := rk2.DataKeys()
	if err != nil || len(dks) != 2 || !dks[1].Current || dks[0].Current {
		t.Fatalf("data keys after rotation: %+v %v", dks, err)
	}
	idB, sumsB := writeStreams(t, rk2, sizes, 2)
	if g := chunkGenerations(t, rk2, idB); len(g) != 1 || g[1] == 0 {
		t.Fatalf("backup after rotation sealed with generations %v, want only 1", g)
	}
	want := map[string]map[string][32]byte{idA: sumsA, idB: sumsB}
	// Both keys read both backups: the one sealed before the rotation and
	// the one after.
	checkRestores(t, openRepo(t, st, pass), want)
	checkRestores(t, rk2, want)

	if err := rk2.RemoveKey(ctx, passID); err != nil {
		t.Fatalf("remove passphrase: %v", err)
	}
	rec := &getRecorder{Storage: st}
	_, err = Open(ctx, rec, pass)
	if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), st.String()) {
		t.Fatalf("removed passphrase: %v (want ErrWrongKey naming %s)", err, st)
	}
	if len(rec.gets) != 1 || rec.gets[0] != configKey {
		t.Fatalf("a wrong key read %v before it was refused, want only the config", rec.gets)
	}
	rk3 := openRepo(t, st, keyFile)
	checkRestores(t, rk3, want)
	keys, _ = rk3.Keys()
	if len(keys) != 1 {
		t.Fatalf("keys after removal: %+v", keys)
	}
	if err := rk3.RemoveKey(ctx, keys[0].ID); !errors.Is(err, ErrLastKey) {
		t.Fatalf("removing the last key: %v", err)
	}
	if err := rk3.RemoveKey(ctx, "nosuchid"); err == nil || !strings.Contains(err.Error(), "nosuchid") {
		t.Fatalf("removing an unknown key: %v", err)
	}
	// The config holds no key material in the clear.
	cfg, err := os.ReadFile(filepath.Join(dir, configKey))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(cfg, keyFile.KeyFile.Reveal()) || bytes.Contains(cfg, rk3.rk.Root[:]) {
		t.Fatal("the config holds a key in the clear")
	}
	if _, err := initRepo(t, openFileStore(t, t.TempDir()), false).Keys(); err == nil {
		t.Fatal("an unencrypted repository listed keys")
	}
}

// writeV1Repo makes an encrypted format-1 repository (as tidemark wrote
// before key slots), opened with testSecret.
func writeV1Repo(t *testing.T, st storage.Storage) {
	t.Helper()
	kdf := crypto.DefaultScrypt()
	kdf.N = 1 << 10
	kek, err := crypto.DeriveKEK(testSecret().Passphrase.Reveal(), kdf)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := crypto.NewMasterKeys().Wrap(kek)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{FormatVersion: 1, ID: newID(time.Now()), CreatedAt: time.Now().UTC().Truncate(time.Second),
		ChunkSize: 1 << 20, Hash: "hmac-sha256", Compression: "zstd", CompressionLevel: 1,
		Encryption: "aes-256-gcm", KDF: &kdf, WrappedKeys: wrapped}
	data, _ := json.Marshal(cfg)
	if err := st.Put(context.Background(), configKey, bytes.NewReader(data), int64(len(data)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestFormat1UpgradedByKeyChange(t *testing.T) {
	ctx := context.Background()
	st := openFileStore(t, t.TempDir())
	writeV1Repo(t, st)
	r1 := openRepo(t, st, testSecret())
	idOld, sumsOld := writeStreams(t, r1, map[string]int64{"a": 2 << 20}, 1)
	raw, _ := r1.readBlob(ctx, manifestKey(idOld), -1)
	if raw[0] != blobV1 {
		t.Fatalf("a format-1 repository wrote a version-%d manifest", raw[0])
	}
	k1, _ := r1.Keys()
	if k2, _ := openRepo(t, st, testSecret()).Keys(); len(k1) != 1 || len(k2) != 1 || k1[0].ID != k2[0].ID {
		t.Fatalf("a format-1 repository's key is listed as %v, then as %v: the id must not change between opens", k1, k2)
	}
	if err := r1.RemoveKey(ctx, k1[0].ID); !errors.Is(err, ErrLastKey) {
		t.Fatalf("removing a format-1 repository's only key: %v", err)
	}
	keyFile := Secret{KeyFile: secret.NewBytes(crypto.Random(32))}
	if _, err := r1.AddKey(ctx, AddKeyParams{Secret: Secret{KeyFile: secret.NewBytes([]byte("short"))}}); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("a 5-byte key file added: %v", err)
	}
	if _, err := r1.AddKey(ctx, AddKeyParams{Secret: keyFile}); err != nil {
		t.Fatalf("add key to a format-1 repository: %v", err)
	}
	r2 := openRepo(t, st, keyFile)
	if c := r2.Config(); c.FormatVersion != ConfigVersion || c.UpgradedFrom != 1 || c.WrappedKeys != nil || len(c.Keys) != 2 || c.Keys[0].ID != k1[0].ID {
		t.Fatalf("upgraded config: version %d upgraded_from %d keys %+v", c.FormatVersion, c.UpgradedFrom, c.Keys)
	}
	idNew, sumsNew := writeStreams(t, r2, map[string]int64{"a": 2 << 20}, 2)
	raw, _ = r2.readBlob(ctx, manifestKey(idNew), -1)
	if raw[0] != blobV3 {
		t.Fatalf("an upgraded repository wrote a version-%d manifest, want an authenticated one", raw[0])
	}
	want := map[string]map[string][32]byte{idOld: sumsOld, idNew: sumsNew}
	checkRestores(t, r2, want)
	checkRestores(t, openRepo(t, st, testSecret()), want)
}

// TestManifestTamperRefused: a manifest or sealed object modified in the
// store, or copied to another name, is refused, naming it.
func TestManifestTamperRefused(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openFileStore(t, dir)
	r := initRepo(t, st, true)
	idA, _ := writeStreams(t, r, map[string]int64{"a": 1 << 20}, 1)
	idB, _ := writeStreams(t, r, map[string]int64{"a": 1 << 20}, 2)
	pathA, pathB := filepath.Join(dir, manifestKey(idA)), filepath.Join(dir, manifestKey(idB))
	rawA, err := os.ReadFile(pathA)
	if err != nil {
		t.Fatal(err)
	}
	if rawA[0] != blobV3 {
		t.Fatalf("manifest blob version %d, want %d (authenticated)", rawA[0], blobV3)
	}
	replace := func(path string, b []byte) {
		t.Helper()
		_ = os.Chmod(path, 0o600)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	expectRefused := func(what, id string) {
		t.Helper()
		_, err := r.LoadManifest(ctx, id)
		if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "backup "+id) {
			t.Fatalf("%s: %v (want ErrDamaged naming backup %s)", what, err, id)
		}
		t.Logf("%s: %v", what, err)
	}
	// A's manifest copied over B's.
	replace(pathB, rawA)
	expectRefused("substituted manifest", idB)
	// One bit of A's ciphertext, of its header (the data key generation),
	// of its authenticator.
	for _, at := range []int{len(rawA) / 2, 3, len(rawA) - 1} {
		bad := bytes.Clone(rawA)
		bad[at] ^= 1
		replace(pathA, bad)
		expectRefused("modified manifest", idA)
	}
	// Downgraded to an unauthenticated blob of the old layout.
	bad := append([]byte{blobV1, rawA[1]}, rawA[blobV2Header:len(rawA)-authSize]...)
	replace(pathA, bad)
	expectRefused("manifest without authenticator", idA)
	replace(pathA, rawA)
	if _, err := r.LoadManifest(ctx, idA); err != nil {
		t.Fatalf("restored manifest: %v", err)
	}

	// Sealed objects (binlog segment indexes) the same way.
	if err := r.PutObject(ctx, "binlog/ns/index", []byte("segment index"), ObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	obj, err := os.ReadFile(filepath.Join(dir, objectPrefix+"binlog/ns/index"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, objectPrefix+"binlog/ns/other"), obj, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetObject(ctx, "binlog/ns/other"); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "binlog/ns/other") {
		t.Fatalf("object copied to another name: %v", err)
	}
	// Another repository with its own keys does not accept A's manifest.
	dir2 := t.TempDir()
	r2 := initRepo(t, openFileStore(t, dir2), true)
	idC, _ := writeStreams(t, r2, map[string]int64{"a": 1 << 10}, 3)
	replace(filepath.Join(dir2, manifestKey(idC)), rawA)
	if _, err := r2.LoadManifest(ctx, idC); !errors.Is(err, ErrDamaged) {
		t.Fatalf("manifest from another repository: %v", err)
	}
}

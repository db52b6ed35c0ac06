package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/tidemark-backup/tidemark/internal/crypto"
	"github.com/tidemark-backup/tidemark/internal/secret"
	"github.com/tidemark-backup/tidemark/internal/storage"
)

// FormatVersion is the manifest format this code writes and the only one
// it reads. A manifest with another version is refused by name.
const FormatVersion = 1

// ConfigVersion is the repository config format this code writes. It reads
// format 1 too (one passphrase or key file, one data key, no
// authenticators) and upgrades it to 2 at the first key change; see keys.go.
const ConfigVersion = 2

// Defaults for a new repository.
const (
	DefaultChunkSize        = 8 << 20
	DefaultCompression      = "zstd"
	DefaultCompressionLevel = 1 // zstd level 1: about 200 MB/s per core on dump text here (libzstd)
	minChunkSize            = 64 << 10
	maxChunkSize            = 64 << 20
)

// Sentinel errors callers test with errors.Is.
var (
	ErrNoRepository  = errors.New("no repository at this location")
	ErrRepoExists    = errors.New("a repository already exists at this location")
	ErrWrongKey      = crypto.ErrWrongKey
	ErrNeedKey       = errors.New("the repository is encrypted and no key or passphrase was given")
	ErrBadFormat     = errors.New("unsupported repository format")
	ErrBackupMissing = errors.New("backup not found")
	ErrDamaged       = errors.New("repository data is damaged")
)

// Config is the repository's config object, stored as JSON under "config".
// It records every algorithm by name so a reader never guesses. It holds
// wrapped keys only: nothing in it opens the repository without one of the
// key slots' passphrases or key files.
type Config struct {
	FormatVersion    int               `json:"format_version"`
	ID               string            `json:"id"`
	CreatedAt        time.Time         `json:"created_at"`
	ChunkSize        int               `json:"chunk_size"`
	Hash             string            `json:"hash"`        // "sha256" or "hmac-sha256"
	Compression      string            `json:"compression"` // default for new backups: "zstd" or "none"
	CompressionLevel int               `json:"compression_level"`
	Encryption       string            `json:"encryption"`             // "none" or "aes-256-gcm"
	KDF              *crypto.KDFParams `json:"kdf,omitempty"`          // format 1 only
	WrappedKeys      []byte            `json:"wrapped_keys,omitempty"` // format 1 only
	// Keys are the key slots of an encrypted format-2 repository: each
	// wraps the same repository keys under one passphrase or key file.
	Keys []KeySlot `json:"keys,omitempty"`
	// DataKeys are the data keys, wrapped by the root key; the one with
	// the highest generation seals new data.
	DataKeys []DataKey `json:"data_keys,omitempty"`
	// UpgradedFrom is 1 when a format-1 repository was upgraded: its
	// older manifests and objects carry no authenticator.
	UpgradedFrom int `json:"upgraded_from,omitempty"`
	// ObjectLock, when set, puts chunks and manifests under S3 Object
	// Lock retention as they are written.
	ObjectLock *ObjectLock       `json:"object_lock,omitempty"`
	Extra      map[string]string `json:"extra,omitempty"`
}

// KeySlot is one passphrase or key file that opens the repository.
type KeySlot struct {
	ID        string           `json:"id"`
	Kind      string           `json:"kind"` // KindPassphrase or KindKeyFile
	CreatedAt time.Time        `json:"created_at"`
	KDF       crypto.KDFParams `json:"kdf"`
	Wrapped   []byte           `json:"wrapped"` // crypto.RepoKeys under the slot's KEK
}

// Key slot kinds.
const (
	KindPassphrase = "passphrase"
	KindKeyFile    = "key-file"
)

// DataKey is one generation of data key, wrapped by the root key.
type DataKey struct {
	Generation int       `json:"generation"`
	CreatedAt  time.Time `json:"created_at"`
	Wrapped    []byte    `json:"wrapped"`
}

// maxDataKeys bounds rotations: the generation is two bytes in a blob's
// header.
const maxDataKeys = 1 << 16

// Secret opens an encrypted repository: exactly one of the two is set. It
// never prints either (see package secret).
type Secret struct {
	Passphrase secret.Bytes // from --passphrase-file
	KeyFile    secret.Bytes // raw bytes of --key-file
}

// ReadSecret reads the key of --key-file or the passphrase of
// --passphrase-file (at most one of them; both empty is no secret). A
// passphrase ends at its first trailing newline (echo's); a key file is
// taken byte for byte. Errors name the flag and file, never the contents.
func ReadSecret(keyFile, passphraseFile string) (Secret, error) {
	var s Secret
	if keyFile != "" && passphraseFile != "" {
		return s, errors.New("give --key-file or --passphrase-file, not both")
	}
	var err error
	if keyFile != "" {
		if s.KeyFile, err = secret.ReadFile(keyFile, false); err != nil {
			return s, fmt.Errorf("--key-file: %w", err)
		}
	}
	if passphraseFile != "" {
		if s.Passphrase, err = secret.ReadFile(passphraseFile, true); err != nil {
			return s, fmt.Errorf("--passphrase-file: %w", err)
		}
	}
	return s, nil
}

func (s Secret) empty() bool { return s.Passphrase.IsZero() && s.KeyFile.IsZero() }

// InitOptions configure a new repository.
type InitOptions struct {
	ChunkSize        int    // 0: DefaultChunkSize
	Compression      string // "": zstd
	CompressionLevel int    // 0: DefaultCompressionLevel
	Encrypt          bool
	Secret           Secret
	// ObjectLock puts chunks and manifests under retention; the store must
	// support it (storage.Retainer: S3 with Object Lock on the bucket).
	ObjectLock *ObjectLock
	// ScryptN overrides the passphrase KDF cost (tests only; 0 = default).
	ScryptN int
}

// Repo is an open repository. Safe for concurrent use: several backups may be
// written and read through one Repo at once.
type Repo struct {
	store storage.Storage
	cfg   Config
	codec *codec

	cfgRaw []byte           // the config as read, to detect a concurrent change
	rk     *crypto.RepoKeys // encrypted repositories: the unwrapped repository keys
	slot   string           // the key slot that opened it
	// upgrade holds what a format-1 encrypted repository becomes in format
	// 2 (its opening key as the first slot, its data key as generation 0).
	upgrade *upgrade

	rawBufs sync.Pool // *[]byte scratch for stored chunks being read

	indexMu    sync.Mutex
	index      map[ChunkID]int64 // chunk id → stored size, as listed plus what we uploaded; nil until loaded
	indexSwept map[string]bool   // gc's swept markers seen before the index was listed
	indexAt    time.Time         // when it was listed

	timingMu sync.Mutex
	timing   lockTiming // zero: defaults

	condMu sync.Mutex
	cond   map[string]*condemned // condemnation records read so far

	// viewOf is the Repo this one is a view of (see through), nil for a
	// Repo that was opened.
	viewOf *Repo
}

// through returns a view of r whose requests go to store, a wrapper of r's
// own (a rate bound), sharing r's configuration, keys and codec; what it
// learns of deleted chunks goes to r's chunk index. Its own caches start
// empty. For gc, which must be slowed without slowing the backups that
// share r. Closing the view is not needed and closes nothing.
func (r *Repo) through(store storage.Storage) *Repo {
	return &Repo{store: store, cfg: r.cfg, codec: r.codec, cfgRaw: r.cfgRaw, rk: r.rk, slot: r.slot, upgrade: r.upgrade,
		timing: r.lockTiming(), viewOf: r}
}

// indexMaxAge bounds how long a chunk index is trusted: far less than gc
// keeps its swept markers, by which an older index is found out of date.
const indexMaxAge = 24 * time.Hour

// Store returns the underlying storage.
func (r *Repo) Store() storage.Storage { return r.store }

// Config returns the repository's configuration.
func (r *Repo) Config() Config { return r.cfg }

// Close releases the repository's resources (not the store).
func (r *Repo) Close() { r.codec.close() }

// Init creates a repository on an empty store, after checking that the store
// behaves as the archive needs.
func Init(ctx context.Context, store storage.Storage, opts InitOptions) (*Repo, error) {
	if _, err := store.Stat(ctx, configKey); err == nil {
		return nil, fmt.Errorf("%s: %w; use it as it is, or choose another location", store, ErrRepoExists)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%s: %w", store, err)
	}
	if err := CheckStore(ctx, store); err != nil {
		return nil, err
	}
	cfg := Config{
		FormatVersion:    ConfigVersion,
		ID:               newID(time.Now()),
		CreatedAt:        time.Now().UTC().Truncate(time.Second),
		ChunkSize:        opts.ChunkSize,
		Hash:             "sha256",
		Compression:      opts.Compression,
		CompressionLevel: opts.CompressionLevel,
		Encryption:       "none",
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.ChunkSize < minChunkSize || cfg.ChunkSize > maxChunkSize {
		return nil, fmt.Errorf("chunk size %d is out of range: use %d to %d bytes", cfg.ChunkSize, minChunkSize, maxChunkSize)
	}
	if cfg.Compression == "" {
		cfg.Compression = DefaultCompression
	}
	if cfg.CompressionLevel == 0 {
		cfg.CompressionLevel = DefaultCompressionLevel
	}
	if err := validCompression(cfg.Compression, cfg.CompressionLevel); err != nil {
		return nil, err
	}
	if err := opts.ObjectLock.valid(); err != nil {
		return nil, err
	}
	if opts.ObjectLock != nil {
		if err := storage.CheckRetention(ctx, store); err != nil {
			return nil, fmt.Errorf("--object-lock: %w", err)
		}
		cfg.ObjectLock = opts.ObjectLock
	}
	r := &Repo{store: store}
	var keys *codecKeys
	if opts.Encrypt {
		if opts.Secret.empty() {
			return nil, fmt.Errorf("--encrypt needs --key-file or --passphrase-file")
		}
		rk := crypto.NewRepoKeys()
		slot, err := newSlot(rk, opts.Secret, opts.ScryptN)
		if err != nil {
			return nil, err
		}
		data := crypto.Random(32)
		wrapped, err := rk.WrapDataKey(0, data)
		if err != nil {
			return nil, err
		}
		cfg.Encryption, cfg.Hash = "aes-256-gcm", "hmac-sha256"
		cfg.Keys = []KeySlot{slot}
		cfg.DataKeys = []DataKey{{Generation: 0, CreatedAt: cfg.CreatedAt, Wrapped: wrapped}}
		r.rk, r.slot = rk, slot.ID
		keys = &codecKeys{data: map[uint16][]byte{0: data}, id: rk.ID[:], auth: rk.AuthKey(), v2: true, repoID: cfg.ID}
	} else if !opts.Secret.empty() {
		return nil, fmt.Errorf("a key or passphrase was given without --encrypt: add --encrypt, or drop the key")
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := store.Put(ctx, configKey, bytes.NewReader(data), int64(len(data)), storage.PutOptions{IfNotExists: true}); err != nil {
		if errors.Is(err, storage.ErrExists) {
			return nil, fmt.Errorf("%s: %w (created concurrently)", store, ErrRepoExists)
		}
		return nil, fmt.Errorf("writing repository config to %s: %w", store, err)
	}
	c, err := newCodec(keys)
	if err != nil {
		return nil, err
	}
	r.cfg, r.cfgRaw, r.codec = cfg, data, c
	return r, nil
}

func validCompression(name string, level int) error {
	switch name {
	case "none":
		return nil
	case "zstd":
		if level < 1 || level > 22 {
			return fmt.Errorf("zstd level %d is out of range: use 1 (fastest) to 22", level)
		}
		return nil
	default:
		return fmt.Errorf("unknown compression %q: use zstd or none", name)
	}
}

// Open opens an existing repository, refusing an unknown format version or a
// wrong key before any data is read.
func Open(ctx context.Context, store storage.Storage, secret Secret) (*Repo, error) {
	cfg, raw, err := readConfig(ctx, store)
	if err != nil {
		return nil, err
	}
	if err := validCompression(cfg.Compression, cfg.CompressionLevel); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", store, ErrBadFormat, err)
	}
	if cfg.ChunkSize < minChunkSize || cfg.ChunkSize > maxChunkSize {
		return nil, fmt.Errorf("%s: chunk size %d out of range: %w", store, cfg.ChunkSize, ErrBadFormat)
	}
	if err := cfg.ObjectLock.valid(); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", store, ErrBadFormat, err)
	}
	r := &Repo{store: store, cfg: cfg, cfgRaw: raw}
	var keys *codecKeys
	switch cfg.Encryption {
	case "none":
		if cfg.Hash != "sha256" {
			return nil, fmt.Errorf("%s: hash %q unknown: %w", store, cfg.Hash, ErrBadFormat)
		}
	case "aes-256-gcm":
		if cfg.Hash != "hmac-sha256" {
			return nil, fmt.Errorf("%s: hash %q unknown: %w", store, cfg.Hash, ErrBadFormat)
		}
		if secret.empty() {
			return nil, fmt.Errorf("%s: %w: pass --key-file or --passphrase-file", store, ErrNeedKey)
		}
		if cfg.FormatVersion == 1 {
			keys, err = r.openV1(secret)
		} else {
			keys, err = r.openV2(secret)
		}
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s: encryption %q unknown: %w", store, cfg.Encryption, ErrBadFormat)
	}
	c, err := newCodec(keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", store, err)
	}
	r.codec = c
	return r, nil
}

// RepositoryID reads the id of the repository in store without opening it
// (no key needed): "" when store holds no repository yet. Controllers use
// it to tell whether two stores hold the same repository.
func RepositoryID(ctx context.Context, store storage.Storage) (string, error) {
	cfg, _, err := readConfig(ctx, store)
	if errors.Is(err, ErrNoRepository) {
		return "", nil
	}
	return cfg.ID, err
}

// readConfig reads and parses the config, refusing a format this code does
// not know.
func readConfig(ctx context.Context, store storage.Storage) (Config, []byte, error) {
	var cfg Config
	rc, err := store.Get(ctx, configKey, 0, -1)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return cfg, nil, fmt.Errorf("%s: %w: create one with `tidemark repo init --repo URI`, or check the URI", store, ErrNoRepository)
		}
		return cfg, nil, fmt.Errorf("opening repository %s: %w", store, err)
	}
	data, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	_ = rc.Close()
	if err != nil {
		return cfg, nil, fmt.Errorf("reading repository config from %s: %w", store, err)
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return cfg, nil, fmt.Errorf("%s: repository config is not valid JSON: %w: %w", store, ErrBadFormat, err)
	}
	if cfg.FormatVersion != 1 && cfg.FormatVersion != ConfigVersion {
		return cfg, nil, fmt.Errorf("%s: repository format version %d, this tidemark reads versions 1 and %d: %w; upgrade tidemark", store, cfg.FormatVersion, ConfigVersion, ErrBadFormat)
	}
	return cfg, data, nil
}

// secretKind returns the slot kind a secret opens and its bytes.
func secretKind(s Secret) (string, []byte) {
	if !s.KeyFile.IsZero() {
		return KindKeyFile, s.KeyFile.Reveal()
	}
	return KindPassphrase, s.Passphrase.Reveal()
}

// openV1 opens a format-1 repository's single wrapped key, and prepares
// its upgrade to format 2 (done only by a key change).
func (r *Repo) openV1(secret Secret) (*codecKeys, error) {
	cfg, store := r.cfg, r.store
	if cfg.KDF == nil {
		return nil, fmt.Errorf("%s: encrypted repository config is incomplete: %w", store, ErrBadFormat)
	}
	kind, s := secretKind(secret)
	if want := kdfKind(cfg.KDF.Name); kind != want {
		return nil, fmt.Errorf("%s: the repository was created with a %s: pass --%s: %w", store, want, flagFor(want), ErrWrongKey)
	}
	kek, err := crypto.DeriveKEK(s, *cfg.KDF)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", store, err)
	}
	mk, err := crypto.Unwrap(kek, cfg.WrappedKeys)
	if err != nil {
		if errors.Is(err, crypto.ErrWrongKey) {
			return nil, fmt.Errorf("%s: %w: the key or passphrase does not open this repository", store, ErrWrongKey)
		}
		return nil, fmt.Errorf("%s: %w", store, err)
	}
	// The format-2 form: a new root key, the same id key (chunk ids do not
	// change) and the old data key as generation 0.
	rk := crypto.NewRepoKeys()
	rk.ID = mk.ID
	wrapped, err := rk.Wrap(kek)
	if err != nil {
		return nil, err
	}
	data0, err := rk.WrapDataKey(0, mk.Data[:])
	if err != nil {
		return nil, err
	}
	// The slot's id is derived from the repository's, so that `repo key
	// list` shows the same id on every open until the upgrade stores it.
	sum := sha256.Sum256([]byte("tidemark format-1 key slot " + cfg.ID))
	slot := KeySlot{ID: hex.EncodeToString(sum[:4]), Kind: kind, CreatedAt: cfg.CreatedAt, KDF: *cfg.KDF, Wrapped: wrapped}
	r.rk, r.slot = rk, slot.ID
	r.upgrade = &upgrade{slot: slot, data0: DataKey{Generation: 0, CreatedAt: cfg.CreatedAt, Wrapped: data0}}
	return &codecKeys{data: map[uint16][]byte{0: mk.Data[:]}, id: mk.ID[:], repoID: cfg.ID}, nil
}

// openV2 tries the secret on every key slot of its kind.
func (r *Repo) openV2(secret Secret) (*codecKeys, error) {
	cfg, store := r.cfg, r.store
	if len(cfg.Keys) == 0 || len(cfg.DataKeys) == 0 {
		return nil, fmt.Errorf("%s: encrypted repository config holds no keys: %w", store, ErrBadFormat)
	}
	kind, s := secretKind(secret)
	tried := 0
	var rk *crypto.RepoKeys
	for _, slot := range cfg.Keys {
		if slot.Kind != kind {
			continue
		}
		tried++
		kek, err := crypto.DeriveKEK(s, slot.KDF)
		if err != nil {
			return nil, fmt.Errorf("%s: key %s: %w", store, slot.ID, err)
		}
		k, err := crypto.UnwrapRepoKeys(kek, slot.Wrapped)
		if err == nil {
			rk, r.slot = k, slot.ID
			break
		}
		if !errors.Is(err, crypto.ErrWrongKey) {
			return nil, fmt.Errorf("%s: key %s: %w", store, slot.ID, err)
		}
	}
	if rk == nil {
		if tried == 0 {
			other := KindPassphrase
			if kind == KindPassphrase {
				other = KindKeyFile
			}
			return nil, fmt.Errorf("%s: %w: the repository has no %s key: pass --%s", store, ErrWrongKey, kind, flagFor(other))
		}
		return nil, fmt.Errorf("%s: %w: the %s opens none of the repository's %d %s keys", store, ErrWrongKey, kind, tried, kind)
	}
	keys := &codecKeys{data: make(map[uint16][]byte, len(cfg.DataKeys)), id: rk.ID[:], auth: rk.AuthKey(), v2: true,
		legacy: cfg.UpgradedFrom == 1, repoID: cfg.ID}
	current := -1
	for _, dk := range cfg.DataKeys {
		if dk.Generation < 0 || dk.Generation >= maxDataKeys {
			return nil, fmt.Errorf("%s: data key generation %d out of range: %w", store, dk.Generation, ErrBadFormat)
		}
		data, err := rk.UnwrapDataKey(dk.Generation, dk.Wrapped)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %w", store, ErrDamaged, err)
		}
		keys.data[uint16(dk.Generation)] = data
		current = max(current, dk.Generation)
	}
	keys.current = uint16(current)
	r.rk = rk
	return keys, nil
}

func kdfKind(name string) string {
	if name == "hkdf-sha256" {
		return KindKeyFile
	}
	return KindPassphrase
}

func flagFor(kind string) string {
	if kind == KindKeyFile {
		return "key-file"
	}
	return "passphrase-file"
}

// CheckStore verifies the properties the archive relies on: a create-only
// write is refused when the key exists, a written object is listed at once,
// and ranged reads return the right bytes. A store that fails any of them
// could silently overwrite a manifest or lose a chunk, so it is refused.
func CheckStore(ctx context.Context, store storage.Storage) error {
	key := probePrefix + newID(time.Now())
	body := []byte("tidemark store probe 0123456789")
	fail := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("%s cannot hold a repository: %s: %w", store, what, err)
		}
		return fmt.Errorf("%s cannot hold a repository: %s", store, what)
	}
	defer func() { _ = store.Delete(context.WithoutCancel(ctx), key) }()
	if err := store.Put(ctx, key, bytes.NewReader(body), int64(len(body)), storage.PutOptions{IfNotExists: true}); err != nil {
		return fail("writing a test object failed", err)
	}
	err := store.Put(ctx, key, bytes.NewReader([]byte("x")), 1, storage.PutOptions{IfNotExists: true})
	if !errors.Is(err, storage.ErrExists) {
		return fail("a create-only write over an existing object was not refused (conditional writes unsupported)", err)
	}
	found := false
	if err := store.List(ctx, probePrefix, func(oi storage.ObjectInfo) error {
		if oi.Key == key {
			found = true
			if oi.Size != int64(len(body)) {
				return fmt.Errorf("listed size %d, wrote %d", oi.Size, len(body))
			}
		}
		return nil
	}); err != nil {
		return fail("listing failed", err)
	}
	if !found {
		return fail("an object just written is not listed (no list-after-write consistency)", nil)
	}
	rc, err := store.Get(ctx, key, 6, 5)
	if err != nil {
		return fail("ranged read failed", err)
	}
	got, err := io.ReadAll(rc)
	_ = rc.Close()
	if err != nil {
		return fail("ranged read failed", err)
	}
	if string(got) != string(body[6:11]) {
		return fail(fmt.Sprintf("ranged read returned %q, want %q", got, body[6:11]), nil)
	}
	return nil
}

// syncIndex lists the repository's chunks, so the writer knows which
// chunks exist without a round trip per chunk. The listing is kept for
// later backups until gc has finished a sweep this index did not know of
// (a new swept marker in st, read before this listing), or for at most
// indexMaxAge. A chunk deleted by a sweep still in progress belongs to a
// condemnation record the backup has read, so it is stored again rather
// than trusted from the index. A failed listing is retried by the next
// caller.
func (r *Repo) syncIndex(ctx context.Context, st *gcState) error {
	r.indexMu.Lock()
	fresh := r.index != nil && time.Since(r.indexAt) < indexMaxAge
	for name := range st.swept {
		if !r.indexSwept[name] {
			fresh = false
		}
	}
	r.indexMu.Unlock()
	if fresh {
		return nil
	}
	at := time.Now()
	idx := make(map[ChunkID]int64)
	err := r.store.List(ctx, chunkPrefix, func(oi storage.ObjectInfo) error {
		name := oi.Key[strings.LastIndexByte(oi.Key, '/')+1:]
		id, err := ParseChunkID(name)
		if err != nil {
			return nil //nolint:nilerr // not ours; gc reports strays
		}
		idx[id] = oi.Size
		return nil
	})
	if err != nil {
		return fmt.Errorf("listing chunks in %s: %w", r.store, err)
	}
	swept := make(map[string]bool, len(st.swept))
	for name := range st.swept {
		swept[name] = true
	}
	r.indexMu.Lock()
	// Chunks stored meanwhile by a backup of this process may be missing
	// from the listing: their next create-only put finds them (ErrExists).
	r.index, r.indexSwept, r.indexAt = idx, swept, at
	r.indexMu.Unlock()
	return nil
}

func (r *Repo) known(id ChunkID) (int64, bool) {
	r.indexMu.Lock()
	defer r.indexMu.Unlock()
	s, ok := r.index[id]
	return s, ok
}

func (r *Repo) remember(id ChunkID, size int64) {
	r.indexMu.Lock()
	r.index[id] = size
	r.indexMu.Unlock()
}

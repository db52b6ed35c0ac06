package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/tidemark-backup/tidemark/internal/crypto"
	"github.com/tidemark-backup/tidemark/internal/storage"
)

// FormatVersion is the repository format this code writes and the only one
// it reads. A repository with another version is refused by name.
const FormatVersion = 1

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
// It records every algorithm by name so a reader never guesses.
type Config struct {
	FormatVersion    int               `json:"format_version"`
	ID               string            `json:"id"`
	CreatedAt        time.Time         `json:"created_at"`
	ChunkSize        int               `json:"chunk_size"`
	Hash             string            `json:"hash"`        // "sha256" or "hmac-sha256"
	Compression      string            `json:"compression"` // default for new backups: "zstd" or "none"
	CompressionLevel int               `json:"compression_level"`
	Encryption       string            `json:"encryption"` // "none" or "aes-256-gcm"
	KDF              *crypto.KDFParams `json:"kdf,omitempty"`
	WrappedKeys      []byte            `json:"wrapped_keys,omitempty"`
	Extra            map[string]string `json:"extra,omitempty"`
}

// Secret opens an encrypted repository: exactly one of the two is set.
type Secret struct {
	Passphrase []byte // from --passphrase-file
	KeyFile    []byte // raw bytes of --key-file
}

func (s Secret) empty() bool { return len(s.Passphrase) == 0 && len(s.KeyFile) == 0 }

// InitOptions configure a new repository.
type InitOptions struct {
	ChunkSize        int    // 0: DefaultChunkSize
	Compression      string // "": zstd
	CompressionLevel int    // 0: DefaultCompressionLevel
	Encrypt          bool
	Secret           Secret
	// ScryptN overrides the passphrase KDF cost (tests only; 0 = default).
	ScryptN int
}

// Repo is an open repository. Safe for concurrent use: several backups may be
// written and read through one Repo at once.
type Repo struct {
	store storage.Storage
	cfg   Config
	codec *codec

	rawBufs sync.Pool // *[]byte scratch for stored chunks being read

	indexMu    sync.Mutex
	index      map[ChunkID]int64 // chunk id → stored size, as listed plus what we uploaded; nil until loaded
	indexSwept map[string]bool   // gc's swept markers seen before the index was listed
	indexAt    time.Time         // when it was listed

	timingMu sync.Mutex
	timing   lockTiming // zero: defaults

	condMu sync.Mutex
	cond   map[string]*condemned // condemnation records read so far
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
		FormatVersion:    FormatVersion,
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
	var keys *crypto.MasterKeys
	if opts.Encrypt {
		if opts.Secret.empty() {
			return nil, fmt.Errorf("--encrypt needs --key-file or --passphrase-file")
		}
		var kdf crypto.KDFParams
		secret := opts.Secret.Passphrase
		if len(opts.Secret.KeyFile) > 0 {
			kdf, secret = crypto.KeyFileKDF(), opts.Secret.KeyFile
		} else {
			kdf = crypto.DefaultScrypt()
			if opts.ScryptN > 0 {
				kdf.N = opts.ScryptN
			}
		}
		kek, err := crypto.DeriveKEK(secret, kdf)
		if err != nil {
			return nil, err
		}
		keys = crypto.NewMasterKeys()
		wrapped, err := keys.Wrap(kek)
		if err != nil {
			return nil, err
		}
		cfg.Encryption, cfg.Hash, cfg.KDF, cfg.WrappedKeys = "aes-256-gcm", "hmac-sha256", &kdf, wrapped
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
	return &Repo{store: store, cfg: cfg, codec: c}, nil
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
// wrong key.
func Open(ctx context.Context, store storage.Storage, secret Secret) (*Repo, error) {
	rc, err := store.Get(ctx, configKey, 0, -1)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("%s: %w: create one with `tidemark repo init --repo URI`, or check the URI", store, ErrNoRepository)
		}
		return nil, fmt.Errorf("opening repository %s: %w", store, err)
	}
	data, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	_ = rc.Close()
	if err != nil {
		return nil, fmt.Errorf("reading repository config from %s: %w", store, err)
	}
	var cfg Config
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%s: repository config is not valid JSON: %w: %w", store, ErrBadFormat, err)
	}
	if cfg.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("%s: repository format version %d, this tidemark reads version %d: %w; upgrade tidemark", store, cfg.FormatVersion, FormatVersion, ErrBadFormat)
	}
	if err := validCompression(cfg.Compression, cfg.CompressionLevel); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", store, ErrBadFormat, err)
	}
	var keys *crypto.MasterKeys
	switch cfg.Encryption {
	case "none":
		if cfg.Hash != "sha256" {
			return nil, fmt.Errorf("%s: hash %q unknown: %w", store, cfg.Hash, ErrBadFormat)
		}
	case "aes-256-gcm":
		if cfg.Hash != "hmac-sha256" || cfg.KDF == nil {
			return nil, fmt.Errorf("%s: encrypted repository config is incomplete: %w", store, ErrBadFormat)
		}
		if secret.empty() {
			return nil, fmt.Errorf("%s: %w: pass --key-file or --passphrase-file", store, ErrNeedKey)
		}
		s := secret.Passphrase
		if cfg.KDF.Name == "hkdf-sha256" {
			if len(secret.KeyFile) == 0 {
				return nil, fmt.Errorf("%s: the repository was created with a key file: pass --key-file: %w", store, ErrWrongKey)
			}
			s = secret.KeyFile
		} else if len(secret.Passphrase) == 0 {
			return nil, fmt.Errorf("%s: the repository was created with a passphrase: pass --passphrase-file: %w", store, ErrWrongKey)
		}
		kek, err := crypto.DeriveKEK(s, *cfg.KDF)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", store, err)
		}
		keys, err = crypto.Unwrap(kek, cfg.WrappedKeys)
		if err != nil {
			if errors.Is(err, crypto.ErrWrongKey) {
				return nil, fmt.Errorf("%s: %w: the key or passphrase does not open this repository", store, ErrWrongKey)
			}
			return nil, fmt.Errorf("%s: %w", store, err)
		}
	default:
		return nil, fmt.Errorf("%s: encryption %q unknown: %w", store, cfg.Encryption, ErrBadFormat)
	}
	if cfg.ChunkSize < minChunkSize || cfg.ChunkSize > maxChunkSize {
		return nil, fmt.Errorf("%s: chunk size %d out of range: %w", store, cfg.ChunkSize, ErrBadFormat)
	}
	c, err := newCodec(keys)
	if err != nil {
		return nil, err
	}
	return &Repo{store: store, cfg: cfg, codec: c}, nil
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

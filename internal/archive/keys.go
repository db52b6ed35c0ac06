package archive

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tidemark-backup/tidemark/internal/crypto"
	"github.com/tidemark-backup/tidemark/internal/storage"
)

// Repository keys (format 2). Every key slot — a passphrase or a key file —
// wraps the same repository keys: a root key and the chunk-id key. The root
// key wraps the data keys, one per generation; new chunks, manifests and
// objects are sealed with the highest generation and say in their header
// which generation sealed them, so a rotation rewrites nothing and every
// older blob stays readable. The root key also derives the key of the
// authenticators on manifests, sealed objects and gc records.
//
// What removing a key or rotating the data key does and does not protect
// against: removing a slot stops its passphrase from opening the config as
// it is now stored, but whoever held that passphrase and kept a copy of an
// older config can still unwrap the root key, and with it every data key,
// old and new. Rotation limits what one leaked data key (from a process's
// memory, say) opens to the chunks sealed before the rotation. Neither
// re-encrypts anything.
//
// A key change rewrites the config object and deletes its older versions on
// a store that keeps them (storage.VersionPurger). It is refused when the config
// changed since the Repo was opened, and made under a create-only lock
// object (configLockKey), so of two key changes at once the later is
// refused; reading the config back after the write catches a writer that
// ignores the lock. A process that opened the
// repository earlier goes on sealing with the data key it opened with
// until it opens the repository again.

// ErrLastKey refuses the removal of the only key that opens a repository.
var ErrLastKey = errors.New("it is the repository's last key: add another first (tidemark repo key add)")

// upgrade is a format-1 repository's config in format 2.
type upgrade struct {
	slot  KeySlot
	data0 DataKey
}

// KeyInfo describes one key slot, without any key material.
type KeyInfo struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	CreatedAt time.Time `json:"created_at"`
	// Opened is true for the slot that opened this Repo.
	Opened bool `json:"opened,omitempty"`
}

// DataKeyInfo describes one data key generation, without key material.
type DataKeyInfo struct {
	Generation int       `json:"generation"`
	CreatedAt  time.Time `json:"created_at"`
	Current    bool      `json:"current,omitempty"`
}

func newSlotID() string { return hex.EncodeToString(crypto.Random(4)) }

// newSlot wraps rk under a KEK derived from s.
func newSlot(rk *crypto.RepoKeys, s Secret, scryptN int) (KeySlot, error) {
	if s.empty() {
		return KeySlot{}, errors.New("no key or passphrase given")
	}
	if !s.KeyFile.IsZero() && !s.Passphrase.IsZero() {
		return KeySlot{}, errors.New("give a key file or a passphrase, not both")
	}
	kind, secret := secretKind(s)
	kdf := crypto.KeyFileKDF()
	if kind == KindPassphrase {
		kdf = crypto.DefaultScrypt()
		if scryptN > 0 {
			kdf.N = scryptN
		}
	}
	kek, err := crypto.DeriveKEK(secret, kdf)
	if err != nil {
		return KeySlot{}, err
	}
	wrapped, err := rk.Wrap(kek)
	if err != nil {
		return KeySlot{}, err
	}
	return KeySlot{ID: newSlotID(), Kind: kind, CreatedAt: time.Now().UTC().Truncate(time.Second), KDF: kdf, Wrapped: wrapped}, nil
}

// v2Config returns the config in format 2 (upgraded when it is format 1).
func (r *Repo) v2Config() (Config, error) {
	cfg := r.cfg
	cfg.Keys = slices.Clone(cfg.Keys)
	cfg.DataKeys = slices.Clone(cfg.DataKeys)
	if cfg.Encryption == "none" {
		return cfg, fmt.Errorf("%s: the repository is not encrypted: it has no keys", r.store)
	}
	if cfg.FormatVersion == 1 {
		if r.upgrade == nil {
			return cfg, fmt.Errorf("%s: format-1 config without its upgrade (a bug)", r.store)
		}
		cfg.FormatVersion, cfg.UpgradedFrom = ConfigVersion, 1
		cfg.KDF, cfg.WrappedKeys = nil, nil
		cfg.Keys = []KeySlot{r.upgrade.slot}
		cfg.DataKeys = []DataKey{r.upgrade.data0}
	}
	return cfg, nil
}

// Keys lists the key slots (for a format-1 repository: its one key, with the
// id it will keep once upgraded).
func (r *Repo) Keys() ([]KeyInfo, error) {
	cfg, err := r.v2Config()
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, len(cfg.Keys))
	for i, s := range cfg.Keys {
		out[i] = KeyInfo{ID: s.ID, Kind: s.Kind, CreatedAt: s.CreatedAt, Opened: s.ID == r.slot}
	}
	return out, nil
}

// DataKeys lists the data key generations, oldest first.
func (r *Repo) DataKeys() ([]DataKeyInfo, error) {
	cfg, err := r.v2Config()
	if err != nil {
		return nil, err
	}
	out := make([]DataKeyInfo, len(cfg.DataKeys))
	last := 0
	for i, d := range cfg.DataKeys {
		out[i] = DataKeyInfo{Generation: d.Generation, CreatedAt: d.CreatedAt}
		if d.Generation > cfg.DataKeys[last].Generation {
			last = i
		}
	}
	if len(out) > 0 {
		out[last].Current = true
	}
	return out, nil
}

// AddKeyParams name the key to add.
type AddKeyParams struct {
	Secret  Secret // exactly one of passphrase or key file
	ScryptN int    // tests only; 0: the default cost
}

// AddKey adds a key slot that opens the repository. The Repo is not changed:
// open the repository again to use the new key.
func (r *Repo) AddKey(ctx context.Context, p AddKeyParams) (KeyInfo, error) {
	cfg, err := r.v2Config()
	if err != nil {
		return KeyInfo{}, err
	}
	slot, err := newSlot(r.rk, p.Secret, p.ScryptN)
	if err != nil {
		return KeyInfo{}, fmt.Errorf("%s: adding a key: %w", r.store, err)
	}
	cfg.Keys = append(cfg.Keys, slot)
	if err := r.writeConfig(ctx, cfg); err != nil {
		return KeyInfo{}, err
	}
	return KeyInfo{ID: slot.ID, Kind: slot.Kind, CreatedAt: slot.CreatedAt}, nil
}

// RemoveKey removes the key slot id. Removing the last one is refused
// (ErrLastKey): nothing could open the repository any more.
func (r *Repo) RemoveKey(ctx context.Context, id string) error {
	cfg, err := r.v2Config()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(cfg.Keys, func(s KeySlot) bool { return s.ID == id })
	if i < 0 {
		ids := make([]string, len(cfg.Keys))
		for j, s := range cfg.Keys {
			ids[j] = s.ID
		}
		return fmt.Errorf("%s: no key %q (the keys are %v; tidemark repo key list shows them)", r.store, id, ids)
	}
	if len(cfg.Keys) == 1 {
		return fmt.Errorf("%s: key %s: %w", r.store, id, ErrLastKey)
	}
	cfg.Keys = slices.Delete(cfg.Keys, i, i+1)
	return r.writeConfig(ctx, cfg)
}

// RotateDataKey adds a new data key generation: whatever is written after a
// reopen is sealed with it, and nothing already stored is rewritten.
func (r *Repo) RotateDataKey(ctx context.Context) (DataKeyInfo, error) {
	cfg, err := r.v2Config()
	if err != nil {
		return DataKeyInfo{}, err
	}
	gen := 0
	for _, d := range cfg.DataKeys {
		gen = max(gen, d.Generation+1)
	}
	if gen >= maxDataKeys {
		return DataKeyInfo{}, fmt.Errorf("%s: all %d data key generations are used", r.store, maxDataKeys)
	}
	wrapped, err := r.rk.WrapDataKey(gen, crypto.Random(32))
	if err != nil {
		return DataKeyInfo{}, err
	}
	dk := DataKey{Generation: gen, CreatedAt: time.Now().UTC().Truncate(time.Second), Wrapped: wrapped}
	cfg.DataKeys = append(cfg.DataKeys, dk)
	if err := r.writeConfig(ctx, cfg); err != nil {
		return DataKeyInfo{}, err
	}
	return DataKeyInfo{Generation: gen, CreatedAt: dk.CreatedAt, Current: true}, nil
}

// configLockKey is held (created, create-only) for the length of a key
// change: with the check of the config before the write, it keeps two key
// changes from overwriting each other, which could drop a data key that
// data was already sealed with.
const configLockKey = "config.lock"

// lockConfig takes the key-change lock, or names who holds it.
func (r *Repo) lockConfig(ctx context.Context) (func() error, error) {
	host, _ := os.Hostname()
	body := fmt.Sprintf("key change by %s pid %d since %s\n", host, os.Getpid(), time.Now().UTC().Format(time.RFC3339))
	err := r.store.Put(ctx, configLockKey, strings.NewReader(body), int64(len(body)), storage.PutOptions{IfNotExists: true})
	if errors.Is(err, storage.ErrExists) {
		held := "another key change"
		if rc, gerr := r.store.Get(ctx, configLockKey, 0, 512); gerr == nil {
			b, _ := io.ReadAll(rc)
			_ = rc.Close()
			held = strings.TrimSpace(string(b))
		}
		return nil, fmt.Errorf("%s: a key change is under way (%s): nothing was changed; if that process is gone, delete %s from the repository and run the command again", r.store, held, configLockKey)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: taking the key-change lock: %w", r.store, err)
	}
	return func() error {
		if err := r.store.Delete(context.WithoutCancel(ctx), configLockKey); err != nil {
			return fmt.Errorf("%s: the key change is done, but its lock %s could not be removed (delete it by hand): %w", r.store, configLockKey, err)
		}
		return nil
	}, nil
}

// writeConfig replaces the stored config with cfg, refusing when it changed
// since this Repo read it, and reading it back to catch a concurrent change
// that slipped between the check and the write.
func (r *Repo) writeConfig(ctx context.Context, cfg Config) (err error) {
	unlock, err := r.lockConfig(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if uerr := unlock(); uerr != nil && err == nil {
			err = uerr
		}
	}()
	_, now, err := readConfig(ctx, r.store)
	if err != nil {
		return err
	}
	if !bytes.Equal(now, r.cfgRaw) {
		return fmt.Errorf("%s: the repository config changed since it was opened (another key change?): nothing was changed; run the command again", r.store)
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := r.store.Put(ctx, configKey, bytes.NewReader(data), int64(len(data)), storage.PutOptions{}); err != nil {
		return fmt.Errorf("writing repository config to %s: %w", r.store, err)
	}
	_, back, err := readConfig(ctx, r.store)
	if err != nil {
		return fmt.Errorf("%s: reading the config back after a key change: %w", r.store, err)
	}
	if !bytes.Equal(back, data) {
		return fmt.Errorf("%s: another process changed the repository config at the same time: run `tidemark repo key list` and repeat the change if it is missing", r.store)
	}
	// On a versioned bucket the older config stays as a noncurrent version,
	// and with it any key slot just removed.
	if err := storage.PurgeOldVersions(ctx, r.store, configKey); err != nil {
		return fmt.Errorf("%s: the key change is done, but the older versions of the config (which still hold any removed key) could not be deleted: %w; delete them by hand", r.store, err)
	}
	return nil
}

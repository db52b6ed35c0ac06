package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"

	"golang.org/x/crypto/scrypt"
)

// ErrWrongKey means a key or passphrase did not open the repository: the GCM
// tag of the wrapped key did not verify.
var ErrWrongKey = errors.New("wrong key or passphrase")

// ErrAuth means a sealed payload failed authentication: it was changed after
// it was written, or it belongs to another chunk id.
var ErrAuth = errors.New("ciphertext failed authentication")

// KDF parameters as recorded in the repository config, so a later version can
// raise the cost without breaking old repositories.
type KDFParams struct {
	Name string `json:"name"` // "scrypt" for passphrases, "hkdf-sha256" for key files
	Salt []byte `json:"salt"`
	N    int    `json:"n,omitempty"`
	R    int    `json:"r,omitempty"`
	P    int    `json:"p,omitempty"`
}

// DefaultScrypt is about 100 ms and 32 MiB on a current core: slow enough to
// make guessing costly, fast enough for every command to open the repository.
func DefaultScrypt() KDFParams {
	return KDFParams{Name: "scrypt", Salt: Random(32), N: 1 << 15, R: 8, P: 1}
}

// KeyFileKDF derives the wrapping key from a key file's bytes.
func KeyFileKDF() KDFParams {
	return KDFParams{Name: "hkdf-sha256", Salt: Random(32)}
}

// MinKeyFileBytes is the shortest key file accepted: 32 bytes of entropy is
// what AES-256 needs; anything shorter is a passphrase and belongs in
// --passphrase-file.
const MinKeyFileBytes = 32

// DeriveKEK turns a secret (passphrase or key-file bytes) into the 32-byte key
// that wraps the repository's master keys.
func DeriveKEK(secret []byte, p KDFParams) ([]byte, error) {
	switch p.Name {
	case "scrypt":
		if p.N < 2 || p.R < 1 || p.P < 1 {
			return nil, fmt.Errorf("scrypt parameters N=%d r=%d p=%d are invalid", p.N, p.R, p.P)
		}
		k, err := scrypt.Key(secret, p.Salt, p.N, p.R, p.P, 32)
		if err != nil {
			return nil, fmt.Errorf("scrypt: %w", err)
		}
		return k, nil
	case "hkdf-sha256":
		if len(secret) < MinKeyFileBytes {
			return nil, fmt.Errorf("key file holds %d bytes, at least %d are needed (make one with: head -c 32 /dev/urandom > key)", len(secret), MinKeyFileBytes)
		}
		return hkdf.Key(sha256.New, secret, p.Salt, "tidemark key-encryption key v1", 32)
	default:
		return nil, fmt.Errorf("unknown key derivation %q: this tidemark is too old for the repository", p.Name)
	}
}

// MasterKeys are the repository's secrets: the data key encrypts chunks and
// manifests, the id key makes chunk ids keyed (HMAC), so stored ids reveal
// nothing about the plaintext.
type MasterKeys struct {
	Data [32]byte
	ID   [32]byte
}

// NewMasterKeys returns fresh random keys.
func NewMasterKeys() *MasterKeys {
	var k MasterKeys
	copy(k.Data[:], Random(32))
	copy(k.ID[:], Random(32))
	return &k
}

const wrapAD = "tidemark master keys v1"

// Wrap seals the master keys under kek.
func (k *MasterKeys) Wrap(kek []byte) ([]byte, error) {
	plain := make([]byte, 0, 64)
	plain = append(plain, k.Data[:]...)
	plain = append(plain, k.ID[:]...)
	s, err := NewSealer(kek)
	if err != nil {
		return nil, err
	}
	return s.Seal(nil, plain, []byte(wrapAD)), nil
}

// Unwrap opens wrapped master keys; a wrong kek gives ErrWrongKey.
func Unwrap(kek, wrapped []byte) (*MasterKeys, error) {
	s, err := NewSealer(kek)
	if err != nil {
		return nil, err
	}
	plain, err := s.Open(nil, wrapped, []byte(wrapAD))
	if err != nil {
		return nil, ErrWrongKey
	}
	if len(plain) != 64 {
		return nil, fmt.Errorf("wrapped key holds %d bytes, want 64", len(plain))
	}
	var k MasterKeys
	copy(k.Data[:], plain[:32])
	copy(k.ID[:], plain[32:])
	return &k, nil
}

// IDHash returns the keyed hash used for chunk ids in an encrypted repository.
func (k *MasterKeys) IDHash() hash.Hash { return hmac.New(sha256.New, k.ID[:]) }

// Sealer encrypts and authenticates payloads with AES-256-GCM and a random
// nonce stored in front of the ciphertext. Safe for concurrent use.
type Sealer struct{ aead cipher.AEAD }

// NewSealer returns a sealer for a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("AES-256 needs a 32-byte key, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Overhead is the number of bytes Seal adds.
func (s *Sealer) Overhead() int { return s.aead.NonceSize() + s.aead.Overhead() }

// Seal appends nonce||ciphertext||tag of plain to dst. ad binds the result to
// its context (the chunk id), so a ciphertext moved to another id fails Open.
func (s *Sealer) Seal(dst, plain, ad []byte) []byte {
	nonce := Random(s.aead.NonceSize())
	dst = append(dst, nonce...)
	return s.aead.Seal(dst, nonce, plain, ad)
}

// Open authenticates and decrypts a Seal output, appending to dst.
func (s *Sealer) Open(dst, sealed, ad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < ns+s.aead.Overhead() {
		return nil, fmt.Errorf("%w: %d bytes is shorter than nonce and tag", ErrAuth, len(sealed))
	}
	out, err := s.aead.Open(dst, sealed[:ns], sealed[ns:], ad)
	if err != nil {
		return nil, ErrAuth
	}
	return out, nil
}

// OpenInPlace is Open that decrypts over the ciphertext's own bytes, for a
// caller that owns sealed and wants no allocation.
func (s *Sealer) OpenInPlace(sealed, ad []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < ns+s.aead.Overhead() {
		return nil, fmt.Errorf("%w: %d bytes is shorter than nonce and tag", ErrAuth, len(sealed))
	}
	ct := sealed[ns:]
	out, err := s.aead.Open(ct[:0], sealed[:ns], ct, ad)
	if err != nil {
		return nil, ErrAuth
	}
	return out, nil
}

// Random returns n bytes from the system's CSPRNG.
func Random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand.Read never fails on Linux ≥ 3.17; if it does the
		// process cannot make keys safely at all.
		panic("crypto/rand: " + err.Error())
	}
	return b
}

// RepoKeys are the secrets of a repository in format version 2. Each key
// slot (a passphrase or key file) wraps the same RepoKeys; Root wraps the
// data keys (one per rotation) and derives the authenticator key, ID keys
// chunk ids and never changes (chunk ids must stay comparable across
// rotations for deduplication).
type RepoKeys struct {
	Root [32]byte
	ID   [32]byte
}

// NewRepoKeys returns fresh random keys.
func NewRepoKeys() *RepoKeys {
	var k RepoKeys
	copy(k.Root[:], Random(32))
	copy(k.ID[:], Random(32))
	return &k
}

const repoWrapAD = "tidemark repository keys v2"

// Wrap seals the repository keys under kek (one key slot).
func (k *RepoKeys) Wrap(kek []byte) ([]byte, error) {
	s, err := NewSealer(kek)
	if err != nil {
		return nil, err
	}
	plain := append(append(make([]byte, 0, 64), k.Root[:]...), k.ID[:]...)
	return s.Seal(nil, plain, []byte(repoWrapAD)), nil
}

// UnwrapRepoKeys opens one key slot; a wrong kek gives ErrWrongKey.
func UnwrapRepoKeys(kek, wrapped []byte) (*RepoKeys, error) {
	s, err := NewSealer(kek)
	if err != nil {
		return nil, err
	}
	plain, err := s.Open(nil, wrapped, []byte(repoWrapAD))
	if err != nil {
		return nil, ErrWrongKey
	}
	if len(plain) != 64 {
		return nil, fmt.Errorf("wrapped repository keys hold %d bytes, want 64", len(plain))
	}
	var k RepoKeys
	copy(k.Root[:], plain[:32])
	copy(k.ID[:], plain[32:])
	return &k, nil
}

// WrapDataKey seals data key generation gen under the root key; the
// generation is bound as additional data, so a wrapped key cannot be
// relabelled as another generation.
func (k *RepoKeys) WrapDataKey(gen int, data []byte) ([]byte, error) {
	s, err := NewSealer(k.Root[:])
	if err != nil {
		return nil, err
	}
	return s.Seal(nil, data, fmt.Appendf(nil, "tidemark data key %d", gen)), nil
}

// UnwrapDataKey opens a WrapDataKey output.
func (k *RepoKeys) UnwrapDataKey(gen int, wrapped []byte) ([]byte, error) {
	s, err := NewSealer(k.Root[:])
	if err != nil {
		return nil, err
	}
	data, err := s.Open(nil, wrapped, fmt.Appendf(nil, "tidemark data key %d", gen))
	if err != nil {
		return nil, fmt.Errorf("data key %d: %w", gen, err)
	}
	if len(data) != 32 {
		return nil, fmt.Errorf("data key %d holds %d bytes, want 32", gen, len(data))
	}
	return data, nil
}

// AuthKey derives the key of the authenticators on manifests and sealed
// objects from the root key: it outlives data key rotations, and is never
// used to encrypt.
func (k *RepoKeys) AuthKey() []byte {
	key, err := hkdf.Key(sha256.New, k.Root[:], nil, "tidemark object authenticator v1", 32)
	if err != nil {
		panic("hkdf: " + err.Error()) // only fails for lengths over 255*32
	}
	return key
}

// IDHash returns the keyed hash used for chunk ids.
func (k *RepoKeys) IDHash() hash.Hash { return hmac.New(sha256.New, k.ID[:]) }

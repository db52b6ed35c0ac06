package archive

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"

	"github.com/tidemark-backup/tidemark/internal/crypto"
)

// ChunkID names a chunk by the SHA-256 (HMAC-SHA256 when encrypted) of its
// plaintext.
type ChunkID [32]byte

func (id ChunkID) String() string { return hex.EncodeToString(id[:]) }

// ParseChunkID parses the hex form.
func ParseChunkID(s string) (ChunkID, error) {
	var id ChunkID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("%q is not a chunk id (64 hex digits)", s)
	}
	copy(id[:], b)
	return id, nil
}

func chunkIDFromBytes(b []byte) (ChunkID, error) {
	var id ChunkID
	if len(b) != len(id) {
		return id, fmt.Errorf("chunk id has %d bytes, want %d", len(b), len(id))
	}
	copy(id[:], b)
	return id, nil
}

// Object layout inside a repository.
const (
	configKey      = "config"
	chunkPrefix    = "chunks/"
	manifestPrefix = "manifests/"
	lockPrefix     = "locks/"
	probePrefix    = "probe/"
)

// Stored blob versions (the first byte of every blob).
const (
	// blobV1: version | compression | payload. Unencrypted repositories
	// write only these; encrypted format-1 repositories too, sealed with
	// data key 0.
	blobV1 byte = 1
	// blobV2: version | compression | data key generation (2, big endian) |
	// payload: chunks of encrypted format-2 repositories.
	blobV2 byte = 2
	// blobV3: a blobV2 followed by a 32-byte authenticator (HMAC-SHA256
	// under the repository's authenticator key, over the repository id,
	// the blob's name and every byte before it): manifests, sealed objects
	// and gc records of encrypted format-2 repositories.
	blobV3 byte = 3

	blobV1Header = 2
	blobV2Header = 4
	authSize     = sha256.Size
)

func chunkKey(id ChunkID) string {
	h := id.String()
	return chunkPrefix + h[:2] + "/" + h
}

func manifestKey(backupID string) string { return manifestPrefix + backupID }

// Compression algorithms as recorded in a stored blob's header.
const (
	compNone byte = 0
	compZstd byte = 1
)

// errCorrupt marks a blob whose bytes do not decode to what its name promises.
var errCorrupt = errors.New("corrupt")

// codec turns plaintext into stored blobs and back (see blobV1..blobV3).
// The payload is the (possibly compressed) plaintext, sealed with
// AES-256-GCM when the repository is encrypted, with the blob's name and
// header as additional data so a blob cannot be moved or relabelled; the
// header says which data key sealed it, so rotated keys leave old blobs
// readable. Safe for concurrent use.
type codec struct {
	sealers map[uint16]*crypto.Sealer // by data key generation; nil: not encrypted
	gen     uint16                    // the generation new blobs are sealed with
	v2      bool                      // write blobV2/blobV3 (format-2 config)
	authKey []byte                    // nil: no authenticators (unencrypted or format 1)
	// legacy accepts unauthenticated blobV1 manifests and objects: those
	// written before a format-1 repository was upgraded. They are sealed
	// with data key 0, whose GCM tag still binds them to their name.
	legacy bool
	repoID string
	// idKey keys chunk ids (HMAC-SHA256); nil: plain SHA-256. Two
	// repositories give a plaintext the same chunk id exactly when their
	// idKeys are equal (Copy skips reading what the destination holds).
	idKey []byte

	zstd   zstdImpl // libzstd with cgo, klauspost without: codec_zstd*.go
	hashes sync.Pool
}

// codecKeys are what a codec needs of an opened repository's keys.
type codecKeys struct {
	data    map[uint16][]byte
	current uint16
	id      []byte
	auth    []byte // format 2 only
	v2      bool
	legacy  bool
	repoID  string
}

func newCodec(keys *codecKeys) (*codec, error) {
	c := &codec{zstd: newZstd()}
	if keys != nil {
		c.sealers = make(map[uint16]*crypto.Sealer, len(keys.data))
		for gen, k := range keys.data {
			s, err := crypto.NewSealer(k)
			if err != nil {
				return nil, err
			}
			c.sealers[gen] = s
		}
		if c.sealers[keys.current] == nil {
			return nil, fmt.Errorf("data key %d is missing", keys.current)
		}
		c.gen, c.v2, c.authKey, c.legacy, c.repoID = keys.current, keys.v2, keys.auth, keys.legacy, keys.repoID
		c.idKey = keys.id
	}
	c.hashes.New = func() any {
		if keys != nil {
			return hmac.New(sha256.New, keys.id)
		}
		return sha256.New()
	}
	return c, nil
}

func (c *codec) close() { c.zstd.close() }

// newHash returns a reset hash of chunk ids, for a caller that hashes a
// chunk as it arrives; putHash gives it back.
func (c *codec) newHash() hash.Hash {
	h := c.hashes.Get().(hash.Hash)
	h.Reset()
	return h
}

func (c *codec) putHash(h hash.Hash) { c.hashes.Put(h) }

// id hashes a chunk's plaintext.
func (c *codec) id(plain []byte) ChunkID {
	h := c.hashes.Get().(hash.Hash)
	h.Reset()
	h.Write(plain)
	var id ChunkID
	h.Sum(id[:0])
	c.hashes.Put(h)
	return id
}

// encode appends the stored form of plain to dst. scratch is reused for the
// compressed bytes and returned for the next call.
func (c *codec) encode(dst, scratch []byte, name string, plain []byte, compression string, level int) (out, scratchOut []byte, err error) {
	return c.encodeVersion(dst, scratch, name, plain, compression, level, false)
}

// encodeNamed is encode for a manifest, sealed object or gc record: in a
// repository with authenticators it appends one (blobV3).
func (c *codec) encodeNamed(name string, plain []byte, compression string, level int) ([]byte, error) {
	out, _, err := c.encodeVersion(nil, nil, name, plain, compression, level, c.authKey != nil)
	if err != nil || c.authKey == nil {
		return out, err
	}
	return c.appendAuth(out, name, out), nil
}

func (c *codec) encodeVersion(dst, scratch []byte, name string, plain []byte, compression string, level int, auth bool) (out, scratchOut []byte, err error) {
	comp := compNone
	payload := plain
	if compression == "zstd" {
		var err error
		scratch, err = c.zstd.compress(scratch[:0], plain, level)
		if err != nil {
			return nil, scratch, err
		}
		// Incompressible data is stored as is rather than grown.
		if len(scratch) < len(plain) {
			comp = compZstd
			payload = scratch
		}
	}
	if c.sealers == nil {
		return append(append(dst, blobV1, comp), payload...), scratch, nil
	}
	start := len(dst)
	if c.v2 {
		v := blobV2
		if auth {
			v = blobV3
		}
		dst = append(dst, v, comp, byte(c.gen>>8), byte(c.gen))
	} else {
		dst = append(dst, blobV1, comp)
	}
	hdr := dst[start:]
	return c.sealers[c.gen].Seal(dst, payload, adFor(name, hdr)), scratch, nil
}

// appendAuth appends the authenticator of blob (stored under name) to dst.
func (c *codec) appendAuth(dst []byte, name string, blob []byte) []byte {
	m := hmac.New(sha256.New, c.authKey)
	m.Write([]byte("tidemark object v1\x00"))
	m.Write([]byte(c.repoID))
	m.Write([]byte{0})
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write(blob)
	return m.Sum(dst)
}

// encodeParts is encode for a blob that goes straight to storage: the blob
// is head followed by tail, so an unencrypted payload (the plaintext itself,
// or the compressed scratch) is not copied once more behind its header.
// tail is nil when the repository is encrypted.
func (c *codec) encodeParts(dst, scratch []byte, name string, plain []byte, compression string, level int) (head, tail, scratchOut []byte, err error) {
	if c.sealers != nil {
		head, scratch, err = c.encode(dst, scratch, name, plain, compression, level)
		return head, nil, scratch, err
	}
	comp := compNone
	tail = plain
	if compression == "zstd" {
		if scratch, err = c.zstd.compress(scratch[:0], plain, level); err != nil {
			return nil, nil, scratch, err
		}
		if len(scratch) < len(plain) {
			comp, tail = compZstd, scratch
		}
	}
	return append(dst, blobV1, comp), tail, scratch, nil
}

func adFor(name string, hdr []byte) []byte {
	ad := make([]byte, 0, len(name)+len(hdr))
	ad = append(ad, name...)
	return append(ad, hdr...)
}

// errUnauthenticated marks a manifest or object whose authenticator is
// missing or wrong: it was modified, or copied from another name.
var errUnauthenticated = errors.New("its authenticator does not verify: it was modified, or copied from another name or repository")

// decodeNamed decodes a manifest, sealed object or gc record: in a
// repository with authenticators it must carry one that verifies, checked
// before anything is decrypted or decompressed.
func (c *codec) decodeNamed(dst []byte, name string, stored []byte, limit int) ([]byte, error) {
	if c.authKey != nil {
		switch {
		case len(stored) > 0 && stored[0] == blobV3:
			if len(stored) < blobV2Header+authSize {
				return nil, fmt.Errorf("%w: %d bytes is shorter than header and authenticator", errCorrupt, len(stored))
			}
			body := stored[:len(stored)-authSize]
			want := c.appendAuth(make([]byte, 0, authSize), name, body)
			if !hmac.Equal(want, stored[len(body):]) {
				return nil, fmt.Errorf("%w: %w", errCorrupt, errUnauthenticated)
			}
		case len(stored) > 0 && stored[0] == blobV1 && c.legacy:
			// Written before the repository was upgraded to format 2.
		default:
			return nil, fmt.Errorf("%w: it carries no authenticator (written without the repository key, or altered)", errCorrupt)
		}
	}
	return c.decodeLimit(dst, name, stored, limit)
}

// decodeLimit returns the plaintext of a stored blob named name, appended to
// dst, refusing one of more than limit bytes. It may overwrite stored
// (decryption happens in place). It checks neither a chunk's hash
// (decodeChunk does) nor an authenticator (decodeNamed does).
func (c *codec) decodeLimit(dst []byte, name string, stored []byte, limit int) ([]byte, error) {
	if len(stored) < blobV1Header {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header", errCorrupt, len(stored))
	}
	var gen uint16
	hlen := blobV1Header
	switch stored[0] {
	case blobV1:
	case blobV2, blobV3:
		if len(stored) < blobV2Header {
			return nil, fmt.Errorf("%w: %d bytes is shorter than the header", errCorrupt, len(stored))
		}
		gen, hlen = uint16(stored[2])<<8|uint16(stored[3]), blobV2Header
		if c.sealers == nil {
			return nil, fmt.Errorf("%w: an encrypted blob (data key %d) in an unencrypted repository", errCorrupt, gen)
		}
		if stored[0] == blobV3 {
			stored = stored[:len(stored)-authSize] // checked by decodeNamed
		}
	default:
		return nil, fmt.Errorf("%w: blob format version %d is unknown", errCorrupt, stored[0])
	}
	hdr := stored[:hlen]
	payload := stored[hlen:]
	if c.sealers != nil {
		s := c.sealers[gen]
		if s == nil {
			return nil, fmt.Errorf("%w: sealed with data key %d, which the repository config does not hold", errCorrupt, gen)
		}
		// Decrypt in place: stored is the caller's scratch buffer.
		p, err := s.OpenInPlace(payload, adFor(name, hdr))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errCorrupt, err)
		}
		payload = p
	}
	switch hdr[1] {
	case compNone:
		return append(dst, payload...), nil
	case compZstd:
		return c.zstd.decompress(dst, payload, limit)
	default:
		return nil, fmt.Errorf("%w: compression %d is unknown", errCorrupt, hdr[1])
	}
}

// decodeChunk decodes a chunk and checks that its plaintext hashes to id.
func (c *codec) decodeChunk(dst []byte, id ChunkID, stored []byte) ([]byte, error) {
	plain, err := c.decodeLimit(dst, id.String(), stored, maxChunkPlain)
	if err != nil {
		return nil, err
	}
	if got := c.id(plain); got != id {
		return nil, fmt.Errorf("%w: plaintext hashes to %s", errCorrupt, got)
	}
	return plain, nil
}

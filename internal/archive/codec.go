package archive

import (
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
	configKey       = "config"
	chunkPrefix     = "chunks/"
	manifestPrefix  = "manifests/"
	lockPrefix      = "locks/"
	probePrefix     = "probe/"
	chunkHeaderSize = 2
	blobVersion     = 1
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

// codec turns plaintext into stored blobs and back. A stored blob is
//
//	version(1) | compression(1) | payload
//
// where payload is the (possibly compressed) plaintext, sealed with
// AES-256-GCM when the repository is encrypted, with the blob's name and
// header as additional data so a blob cannot be moved or relabelled.
// Safe for concurrent use.
type codec struct {
	sealer *crypto.Sealer // nil: not encrypted
	idKey  []byte         // nil: plain SHA-256 ids

	zstd   zstdImpl // libzstd with cgo, klauspost without: codec_zstd*.go
	hashes sync.Pool
}

func newCodec(keys *crypto.MasterKeys) (*codec, error) {
	c := &codec{zstd: newZstd()}
	if keys != nil {
		s, err := crypto.NewSealer(keys.Data[:])
		if err != nil {
			return nil, err
		}
		c.sealer = s
		c.idKey = keys.ID[:]
	}
	c.hashes.New = func() any {
		if keys != nil {
			return keys.IDHash()
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
	hdr := [chunkHeaderSize]byte{blobVersion, comp}
	dst = append(dst, hdr[:]...)
	if c.sealer == nil {
		return append(dst, payload...), scratch, nil
	}
	return c.sealer.Seal(dst, payload, adFor(name, hdr)), scratch, nil
}

// encodeParts is encode for a blob that goes straight to storage: the blob
// is head followed by tail, so an unencrypted payload (the plaintext itself,
// or the compressed scratch) is not copied once more behind its header.
// tail is nil when the repository is encrypted.
func (c *codec) encodeParts(dst, scratch []byte, name string, plain []byte, compression string, level int) (head, tail, scratchOut []byte, err error) {
	if c.sealer != nil {
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
	return append(dst, blobVersion, comp), tail, scratch, nil
}

func adFor(name string, hdr [chunkHeaderSize]byte) []byte {
	ad := make([]byte, 0, len(name)+chunkHeaderSize)
	ad = append(ad, name...)
	return append(ad, hdr[:]...)
}

// decode returns the plaintext of a stored blob named name, appended to dst.
// It may overwrite stored (decryption happens in place). It does not check a
// chunk's hash; decodeChunk does.
func (c *codec) decode(dst []byte, name string, stored []byte) ([]byte, error) {
	return c.decodeLimit(dst, name, stored, maxBlobPlain)
}

// decodeLimit is decode refusing a plaintext of more than limit bytes.
func (c *codec) decodeLimit(dst []byte, name string, stored []byte, limit int) ([]byte, error) {
	if len(stored) < chunkHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header", errCorrupt, len(stored))
	}
	hdr := [chunkHeaderSize]byte{stored[0], stored[1]}
	if hdr[0] != blobVersion {
		return nil, fmt.Errorf("%w: blob format version %d is unknown", errCorrupt, hdr[0])
	}
	payload := stored[chunkHeaderSize:]
	if c.sealer != nil {
		// Decrypt in place: stored is the caller's scratch buffer.
		p, err := c.sealer.OpenInPlace(payload, adFor(name, hdr))
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

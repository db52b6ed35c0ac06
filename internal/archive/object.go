package archive

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/tidemark-backup/tidemark/internal/storage"
)

// Sealed objects are the repository's other data: named, not content
// addressed, each one blob encoded like a chunk (compressed, and sealed with
// the object's key as additional data when the repository is encrypted).
// The plaintext is stored behind its CRC-32C, so a damaged object is caught
// in an unencrypted repository too (an encrypted one also authenticates it
// with AES-GCM; in an unencrypted one a stronger hash would stop no one who
// can write the store, and SHA-256 of every byte was a tenth of a binlog
// streamer's CPU).
// The binlog engine stores its segments and segment index this way. They
// live under objectPrefix, which neither the chunk index nor gc's sweep
// reads: their lifetime belongs to the namespace that wrote them.
const objectPrefix = "objects/"

// maxObjectSize bounds one sealed object's plaintext, so a read allocates
// at most this much.
const maxObjectSize = 256 << 20

// ErrObjectName marks a name PutObject refuses.
var ErrObjectName = errors.New("invalid object name")

func objectKey(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") ||
		strings.Contains(name, "//") || strings.Contains(name, "..") {
		return "", fmt.Errorf("%w: %q (a relative path of non-empty parts)", ErrObjectName, name)
	}
	return objectPrefix + name, nil
}

// ObjectOptions tune PutObject.
type ObjectOptions struct {
	// Overwrite replaces an existing object; without it the put is
	// create-only and an existing name fails with storage.ErrExists.
	Overwrite bool
	// Compression and level; "" uses zstd level 3 (objects are small and
	// written seldom enough that ratio matters more than speed).
	Compression string
	Level       int
	// Retain puts the object under the repository's Object Lock retention,
	// like chunks and manifests (nothing without Object Lock): for objects
	// that are never overwritten nor deleted before the period ends, such
	// as closed binlog segments. Not with Overwrite.
	Retain bool
}

// PutObject stores plain under name (a '/'-separated path), durably when it
// returns nil.
func (r *Repo) PutObject(ctx context.Context, name string, plain []byte, opts ObjectOptions) error {
	key, err := objectKey(name)
	if err != nil {
		return err
	}
	if opts.Retain && opts.Overwrite {
		return fmt.Errorf("object %s: an object under retention cannot be overwritten (Retain with Overwrite)", name)
	}
	if len(plain) > maxObjectSize {
		return fmt.Errorf("object %s: %d bytes is over the %d-byte limit", name, len(plain), maxObjectSize)
	}
	compr, level := opts.Compression, opts.Level
	if compr == "" {
		compr, level = "zstd", 3
	}
	body := make([]byte, 0, 4+len(plain))
	body = binary.BigEndian.AppendUint32(body, crc32.Checksum(plain, castagnoli))
	body = append(body, plain...)
	blob, err := r.codec.encodeNamed(key, body, compr, level)
	if err != nil {
		return fmt.Errorf("object %s: %w", name, err)
	}
	popts := storage.PutOptions{IfNotExists: !opts.Overwrite}
	if opts.Retain {
		popts = r.retain(popts)
	}
	if err := r.store.Put(ctx, key, bytes.NewReader(blob), int64(len(blob)), popts); err != nil {
		return fmt.Errorf("object %s: %w", name, err)
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// GetObject reads and verifies the object stored under name. A missing
// object is storage.ErrNotFound; one that does not decode (damaged, moved
// from another name, wrong key) is ErrDamaged.
func (r *Repo) GetObject(ctx context.Context, name string) ([]byte, error) {
	key, err := objectKey(name)
	if err != nil {
		return nil, err
	}
	raw, err := r.readBlob(ctx, key, -1)
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", name, err)
	}
	body, err := r.codec.decodeNamed(nil, key, raw, maxObjectSize+4)
	if err != nil {
		return nil, fmt.Errorf("object %s: %w: %w", name, ErrDamaged, err)
	}
	if len(body) < 4 || crc32.Checksum(body[4:], castagnoli) != binary.BigEndian.Uint32(body) {
		return nil, fmt.Errorf("object %s: %w: its contents do not match their checksum", name, ErrDamaged)
	}
	return body[4:], nil
}

// ObjectInfo is one stored object as ListObjects reports it: its name
// (without the repository's internal prefix), stored size and time.
type ObjectInfo struct {
	Name string
	storage.ObjectInfo
}

// ListObjects calls fn for every object whose name starts with prefix, in no
// guaranteed order.
func (r *Repo) ListObjects(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	return r.store.List(ctx, objectPrefix+prefix, func(oi storage.ObjectInfo) error {
		return fn(ObjectInfo{Name: strings.TrimPrefix(oi.Key, objectPrefix), ObjectInfo: oi})
	})
}

// DeleteObject removes the object stored under name; a missing one is not
// an error. One put with Retain is refused by an Object Lock store until its
// retention ends (storage.ErrRetained).
func (r *Repo) DeleteObject(ctx context.Context, name string) error {
	key, err := objectKey(name)
	if err != nil {
		return err
	}
	if err := r.store.Delete(ctx, key); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("object %s: %w", name, err)
	}
	return nil
}

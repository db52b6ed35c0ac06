package xbstream

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"strings"
)

// Magic begins every chunk.
const Magic = "XBSTCK01"

// Chunk types.
const (
	TypePayload byte = 'P'
	TypeEOF     byte = 'E'
	TypeSeek    byte = 'S' // DialectMariaDB
	TypeSparse  byte = 'S' // DialectPercona
	TypeRemove  byte = 'D'
	TypeRename  byte = 'R'
)

// Chunk flags.
const (
	FlagIgnorable byte = 0x01
	FlagRewrite   byte = 0x02
)

// Dialect says which writer made a stream: the two give chunk type 'S'
// different meanings.
type Dialect int

const (
	// DialectMariaDB: mariabackup / mbstream ('S' is a seek).
	DialectMariaDB Dialect = iota
	// DialectPercona: Percona XtraBackup / xbstream ('S' is a sparse chunk).
	DialectPercona
)

// maxPath is the writers' FN_REFLEN: a longer path is corruption.
const maxPath = 512

// DefaultMaxPayload bounds one chunk's payload. mariabackup and xtrabackup
// group a file's writes into chunks of at most 10 MiB, or one write of the
// copy buffer; a larger length is treated as corruption rather than
// allocated.
const DefaultMaxPayload = 64 << 20

// ErrCorrupt is wrapped by every error about the stream's content (bad
// magic, checksum, truncation, a chunk out of order); errors of the
// underlying reader are returned wrapped as they are.
var ErrCorrupt = errors.New("xbstream: corrupt stream")

// Hole is one entry of a sparse chunk's map: skip Skip bytes of the file,
// then take Len bytes from the payload.
type Hole struct {
	Skip, Len uint32
}

// Chunk is one chunk of a stream. Data (and Sparse) are valid until the
// next call to Next.
type Chunk struct {
	Type  byte
	Flags byte
	Path  string
	// NewPath is a rename's target.
	NewPath string
	// Offset is where a payload's (or sparse chunk's) data goes in the
	// file, or a seek's new position.
	Offset int64
	Data   []byte
	// Sparse is a Percona sparse chunk's map; Data is then the payload
	// without the holes.
	Sparse []Hole
	// At is the chunk's offset in the stream.
	At int64
}

// End is how far into the file a payload or sparse chunk reaches.
func (c *Chunk) End() int64 {
	n := int64(len(c.Data))
	for _, h := range c.Sparse {
		n += int64(h.Skip)
	}
	return c.Offset + n
}

// Options adjusts a Reader.
type Options struct {
	Dialect    Dialect
	MaxPayload int // 0: DefaultMaxPayload
}

// Reader reads chunks from a stream. It is not safe for concurrent use.
type Reader struct {
	r    *bufio.Reader
	o    Options
	at   int64
	open map[string]int64 // path → next expected offset
	buf  []byte
	hdr  [20]byte
	err  error
}

// NewReader reads the stream r.
func NewReader(r io.Reader, o Options) *Reader {
	if o.MaxPayload <= 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	return &Reader{r: bufio.NewReaderSize(r, 1<<20), o: o, open: map[string]int64{}}
}

// Offset is how many bytes of the stream have been read.
func (x *Reader) Offset() int64 { return x.at }

// Open lists the files that have chunks but no end-of-file chunk yet.
func (x *Reader) Open() []string {
	out := make([]string, 0, len(x.open))
	for p := range x.open {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Next returns the next chunk, or io.EOF at the end of a complete stream.
// A stream that ends inside a chunk, or with files that never got their
// end-of-file chunk, is an ErrCorrupt error naming them. After an error,
// Next returns the same error.
func (x *Reader) Next() (*Chunk, error) {
	if x.err != nil {
		return nil, x.err
	}
	c, err := x.next()
	if err != nil {
		x.err = err
		return nil, err
	}
	return c, nil
}

func (x *Reader) corrupt(at int64, path, format string, args ...any) error {
	where := fmt.Sprintf("at stream offset %d", at)
	if path != "" {
		where = fmt.Sprintf("in file %q %s", path, where)
	}
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, where, fmt.Sprintf(format, args...))
}

// full reads exactly len(b) bytes; a short read is a truncation naming
// what was being read.
func (x *Reader) full(b []byte, start int64, path, what string) error {
	n, err := io.ReadFull(x.r, b)
	x.at += int64(n)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return x.corrupt(start, path, "the stream ends inside a chunk (%s, %d of %d bytes read): it is truncated", what, n, len(b))
	default:
		return fmt.Errorf("xbstream: reading the stream at offset %d: %w", x.at, err)
	}
}

func (x *Reader) next() (*Chunk, error) {
	for {
		start := x.at
		if _, err := x.r.Peek(1); err != nil {
			if !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("xbstream: reading the stream at offset %d: %w", x.at, err)
			}
			if open := x.Open(); len(open) > 0 {
				more := ""
				if len(open) > 5 {
					more = fmt.Sprintf(" and %d more", len(open)-5)
					open = open[:5]
				}
				return nil, x.corrupt(start, "", "the stream ends while %d file(s) lack their end-of-file chunk (%s%s): it is truncated",
					len(x.open), strings.Join(open, ", "), more)
			}
			return nil, io.EOF
		}
		h := x.hdr[:14]
		if err := x.full(h, start, "", "chunk header"); err != nil {
			return nil, err
		}
		if string(h[:8]) != Magic {
			return nil, x.corrupt(start, "", "no chunk magic %q (found %q): not an xbstream stream, or damaged", Magic, h[:8])
		}
		c := &Chunk{Flags: h[8], Type: h[9], At: start}
		plen := binary.LittleEndian.Uint32(h[10:14])
		if plen >= maxPath {
			return nil, x.corrupt(start, "", "path length %d is more than the format allows (%d)", plen, maxPath-1)
		}
		p := make([]byte, plen)
		if err := x.full(p, start, "", "path"); err != nil {
			return nil, err
		}
		c.Path = string(p)
		switch {
		case c.Type == TypeEOF:
			// A file of zero bytes is an end-of-file chunk alone.
			delete(x.open, c.Path)
			return c, nil
		case c.Type == TypePayload, c.Type == TypeSparse && x.o.Dialect == DialectPercona:
			return x.payload(c)
		case c.Type == TypeSeek && x.o.Dialect == DialectMariaDB:
			b := x.hdr[:8]
			if err := x.full(b, start, c.Path, "seek offset"); err != nil {
				return nil, err
			}
			c.Offset = int64(binary.LittleEndian.Uint64(b))
			if c.Offset < 0 {
				return nil, x.corrupt(start, c.Path, "seek to a negative offset")
			}
			x.open[c.Path] = c.Offset
			return c, nil
		case c.Type == TypeRemove:
			delete(x.open, c.Path)
			return c, nil
		case c.Type == TypeRename:
			b := x.hdr[:4]
			if err := x.full(b, start, c.Path, "rename target length"); err != nil {
				return nil, err
			}
			n := binary.LittleEndian.Uint32(b)
			if n >= maxPath {
				return nil, x.corrupt(start, c.Path, "rename target length %d is more than the format allows", n)
			}
			np := make([]byte, n)
			if err := x.full(np, start, c.Path, "rename target"); err != nil {
				return nil, err
			}
			c.NewPath = string(np)
			if off, ok := x.open[c.Path]; ok { // renamed while open: it continues under its new name
				delete(x.open, c.Path)
				x.open[c.NewPath] = off
			}
			return c, nil
		case c.Flags&FlagIgnorable != 0:
			// An ignorable chunk of a type we do not know is laid out
			// like a payload (the writers' readers parse it so): read,
			// verify and skip it.
			if _, err := x.payloadBody(c); err != nil {
				return nil, err
			}
			continue
		default:
			return nil, x.corrupt(start, c.Path, "unknown chunk type %q (flags %#x)", c.Type, c.Flags)
		}
	}
}

func (x *Reader) payload(c *Chunk) (*Chunk, error) {
	c, err := x.payloadBody(c)
	if err != nil {
		return nil, err
	}
	if want, ok := x.open[c.Path]; ok && want != c.Offset {
		return nil, x.corrupt(c.At, c.Path, "chunk out of order: it is for file offset %d, the file's data so far ends at %d", c.Offset, want)
	} else if !ok && c.Offset != 0 {
		return nil, x.corrupt(c.At, c.Path, "the file's first chunk is for file offset %d, not 0", c.Offset)
	}
	x.open[c.Path] = c.End()
	return c, nil
}

// payloadBody reads what follows the path of a payload-shaped chunk and
// verifies its checksum.
func (x *Reader) payloadBody(c *Chunk) (*Chunk, error) {
	start := c.At
	var nmap uint32
	if c.Type == TypeSparse {
		b := x.hdr[:4]
		if err := x.full(b, start, c.Path, "sparse map size"); err != nil {
			return nil, err
		}
		nmap = binary.LittleEndian.Uint32(b)
	}
	h := x.hdr[:20]
	if err := x.full(h, start, c.Path, "payload header"); err != nil {
		return nil, err
	}
	length := binary.LittleEndian.Uint64(h[0:8])
	off := binary.LittleEndian.Uint64(h[8:16])
	sum := binary.LittleEndian.Uint32(h[16:20])
	if length > uint64(x.o.MaxPayload) || uint64(nmap)*8 > uint64(x.o.MaxPayload) {
		return nil, x.corrupt(start, c.Path, "chunk of %d bytes (%d map entries) is larger than any writer makes (%d): damaged length", length, nmap, x.o.MaxPayload)
	}
	if off > 1<<62 {
		return nil, x.corrupt(start, c.Path, "file offset %d is out of range", off)
	}
	c.Offset = int64(off)
	need := int(nmap)*8 + int(length)
	if cap(x.buf) < need {
		x.buf = make([]byte, need)
	}
	b := x.buf[:need]
	if err := x.full(b, start, c.Path, "payload"); err != nil {
		return nil, err
	}
	if got := crc32.ChecksumIEEE(b); got != sum {
		return nil, x.corrupt(start, c.Path, "checksum mismatch for %d bytes at file offset %d (stored %#08x, computed %#08x)", length, off, sum, got)
	}
	if nmap > 0 {
		c.Sparse = make([]Hole, nmap)
		for i := range c.Sparse {
			c.Sparse[i] = Hole{Skip: binary.LittleEndian.Uint32(b[i*8:]), Len: binary.LittleEndian.Uint32(b[i*8+4:])}
		}
		var sum uint64
		for _, h := range c.Sparse {
			sum += uint64(h.Len)
		}
		if sum != length {
			return nil, x.corrupt(start, c.Path, "sparse map covers %d bytes, the payload has %d", sum, length)
		}
	}
	c.Data = b[nmap*8:]
	return c, nil
}

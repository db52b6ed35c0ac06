package storage

import (
	"errors"
	"io"
)

// BytesReader reads the concatenation of byte slices without copying them
// into one: the archive hands a chunk's header and its payload to a store
// this way. It seeks (so retries can rewind it) and its WriteTo writes each
// slice with one call, which the file store uses to write a chunk with no
// staging buffer.
type BytesReader struct {
	parts [][]byte
	size  int64
	off   int64
}

// NewBytesReader returns a reader over the parts, in order. The parts must
// not change while it is in use.
func NewBytesReader(parts ...[]byte) *BytesReader {
	r := &BytesReader{parts: parts}
	for _, p := range parts {
		r.size += int64(len(p))
	}
	return r
}

// Size is the total length of the parts.
func (r *BytesReader) Size() int64 { return r.size }

// Len is the number of unread bytes.
func (r *BytesReader) Len() int { return int(r.size - r.off) }

// locate returns the part holding offset off and off's place within it.
func (r *BytesReader) locate(off int64) (int, int64) {
	for i, p := range r.parts {
		if off < int64(len(p)) {
			return i, off
		}
		off -= int64(len(p))
	}
	return len(r.parts), 0
}

func (r *BytesReader) Read(b []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n := 0
	i, in := r.locate(r.off)
	for ; i < len(r.parts) && n < len(b); i, in = i+1, 0 {
		n += copy(b[n:], r.parts[i][in:])
	}
	r.off += int64(n)
	return n, nil
}

// WriteTo writes the unread bytes to w, one Write per part.
func (r *BytesReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	i, in := r.locate(r.off)
	for ; i < len(r.parts); i, in = i+1, 0 {
		p := r.parts[i][in:]
		if len(p) == 0 {
			continue
		}
		n, err := w.Write(p)
		total += int64(n)
		r.off += int64(n)
		if err == nil && n < len(p) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// Seek implements io.Seeker.
func (r *BytesReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, errors.New("storage.BytesReader.Seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("storage.BytesReader.Seek: negative position")
	}
	r.off = offset
	return offset, nil
}

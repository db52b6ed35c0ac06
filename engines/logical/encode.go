package logical

import (
	"bufio"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/zeebo/xxh3"
)

// Rows travel in LOAD DATA's default text format: fields separated by tab,
// rows ended by '\n', NULL as \N, and \, tab, newline, CR and NUL escaped
// with a backslash. LOAD DATA reads it with no options beyond CHARACTER SET
// binary, and it compresses as well as any dump text.

// escapes maps a byte that needs escaping to the letter after the backslash.
var escapes = func() (t [256]byte) {
	t['\\'], t['\t'], t['\n'], t['\r'], t[0] = '\\', 't', 'n', 'r', '0'
	return t
}()

// encodeSegment bounds how much of one value is escaped into the buffer
// before it is flushed, so a huge BLOB never needs a buffer twice its size.
const encodeSegment = 256 << 10

// rowEncoder appends rows to a buffer and writes the buffer to w once it
// holds about writeBufferSize bytes: one append per run of plain bytes, no
// per-call overhead of a bufio.Writer per field. When w offers the unused
// rest of its own buffer (an archive stream's chunk), rows are appended
// there and the Write takes them in place: the dump's text is then copied
// once, from the socket's buffer into the chunk, escaping as it goes.
type rowEncoder struct {
	w     io.Writer
	ab    availableBuffer // w's, or nil
	own   []byte          // ours, for when w offers too little room
	buf   []byte          // where rows go: own's or w's
	limit int             // flush once buf holds this much

	// The rows' checksum: each row's encoded bytes (its newline included)
	// hashed with XXH3-64, the hashes added, so the sum does not depend on
	// the order rows are read in (see rowSum).
	noSum    bool // leave the checksum out
	sum      rowSum
	rowStart int         // where the row being encoded starts in buf; -1 between rows
	split    xxh3.Hasher // the row's hash so far, when a flush cut it
	cut      bool        // split holds the row's first part
}

// rowSum is an order-independent checksum of a set of rows: their count and
// the sum (mod 2^64) of their XXH3-64 hashes. A changed value changes one
// hash; a lost or repeated row changes the count.
type rowSum struct {
	Rows int64
	Sum  uint64
}

// hex is the sum as the manifest records it (JSON numbers lose bits above
// 2^53).
func (s rowSum) hex() string { return fmt.Sprintf("%016x", s.Sum) }

// availableBuffer is bufio.Writer's AvailableBuffer, which
// archive.StreamWriter also has.
type availableBuffer interface{ AvailableBuffer() []byte }

// Appending to w's buffer: it must offer at least directMin bytes, and the
// encoder flushes directMargin before its end, so that a row or a value
// segment (which escaping may double) rarely runs past it. One that does is
// still written correctly: append moves the bytes and Write copies them.
const (
	directMargin = 2*encodeSegment + 64<<10
	directMin    = directMargin + 64<<10
	directFlush  = 256 << 10
)

func newRowEncoder(w io.Writer) *rowEncoder {
	e := &rowEncoder{w: w, rowStart: -1}
	if ab, ok := w.(availableBuffer); ok {
		e.ab = ab
	}
	e.reset()
	return e
}

// reset points buf at w's free room when there is enough of it, and at our
// own buffer otherwise.
func (e *rowEncoder) reset() {
	limit := writeBufferSize
	if e.ab != nil {
		b := e.ab.AvailableBuffer()
		if cap(b) >= directMin {
			// Written every directFlush bytes: w hashes what it takes
			// while it is still in this core's cache.
			e.buf, e.limit = b, min(cap(b)-directMargin, directFlush)
			return
		}
		if cap(b) > 0 {
			// Fill the rest of w's chunk from our buffer, so that the
			// next one starts empty and is offered whole.
			limit = cap(b)
		}
	}
	if e.own == nil {
		e.own = make([]byte, 0, writeBufferSize+encodeSegment)
	}
	e.buf, e.limit = e.own[:0], limit
}

// writeRow writes one row of driver values: []byte for strings and most
// types, int64/uint64/float64 where the driver parsed the text protocol's
// numbers, nil for NULL. The values may be overwritten once it returns.
func (e *rowEncoder) writeRow(vals []driver.Value) error {
	e.rowStart = len(e.buf)
	b := e.buf
	for i, v := range vals {
		if i > 0 {
			b = append(b, '\t')
		}
		switch v := v.(type) {
		case []byte:
			var err error
			if b, err = e.appendValue(b, v); err != nil {
				return err
			}
		case nil:
			b = append(b, '\\', 'N')
		case int64:
			b = strconv.AppendInt(b, v, 10)
		case uint64:
			b = strconv.AppendUint(b, v, 10)
		case float64:
			// Shortest text that parses back to the same double.
			b = strconv.AppendFloat(b, v, 'g', -1, 64)
		case float32:
			b = strconv.AppendFloat(b, float64(v), 'g', -1, 32)
		case string:
			b = appendEscaped(b, []byte(v))
		default:
			e.buf = b
			return fmt.Errorf("unexpected value of type %T from the driver", v)
		}
	}
	e.buf = append(b, '\n')
	e.endRow()
	if len(e.buf) >= e.limit {
		return e.flush()
	}
	return nil
}

// endRow adds the row just encoded to the checksum.
func (e *rowEncoder) endRow() {
	if e.noSum {
		e.sum.Rows++
		e.rowStart = -1
		return
	}
	row := e.buf[e.rowStart:]
	var h uint64
	if e.cut {
		_, _ = e.split.Write(row)
		h = e.split.Sum64()
		e.split.Reset()
		e.cut = false
	} else {
		h = xxh3.Hash(row)
	}
	e.sum.Rows++
	e.sum.Sum += h
	e.rowStart = -1
}

// bigValue is the length from which a value goes through appendValue,
// which checks that it fits.
const bigValue = 16 << 10

// writeFields writes one row read off the wire: a nil field is NULL, any
// other is the value's text. The fields may be overwritten once it returns.
func (e *rowEncoder) writeFields(fields [][]byte) error {
	e.rowStart = len(e.buf)
	b := e.buf
	for i, v := range fields {
		if i > 0 {
			b = append(b, '\t')
		}
		if v == nil {
			b = append(b, '\\', 'N')
			continue
		}
		if len(v) > bigValue {
			var err error
			if b, err = e.appendValue(b, v); err != nil {
				return err
			}
			continue
		}
		b = appendEscaped(b, v)
	}
	e.buf = append(b, '\n')
	e.endRow()
	if len(e.buf) >= e.limit {
		return e.flush()
	}
	return nil
}

// appendValue appends v escaped to b (e.buf's contents) a segment at a
// time, flushing first whenever the segment might not fit in b's capacity
// once escaped (which at most doubles it), so a long value neither grows
// our buffer nor runs past the end of the room w offered.
func (e *rowEncoder) appendValue(b, v []byte) ([]byte, error) {
	for {
		k := min(len(v), encodeSegment)
		if len(b) > 0 && (cap(b)-len(b) < 2*k || len(b) >= e.limit) {
			e.buf = b
			if err := e.flush(); err != nil {
				return nil, err
			}
			b = e.buf
		}
		b = appendEscaped(b, v[:k])
		if v = v[k:]; len(v) == 0 {
			return b, nil
		}
	}
}

// flush writes out what the buffer holds.
func (e *rowEncoder) flush() error {
	if len(e.buf) == 0 {
		return nil
	}
	if e.rowStart >= 0 && !e.noSum {
		// A long value is cut here: hash the row's part before it goes.
		_, _ = e.split.Write(e.buf[e.rowStart:])
		e.cut = true
	}
	_, err := e.w.Write(e.buf)
	e.reset()
	if e.rowStart >= 0 {
		e.rowStart = 0
	}
	return err
}

// SWAR constants: one in every byte, the high bit of every byte.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// appendEscaped appends b to dst with every byte of escapes replaced by its
// backslash sequence, copying the runs between them whole. It tests eight
// bytes at a time for a byte below 0x0e (which takes in NUL, tab, LF and CR)
// or equal to a backslash; only a word that may hold one is looked at byte by
// byte, so a false alarm (bytes 1-8, 11, 12, or a borrow) costs eight table
// look-ups and is never wrong. A value where alarms are frequent (binary
// data) finishes byte by byte.
func appendEscaped(dst, b []byte) []byte {
	start, i, alarms := 0, 0, 0
	for ; len(b)-i >= 8; i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		x := w ^ (ones * '\\')
		if ((w-ones*0x0e)&^w|(x-ones)&^x)&highs == 0 {
			continue
		}
		// In binary data a third of the words raise an alarm, and the
		// branch mispredicts: the plain loop below is faster there.
		if alarms++; alarms >= 3 && alarms*4 > i/8 {
			break
		}
		for j := i; j < i+8; j++ {
			if e := escapes[b[j]]; e != 0 {
				dst = append(dst, b[start:j]...)
				dst = append(dst, '\\', e)
				start = j + 1
			}
		}
	}
	for ; i < len(b); i++ {
		if e := escapes[b[i]]; e != 0 {
			dst = append(dst, b[start:i]...)
			dst = append(dst, '\\', e)
			start = i + 1
		}
	}
	return append(dst, b[start:]...)
}

// rowReader parses the format back, for the INSERT path. Fields are
// returned unescaped; a nil field is NULL. The slices are valid until the
// next call.
type rowReader struct {
	r      *bufio.Reader
	fields [][]byte
	buf    []byte
	line   int64
}

func newRowReader(r io.Reader) *rowReader { return &rowReader{r: bufio.NewReaderSize(r, 1<<20)} }

var errNullMarker = []byte{}

// next returns the next row's fields, or io.EOF after the last row.
func (p *rowReader) next() ([][]byte, error) {
	line, err := p.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// A row longer than the buffer: collect it.
		p.buf = append(p.buf[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = p.r.ReadSlice('\n')
			p.buf = append(p.buf, line...)
		}
		line = p.buf
	}
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) == 0 {
			return nil, io.EOF
		}
		if !errors.Is(err, io.EOF) {
			return nil, err
		}
		return nil, fmt.Errorf("row %d: truncated (no end of line)", p.line+1)
	}
	p.line++
	line = line[:len(line)-1]
	p.fields = p.fields[:0]
	// Unescape in place: the output is never longer than the input.
	out := line[:0]
	start := 0
	isNull := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch c {
		case '\t':
			p.fields = append(p.fields, fieldOf(out[start:], isNull))
			start, isNull = len(out), false
		case '\\':
			i++
			if i >= len(line) {
				return nil, fmt.Errorf("row %d: dangling backslash", p.line)
			}
			switch line[i] {
			case 't':
				out = append(out, '\t')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case '0':
				out = append(out, 0)
			case 'N':
				isNull = true
			default:
				out = append(out, line[i])
			}
		default:
			out = append(out, c)
		}
	}
	p.fields = append(p.fields, fieldOf(out[start:], isNull))
	return p.fields, nil
}

func fieldOf(b []byte, null bool) []byte {
	if null {
		return nil
	}
	if b == nil {
		return errNullMarker
	}
	return b
}

// appendHexLiteral appends X'...' (or NULL) for an INSERT.
func appendHexLiteral(dst, b []byte) []byte {
	const hex = "0123456789ABCDEF"
	if b == nil {
		return append(dst, "NULL"...)
	}
	dst = append(dst, 'X', '\'')
	for _, c := range b {
		dst = append(dst, hex[c>>4], hex[c&15])
	}
	return append(dst, '\'')
}

package logical

import (
	"bufio"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strconv"
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

// rowEncoder writes rows; scratch avoids an allocation per number.
type rowEncoder struct {
	w       *bufio.Writer
	scratch []byte
}

// writeRow writes one row of driver values: []byte for strings and most
// types, int64/uint64/float64 where the driver parsed the text protocol's
// numbers, nil for NULL.
func (e *rowEncoder) writeRow(vals []driver.Value) error {
	for i, v := range vals {
		if i > 0 {
			_ = e.w.WriteByte('\t')
		}
		switch v := v.(type) {
		case nil:
			_, _ = e.w.WriteString(`\N`)
		case []byte:
			e.writeEscaped(v)
		case int64:
			e.scratch = strconv.AppendInt(e.scratch[:0], v, 10)
			_, _ = e.w.Write(e.scratch)
		case uint64:
			e.scratch = strconv.AppendUint(e.scratch[:0], v, 10)
			_, _ = e.w.Write(e.scratch)
		case float64:
			// Shortest text that parses back to the same double.
			e.scratch = strconv.AppendFloat(e.scratch[:0], v, 'g', -1, 64)
			_, _ = e.w.Write(e.scratch)
		case float32:
			e.scratch = strconv.AppendFloat(e.scratch[:0], float64(v), 'g', -1, 32)
			_, _ = e.w.Write(e.scratch)
		case string:
			e.writeEscaped([]byte(v))
		default:
			return fmt.Errorf("unexpected value of type %T from the driver", v)
		}
	}
	return e.w.WriteByte('\n')
}

func (e *rowEncoder) writeEscaped(b []byte) {
	start := 0
	for i, c := range b {
		if x := escapes[c]; x != 0 {
			_, _ = e.w.Write(b[start:i])
			_ = e.w.WriteByte('\\')
			_ = e.w.WriteByte(x)
			start = i + 1
		}
	}
	_, _ = e.w.Write(b[start:])
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

package logical

import (
	"bufio"
	"bytes"
	"database/sql/driver"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/zeebo/xxh3"
)

// refEncoder is the encoder as it was before the fast path, byte by byte
// through a bufio.Writer: the reference the fast one must match exactly,
// since LOAD DATA reads the bytes back.
//
// With runs set it is the encoder exactly as it was before (runs between
// escapes written whole through the bufio.Writer), for the benchmark.
type refEncoder struct {
	w       *bufio.Writer
	scratch []byte
	runs    bool
}

func (e *refEncoder) writeRow(vals []driver.Value) error {
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

func (e *refEncoder) writeEscaped(b []byte) {
	if e.runs {
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
		return
	}
	for _, c := range b {
		switch c {
		case '\\':
			_, _ = e.w.WriteString(`\\`)
		case '\t':
			_, _ = e.w.WriteString(`\t`)
		case '\n':
			_, _ = e.w.WriteString(`\n`)
		case '\r':
			_, _ = e.w.WriteString(`\r`)
		case 0:
			_, _ = e.w.WriteString(`\0`)
		default:
			_ = e.w.WriteByte(c)
		}
	}
}

func encodeRef(t testing.TB, rows [][]driver.Value) []byte {
	var out bytes.Buffer
	e := &refEncoder{w: bufio.NewWriterSize(&out, writeBufferSize)}
	for _, r := range rows {
		if err := e.writeRow(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.w.Flush(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// chunkedWriter records every Write, to check the buffer is bounded.
// chunkedWriter records the largest write; it offers no AvailableBuffer,
// so the encoder's own buffer and its bound are what is tested.
type chunkedWriter struct {
	buf     bytes.Buffer
	largest int
}

func (w *chunkedWriter) Write(p []byte) (int, error) {
	w.largest = max(w.largest, len(p))
	return w.buf.Write(p)
}

func (w *chunkedWriter) Bytes() []byte { return w.buf.Bytes() }
func (w *chunkedWriter) Len() int      { return w.buf.Len() }

func encodeNew(t testing.TB, rows [][]driver.Value) *chunkedWriter {
	out := &chunkedWriter{}
	e := newRowEncoder(out)
	for _, r := range rows {
		// The driver reuses its value slice: so does this test.
		vals := append([]driver.Value(nil), r...)
		if err := e.writeRow(vals); err != nil {
			t.Fatal(err)
		}
		clear(vals)
	}
	if err := e.flush(); err != nil {
		t.Fatal(err)
	}
	return out
}

// randomBytes returns n bytes drawn from every byte value, with the bytes
// that need escaping made as frequent as density (0..1) says.
func randomBytes(r *rand.Rand, n int, density float64) []byte {
	special := []byte{0, '\t', '\n', '\r', '\\', 1, 8, 11, 12, 13, 14, '\\' + 1, '\\' - 1, 0x80, 0xdc, 0xff}
	b := make([]byte, n)
	for i := range b {
		if r.Float64() < density {
			b[i] = special[r.IntN(len(special))]
		} else {
			b[i] = byte(r.UintN(256))
		}
	}
	return b
}

func randomValue(r *rand.Rand) driver.Value {
	switch r.IntN(12) {
	case 0:
		return nil
	case 1:
		return []byte{}
	case 2:
		return int64(r.Uint64())
	case 3:
		return r.Uint64()
	case 4:
		return math.Float64frombits(r.Uint64())
	case 5:
		return float32(r.NormFloat64())
	case 6:
		return string(randomBytes(r, r.IntN(40), 0.3))
	default:
		n := r.IntN(70)
		if r.IntN(50) == 0 {
			n = r.IntN(3 * encodeSegment)
		}
		return randomBytes(r, n, []float64{0, 0.01, 0.1, 0.5, 1}[r.IntN(5)])
	}
}

// TestEncoderMatchesReference compares the encoder with the byte-by-byte
// reference over random rows: every byte value, NULLs, empty strings,
// numbers, values longer than a segment and than the buffer.
func TestEncoderMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 40 {
		var rows [][]driver.Value
		for range 1 + r.IntN(400) {
			row := make([]driver.Value, 1+r.IntN(8))
			for i := range row {
				row[i] = randomValue(r)
			}
			rows = append(rows, row)
		}
		want := encodeRef(t, rows)
		got := encodeNew(t, rows)
		if !bytes.Equal(got.Bytes(), want) {
			i := 0
			for i < min(got.Len(), len(want)) && got.Bytes()[i] == want[i] {
				i++
			}
			t.Fatalf("round %d: output differs from the reference at byte %d of %d/%d", round, i, got.Len(), len(want))
		}
		if limit := writeBufferSize + 2*encodeSegment + 64; got.largest > limit {
			t.Fatalf("round %d: a write of %d bytes, more than %d", round, got.largest, limit)
		}
	}
}

// TestEscapeEveryPosition puts every byte value at every position of
// values up to 24 bytes long, over a background of each byte value, next to
// a second escaped byte or not. Every word-sized fast path and the
// byte-by-byte tail are crossed.
func TestEscapeEveryPosition(t *testing.T) {
	ref := func(b []byte) []byte {
		var out bytes.Buffer
		e := &refEncoder{w: bufio.NewWriter(&out)}
		e.writeEscaped(b)
		_ = e.w.Flush()
		return out.Bytes()
	}
	var dst []byte
	for _, bg := range []int{0, 1, '\t', 0x0e, 'a', '\\' - 1, '\\', '\\' + 1, 0x80, 0xdc, 0xff} {
		for n := 0; n <= 24; n++ {
			b := bytes.Repeat([]byte{byte(bg)}, n)
			for pos := range n {
				for c := range 256 {
					b[pos] = byte(c)
					if n > 1 {
						b[(pos+n/2)%n] = '\n'
					}
					dst = appendEscaped(dst[:0], b)
					if want := ref(b); !bytes.Equal(dst, want) {
						t.Fatalf("%q: got %q, want %q", b, dst, want)
					}
					b[(pos+n/2)%n] = byte(bg)
				}
				b[pos] = byte(bg)
			}
		}
	}
}

func FuzzEscape(f *testing.F) {
	f.Add([]byte("plain text"))
	f.Add([]byte("a\\b\tc\nd\re\x00f"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		rows := [][]driver.Value{{b, nil, []byte{}, b}}
		want := encodeRef(t, rows)
		if got := encodeNew(t, rows); !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("got %q, want %q", got.Bytes(), want)
		}
	})
}

// sysbenchRows imitates the rows of a sysbench table as the driver returns
// them: id and k parsed to int64 (or, with CONCAT, as text), c and pad as
// digit groups.
func sysbenchRows(n int, intsAsText bool) [][]driver.Value {
	r := rand.New(rand.NewPCG(3, 4))
	digits := func(groups, size int) []byte {
		var b []byte
		for g := range groups {
			if g > 0 {
				b = append(b, '-')
			}
			for range size {
				b = append(b, byte('0'+r.IntN(10)))
			}
		}
		return b
	}
	rows := make([][]driver.Value, n)
	for i := range rows {
		id, k := int64(i+1), int64(r.IntN(1_000_000))
		var idv, kv driver.Value = id, k
		if intsAsText {
			idv, kv = strconv.AppendInt(nil, id, 10), strconv.AppendInt(nil, k, 10)
		}
		rows[i] = []driver.Value{idv, kv, digits(10, 11), digits(5, 11)}
	}
	return rows
}

func rowsBytes(rows [][]driver.Value) int64 {
	var out bytes.Buffer
	e := newRowEncoder(&out)
	for _, r := range rows {
		_ = e.writeRow(r)
	}
	_ = e.flush()
	return int64(out.Len())
}

// BenchmarkEncode compares the reference encoder with the fast one, in MB/s
// of encoded output: "sysbench" is dump text with few escapes, "binary"
// random bytes (about one byte in fifty escaped).
func BenchmarkEncode(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	binary := make([][]driver.Value, 2000)
	for i := range binary {
		binary[i] = []driver.Value{randomBytes(r, 256, 0)}
	}
	sets := []struct {
		name string
		rows [][]driver.Value
	}{
		{"sysbench", sysbenchRows(10000, false)},
		{"binary", binary},
	}
	for _, set := range sets {
		size := rowsBytes(set.rows)
		b.Run(set.name+"/old", func(b *testing.B) {
			b.SetBytes(size)
			e := &refEncoder{w: bufio.NewWriterSize(io.Discard, writeBufferSize), runs: true}
			for b.Loop() {
				for _, row := range set.rows {
					_ = e.writeRow(row)
				}
			}
		})
		b.Run(set.name+"/new", func(b *testing.B) {
			b.SetBytes(size)
			e := newRowEncoder(io.Discard)
			for b.Loop() {
				for _, row := range set.rows {
					_ = e.writeRow(row)
				}
			}
		})
	}
}

// chunkWriter is a stand-in for archive.StreamWriter's AvailableBuffer
// contract: fixed-size chunks, a Write of a slice appended to the offered
// room is taken in place. It counts the bytes taken in place and copied.
type chunkWriter struct {
	chunk          int
	cur            []byte
	out            bytes.Buffer
	inPlace, moved int
}

func (c *chunkWriter) AvailableBuffer() []byte {
	if c.cur == nil {
		c.cur = make([]byte, 0, c.chunk)
	}
	return c.cur[len(c.cur):len(c.cur):c.chunk]
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	if l := len(c.cur); len(p) > 0 && c.cur != nil && len(p) <= c.chunk-l && &c.cur[:l+1][l] == &p[0] {
		c.cur = c.cur[:l+len(p)]
		c.inPlace += len(p)
	} else {
		c.moved += len(p)
		for q := p; len(q) > 0; {
			if c.cur == nil {
				c.cur = make([]byte, 0, c.chunk)
			}
			k := min(len(q), c.chunk-len(c.cur))
			c.cur = append(c.cur, q[:k]...)
			q = q[k:]
			if len(c.cur) == c.chunk {
				c.out.Write(c.cur)
				c.cur = nil
			}
		}
		return len(p), nil
	}
	if len(c.cur) == c.chunk {
		c.out.Write(c.cur)
		c.cur = nil
	}
	return len(p), nil
}

func (c *chunkWriter) bytes() []byte { return append(c.out.Bytes(), c.cur...) }

// TestEncoderAppendsInPlace writes random rows into a writer that offers
// its chunk's free room: the output must equal the reference's, and with
// values of up to 100 bytes nearly every byte must have been appended in
// place rather than copied. Values up to three segments long (which often
// do not fit the room left) must still come out right.
func TestEncoderAppendsInPlace(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, big := range []bool{false, true} {
		var rows [][]driver.Value
		var fields [][][]byte
		n := 80_000
		if big {
			n = 1500
		}
		for range n {
			row := make([]driver.Value, 1+r.IntN(8))
			frow := make([][]byte, len(row))
			for i := range row {
				var v driver.Value
				switch {
				case big:
					v = randomValue(r)
				case r.IntN(8) == 0:
					v = nil
				default:
					v = randomBytes(r, r.IntN(100), []float64{0, 0.01, 0.1}[r.IntN(3)])
				}
				switch v := v.(type) {
				case nil:
				case []byte:
					row[i], frow[i] = v, v
				default:
					frow[i] = fmt.Append([]byte{}, v) // non-nil even when empty: nil is NULL
					row[i] = frow[i]
				}
			}
			rows, fields = append(rows, row), append(fields, frow)
		}
		want := encodeRef(t, rows)
		for _, chunk := range []int{2 << 20, 4 << 20} {
			w := &chunkWriter{chunk: chunk}
			e := newRowEncoder(w)
			for _, f := range fields {
				if err := e.writeFields(f); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.flush(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(w.bytes(), want) {
				got := w.bytes()
				i := 0
				for i < min(len(got), len(want)) && got[i] == want[i] {
					i++
				}
				t.Fatalf("chunk %d, big values %v: output differs from the reference at %d (%d bytes, want %d): %q vs %q", chunk, big, i, len(got), len(want), got[max(0, i-20):min(len(got), i+20)], want[max(0, i-20):min(len(want), i+20)])
			}
			// Copied: the room left at each chunk's end once the encoder
			// stops appending there (under directMin), and a row beyond it.
			if limit := (len(want)/chunk + 1) * (directMin + 64<<10); !big && w.moved > limit {
				t.Errorf("chunk %d: %d bytes in place, %d copied, want at most %d copied", chunk, w.inPlace, w.moved, limit)
			}
			t.Logf("chunk %d, big values %v: %d bytes, %d in place, %d copied", chunk, big, len(want), w.inPlace, w.moved)
		}
	}
}

// TestRowChecksum: the encoder's checksum is the sum of XXH3 over each
// encoded line, whether a long value made it flush in the middle of a row
// or not, through its own buffer or in place in the stream's, and it does
// not depend on the order of the rows.
func TestRowChecksum(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var rows [][]driver.Value
	for range 3000 {
		row := make([]driver.Value, 1+r.IntN(6))
		for i := range row {
			row[i] = randomValue(r)
		}
		rows = append(rows, row)
	}
	// Some rows far longer than a flush.
	for range 5 {
		rows = append(rows, []driver.Value{int64(1), randomBytes(r, 3*encodeSegment+17, 0.2), nil})
	}
	encode := func(rows [][]driver.Value, w io.Writer) rowSum {
		e := newRowEncoder(w)
		for _, row := range rows {
			if err := e.writeRow(append([]driver.Value(nil), row...)); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.flush(); err != nil {
			t.Fatal(err)
		}
		return e.sum
	}
	own := &chunkedWriter{}
	got := encode(rows, own)
	var want rowSum
	for _, line := range bytes.SplitAfter(own.Bytes(), []byte("\n")) {
		if len(line) > 0 {
			want.Rows++
			want.Sum += xxh3.Hash(line)
		}
	}
	if got != want || got.Rows != int64(len(rows)) {
		t.Fatalf("checksum %+v, the lines give %+v (%d rows)", got, want, len(rows))
	}
	inPlace := &chunkWriter{chunk: 4 << 20}
	if got := encode(rows, inPlace); got != want {
		t.Errorf("in place: %+v, want %+v", got, want)
	}
	reversed := slices.Clone(rows)
	slices.Reverse(reversed)
	if got := encode(reversed, &chunkedWriter{}); got != want {
		t.Errorf("rows in reverse order: %+v, want %+v", got, want)
	}
	changed := slices.Clone(rows)
	changed[7] = []driver.Value{"a changed row"}
	if got := encode(changed, &chunkedWriter{}); got == want {
		t.Error("a changed row left the checksum as it was")
	}
}

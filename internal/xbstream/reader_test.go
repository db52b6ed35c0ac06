package xbstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"
)

// chunks builds streams the way the writers lay them out.
type chunks struct{ bytes.Buffer }

func (w *chunks) head(flags, typ byte, path string) {
	w.WriteString(Magic)
	w.WriteByte(flags)
	w.WriteByte(typ)
	_ = binary.Write(w, binary.LittleEndian, uint32(len(path)))
	w.WriteString(path)
}

func (w *chunks) payload(path string, off uint64, data []byte) {
	w.head(0, TypePayload, path)
	_ = binary.Write(w, binary.LittleEndian, uint64(len(data)))
	_ = binary.Write(w, binary.LittleEndian, off)
	_ = binary.Write(w, binary.LittleEndian, crc32.ChecksumIEEE(data))
	w.Write(data)
}

func (w *chunks) eof(path string) { w.head(0, TypeEOF, path) }

// readAll assembles every file of a stream in memory, as mbstream would.
func readAll(t *testing.T, r io.Reader, o Options) (map[string][]byte, error) {
	t.Helper()
	x := NewReader(r, o)
	files := map[string][]byte{}
	for {
		c, err := x.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return files, err
		}
		switch c.Type {
		case TypePayload:
			f := files[c.Path]
			if int64(len(f)) < c.Offset {
				f = append(f, make([]byte, c.Offset-int64(len(f)))...)
			}
			files[c.Path] = append(f[:c.Offset], c.Data...)
		case TypeEOF:
			if _, ok := files[c.Path]; !ok {
				files[c.Path] = []byte{}
			}
		case TypeRename:
			if f, ok := files[c.Path]; ok {
				files[c.NewPath] = f
				delete(files, c.Path)
			}
		case TypeRemove:
			delete(files, c.Path)
		}
	}
}

// TestInterleaved: chunks of several files interleaved, an empty file,
// several chunks per file: every file comes back whole.
func TestInterleaved(t *testing.T) {
	var w chunks
	w.payload("ibdata1", 0, []byte("aaaa"))
	w.payload("db/t.ibd", 0, []byte("xx"))
	w.payload("ibdata1", 4, []byte("bbb"))
	w.eof("db/empty.MYD")
	w.payload("db/t.ibd", 2, []byte("yy"))
	w.eof("ibdata1")
	w.eof("db/t.ibd")
	files, err := readAll(t, &w, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ibdata1": "aaaabbb", "db/t.ibd": "xxyy", "db/empty.MYD": ""}
	if len(files) != len(want) {
		t.Fatalf("files %v", files)
	}
	for p, s := range want {
		if string(files[p]) != s {
			t.Errorf("%s = %q, want %q", p, files[p], s)
		}
	}
}

// TestSeekAndIgnorable: a MariaDB seek moves a file's next offset; a file
// renamed while open continues under its new name; a removal is reported;
// an ignorable chunk of an unknown type is skipped; an unknown one that is
// not ignorable is an error.
func TestSeekAndIgnorable(t *testing.T) {
	var w chunks
	w.payload("aria_log.00000001", 0, []byte("0123456789"))
	w.head(0, TypeSeek, "aria_log.00000001")
	_ = binary.Write(&w, binary.LittleEndian, uint64(4))
	w.payload("aria_log.00000001", 4, []byte("ab"))
	// An ignorable chunk of type 'Z', payload-shaped.
	w.head(FlagIgnorable, 'Z', "whatever")
	_ = binary.Write(&w, binary.LittleEndian, uint64(3))
	_ = binary.Write(&w, binary.LittleEndian, uint64(0))
	_ = binary.Write(&w, binary.LittleEndian, crc32.ChecksumIEEE([]byte("zzz")))
	w.WriteString("zzz")
	w.eof("aria_log.00000001")
	// A file renamed while open continues under its new name.
	w.payload("d/a.MAD", 0, []byte("xy"))
	w.head(0, TypeRename, "d/a.MAD")
	_ = binary.Write(&w, binary.LittleEndian, uint32(len("d/b.MAD")))
	w.WriteString("d/b.MAD")
	w.payload("d/b.MAD", 2, []byte("z"))
	w.eof("d/b.MAD")
	w.head(0, TypeRemove, "gone")
	files, err := readAll(t, bytes.NewReader(w.Bytes()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(files["aria_log.00000001"]); got != "0123ab" {
		t.Errorf("after the seek: %q", got)
	}
	if _, ok := files["d/a.MAD"]; ok || string(files["d/b.MAD"]) != "xyz" {
		t.Errorf("renamed while open: %q", files)
	}
	var u chunks
	u.head(0, 'Z', "x")
	if _, err := readAll(t, &u, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "unknown chunk type") {
		t.Errorf("unknown type: %v", err)
	}
}

// TestSparse: a Percona sparse chunk; the map and payload are checksummed
// together and the holes count toward the file's next offset.
func TestSparse(t *testing.T) {
	var w chunks
	w.head(0, TypeSparse, "t.ibd")
	holes := []Hole{{Skip: 0, Len: 3}, {Skip: 5, Len: 2}}
	data := []byte("abcde")
	var body bytes.Buffer
	for _, h := range holes {
		_ = binary.Write(&body, binary.LittleEndian, h)
	}
	body.Write(data)
	_ = binary.Write(&w, binary.LittleEndian, uint32(len(holes)))
	_ = binary.Write(&w, binary.LittleEndian, uint64(len(data)))
	_ = binary.Write(&w, binary.LittleEndian, uint64(0))
	_ = binary.Write(&w, binary.LittleEndian, crc32.ChecksumIEEE(body.Bytes()))
	w.Write(body.Bytes())
	w.payload("t.ibd", 10, []byte("Z"))
	w.eof("t.ibd")
	x := NewReader(bytes.NewReader(w.Bytes()), Options{Dialect: DialectPercona})
	c, err := x.Next()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Sparse) != 2 || c.Sparse[1] != holes[1] || string(c.Data) != "abcde" || c.End() != 10 {
		t.Fatalf("sparse chunk: %+v", c)
	}
	for {
		_, err := x.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The same bytes read as MariaDB's dialect are not a seek: refused.
	if _, err := readAll(t, bytes.NewReader(w.Bytes()), Options{}); err == nil {
		t.Error("a Percona sparse chunk read as MariaDB's seek passed")
	}
}

// TestBadInput: every truncation of a valid stream, a flipped payload
// byte, a bad magic, an out-of-order chunk, a huge length and a file
// without its end: each a clear ErrCorrupt naming file and offset, never a
// panic or a short file returned as complete.
func TestBadInput(t *testing.T) {
	var w chunks
	w.payload("ibdata1", 0, bytes.Repeat([]byte("i"), 100))
	w.payload("db/t.ibd", 0, []byte("tt"))
	w.payload("ibdata1", 100, []byte("jj"))
	w.eof("ibdata1")
	w.eof("db/t.ibd")
	good := w.Bytes()
	for n := 1; n < len(good); n++ {
		_, err := readAll(t, bytes.NewReader(good[:n]), Options{})
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}

	bad := bytes.Clone(good)
	bad[len(Magic)+2+4+len("ibdata1")+20+50] ^= 1 // a payload byte of ibdata1's first chunk
	_, err := readAll(t, bytes.NewReader(bad), Options{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"ibdata1" at stream offset 0`) || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("flipped byte: %v", err)
	}

	bad = bytes.Clone(good)
	copy(bad, "XBSTCK02")
	if _, err := readAll(t, bytes.NewReader(bad), Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "magic") {
		t.Errorf("bad magic: %v", err)
	}

	var o chunks
	o.payload("f", 0, []byte("ab"))
	o.payload("f", 5, []byte("cd"))
	if _, err := readAll(t, &o, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "out of order") {
		t.Errorf("out of order: %v", err)
	}

	var h chunks
	h.head(0, TypePayload, "f")
	_ = binary.Write(&h, binary.LittleEndian, uint64(1<<40))
	_ = binary.Write(&h, binary.LittleEndian, uint64(0))
	_ = binary.Write(&h, binary.LittleEndian, uint32(0))
	if _, err := readAll(t, &h, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "larger than any writer") {
		t.Errorf("huge length: %v", err)
	}

	var e chunks
	e.payload("a", 0, []byte("1"))
	e.payload("b", 0, []byte("2"))
	e.eof("a")
	_, err = readAll(t, &e, Options{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "(b)") {
		t.Errorf("missing end of file: %v", err)
	}
}

// FuzzReader: arbitrary bytes never panic and never allocate beyond the
// payload bound.
func FuzzReader(f *testing.F) {
	var w chunks
	w.payload("ibdata1", 0, []byte("abc"))
	w.eof("ibdata1")
	f.Add(w.Bytes())
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		x := NewReader(bytes.NewReader(b), Options{MaxPayload: 1 << 16})
		for range 1000 {
			if _, err := x.Next(); err != nil {
				return
			}
		}
	})
}

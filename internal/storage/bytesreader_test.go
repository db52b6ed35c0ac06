package storage

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

func TestBytesReader(t *testing.T) {
	parts := [][]byte{[]byte("he"), nil, []byte("llo, "), {}, []byte("world")}
	want := []byte("hello, world")
	r := NewBytesReader(parts...)
	if r.Size() != int64(len(want)) {
		t.Fatalf("size %d", r.Size())
	}
	if err := iotest.TestReader(r, want); err != nil {
		t.Fatal(err)
	}
	for off := range len(want) + 1 {
		if _, err := r.Seek(int64(off), io.SeekStart); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		n, err := r.WriteTo(&buf)
		if err != nil || n != int64(len(want)-off) || !bytes.Equal(buf.Bytes(), want[off:]) {
			t.Fatalf("WriteTo from %d: %q %d %v", off, buf.Bytes(), n, err)
		}
		if r.Len() != 0 {
			t.Fatalf("Len after WriteTo: %d", r.Len())
		}
		if pos, _ := r.Seek(-int64(len(want)-off), io.SeekEnd); pos != int64(off) {
			t.Fatalf("seek from end: %d", pos)
		}
		b, err := io.ReadAll(iotest.OneByteReader(r))
		if err != nil || !bytes.Equal(b, want[off:]) {
			t.Fatalf("read from %d: %q %v", off, b, err)
		}
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Error("negative seek accepted")
	}
}

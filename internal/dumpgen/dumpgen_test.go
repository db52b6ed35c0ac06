package dumpgen

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestDeterministicAndDistinct(t *testing.T) {
	tmpl := Template(1)
	a, _ := io.ReadAll(NewReader(tmpl, 1<<20+17, 0))
	b, _ := io.ReadAll(NewReader(tmpl, 1<<20+17, 0))
	c, _ := io.ReadAll(NewReader(tmpl, 1<<20+17, 1))
	if len(a) != 1<<20+17 {
		t.Fatalf("read %d bytes", len(a))
	}
	if !bytes.Equal(a, b) {
		t.Fatal("same seed and pass differ")
	}
	if bytes.Equal(a[:4096+8], c[:4096+8]) {
		t.Fatal("different passes are equal")
	}
	// Small reads must give the same bytes as one big read.
	r := NewReader(tmpl, 1<<20+17, 0)
	var small []byte
	buf := make([]byte, 4093)
	for {
		n, err := r.Read(buf)
		small = append(small, buf[:n]...)
		if errors.Is(err, io.EOF) {
			break
		}
	}
	if !bytes.Equal(a, small) {
		t.Fatal("read size changes the bytes")
	}
}

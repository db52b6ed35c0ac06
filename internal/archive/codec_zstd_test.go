package archive

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"

	"github.com/tidemark-backup/tidemark/internal/dumpgen"
)

// zstdImpls is every implementation this build has: the pure-Go one, always
// compiled in, and the build's default (libzstd when cgo is on, the pure-Go
// one again when it is off).
func zstdImpls(t testing.TB) map[string]zstdImpl {
	impls := map[string]zstdImpl{"go": newGoZstd(), "default": newZstd()}
	t.Logf("default zstd implementation: %T", impls["default"])
	t.Cleanup(func() {
		for _, z := range impls {
			z.close()
		}
	})
	return impls
}

func dumpText(t testing.TB, n int) []byte {
	t.Helper()
	b, err := io.ReadAll(dumpgen.NewReader(tmpl(), int64(n), 1))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCodecZstdCrossRead: what either implementation writes, both read, at
// every size class of frame header (no content size under 256 bytes from
// klauspost, 1-, 2- and 4-byte sizes) and across the level range.
func TestCodecZstdCrossRead(t *testing.T) {
	impls := zstdImpls(t)
	text := dumpText(t, 9<<20)
	cases := []struct{ size, level int }{
		{1, 1}, {100, 1}, {255, 3}, {256, 1}, {1000, 1}, {70000, 1},
		{1 << 20, 1}, {1 << 20, 3}, {1 << 20, 7}, {1 << 20, 12}, {256 << 10, 19}, {256 << 10, 22},
		{DefaultChunkSize, 1}, {9 << 20, 1},
	}
	for _, tc := range cases {
		plain := text[:tc.size]
		for wn, w := range impls {
			frame, err := w.compress([]byte("keep"), plain, tc.level)
			if err != nil {
				t.Fatalf("%s compress %d bytes at level %d: %v", wn, tc.size, tc.level, err)
			}
			if string(frame[:4]) != "keep" {
				t.Fatalf("%s compress overwrote dst", wn)
			}
			frame = frame[4:]
			for rn, r := range impls {
				got, err := r.decompress([]byte("pre"), frame, maxChunkPlain)
				if err != nil {
					t.Fatalf("%d bytes, level %d, written by %s, read by %s: %v", tc.size, tc.level, wn, rn, err)
				}
				if !bytes.Equal(got[3:], plain) || string(got[:3]) != "pre" {
					t.Fatalf("%d bytes, level %d, written by %s, read by %s: plaintext differs", tc.size, tc.level, wn, rn)
				}
			}
		}
	}
}

// rawFrame builds a zstd frame of one raw block holding content, whose
// header claims claimed bytes of plaintext (8-byte content size field).
func rawFrame(claimed uint64, content []byte) []byte {
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0} // magic; single segment, 8-byte size
	f = binary.LittleEndian.AppendUint64(f, claimed)
	bh := uint32(1) | uint32(len(content))<<3 // last block, raw
	f = append(f, byte(bh), byte(bh>>8), byte(bh>>16))
	return append(f, content...)
}

// TestCodecZstdRefusesOversizedOrLying: a frame that claims, or produces,
// more plaintext than the limit is corrupt, for both implementations, and
// is refused before its claimed size is allocated.
func TestCodecZstdRefusesOversizedOrLying(t *testing.T) {
	content := bytes.Repeat([]byte("row\t42\n"), 100) // 700 bytes
	for name, z := range zstdImpls(t) {
		t.Run(name, func(t *testing.T) {
			got, err := z.decompress(nil, rawFrame(uint64(len(content)), content), len(content))
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("honest frame at the limit: %v", err)
			}
			for _, tc := range []struct {
				what  string
				frame []byte
				limit int
			}{
				{"claims a terabyte", rawFrame(1<<40, content), maxChunkPlain},
				{"claims one byte over the limit", rawFrame(uint64(len(content)), content), len(content) - 1},
				{"claims less than it holds", rawFrame(100, content), maxChunkPlain},
				{"claims more than it holds", rawFrame(1000, content), maxChunkPlain},
				{"is not zstd", []byte("INSERT INTO t VALUES (1)"), maxChunkPlain},
				{"is truncated", rawFrame(uint64(len(content)), content)[:200], maxChunkPlain},
				{"is a skippable frame", []byte{0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0}, maxChunkPlain},
			} {
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				_, err := z.decompress(nil, tc.frame, tc.limit)
				runtime.ReadMemStats(&after)
				if !errors.Is(err, errCorrupt) {
					t.Errorf("a frame that %s: got %v, want errCorrupt", tc.what, err)
					continue
				}
				allocated := after.TotalAlloc - before.TotalAlloc
				t.Logf("a frame that %s: %v (%d bytes allocated)", tc.what, err, allocated)
				if allocated > 1<<20 {
					t.Errorf("a frame that %s: %d bytes allocated to refuse it", tc.what, allocated)
				}
			}
		})
	}
}

// TestCodecZstdSmallFrameOverLimit: a frame without a content size (what
// klauspost writes under 256 bytes) is still held to the limit.
func TestCodecZstdSmallFrameOverLimit(t *testing.T) {
	impls := zstdImpls(t)
	plain := bytes.Repeat([]byte("x"), 200)
	frame, err := impls["go"].compress(nil, plain, 1)
	if err != nil {
		t.Fatal(err)
	}
	for name, z := range impls {
		if _, err := z.decompress(nil, frame, 100); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: 200 bytes under a limit of 100: got %v, want errCorrupt", name, err)
		}
		if got, err := z.decompress(nil, frame, 200); err != nil || !bytes.Equal(got, plain) {
			t.Errorf("%s: 200 bytes under a limit of 200: %v", name, err)
		}
	}
}

// TestCodecConcurrent shares one codec between more goroutines than it
// keeps zstd states, as the writer's and reader's workers do (run with
// -race).
func TestCodecConcurrent(t *testing.T) {
	c, err := newCodec(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	text := dumpText(t, 4<<20)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out, scratch, plain []byte
			for i := range 6 {
				p := text[(g*7+i)*64<<10:][:(i+1)*100<<10]
				id := c.id(p)
				var err error
				out, scratch, err = c.encode(out[:0], scratch, id.String(), p, "zstd", 1+(g+i)%4)
				if err == nil {
					plain, err = c.decodeChunk(plain[:0], id, out)
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d, chunk %d: %w", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkCodecZstd measures one core's compression and decompression of
// an 8 MiB chunk of dump text with each implementation.
//
//	go test -run '^$' -bench CodecZstd -cpu 1 ./internal/archive/
func BenchmarkCodecZstd(b *testing.B) {
	plain := dumpText(b, DefaultChunkSize)
	impls := zstdImpls(b)
	for _, name := range []string{"go", "default"} {
		z := impls[name]
		for _, level := range []int{1, 3} {
			frame, err := z.compress(nil, plain, level)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%s/compress/level-%d", name, level), func(b *testing.B) {
				b.SetBytes(int64(len(plain)))
				b.ReportAllocs()
				dst := make([]byte, 0, len(plain)+len(plain)/8)
				for b.Loop() {
					if dst, err = z.compress(dst[:0], plain, level); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(plain))/float64(len(frame)), "ratio")
			})
			b.Run(fmt.Sprintf("%s/decompress/level-%d", name, level), func(b *testing.B) {
				b.SetBytes(int64(len(plain)))
				b.ReportAllocs()
				dst := make([]byte, 0, len(plain))
				for b.Loop() {
					if dst, err = z.decompress(dst[:0], frame, maxChunkPlain); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

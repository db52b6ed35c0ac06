//go:build cgo

package archive

import (
	"fmt"
	"runtime"
	"slices"

	czstd "github.com/DataDog/zstd"
	"github.com/klauspost/compress/zstd"
)

// newZstd returns libzstd: on dump text at level 1 it compresses about
// twice as fast per core as klauspost's pure-Go encoder, and compression is
// what bounds a backup's throughput.
func newZstd() zstdImpl { return newCZstd() }

// cZstd is libzstd, built from the C sources that github.com/DataDog/zstd
// vendors (no system library needed, only a C compiler). Levels go through
// libzstdLevel, so a level means what it meant with klauspost.
type cZstd struct {
	// cctxs holds GOMAXPROCS slots, each nil or an idle context: taking a
	// slot bounds both the concurrent compressions and the contexts ever
	// created. A context keeps its tables between chunks, so a chunk
	// costs no allocation; DataDog frees it by finalizer, there is no
	// Close.
	cctxs chan czstd.Ctx
	dctxs chan czstd.Ctx
	// fallback decodes the frames libzstd is not given: those without a
	// content size, which klauspost wrote for plaintexts under 256 bytes.
	fallback *goZstd
}

func newCZstd() *cZstd {
	n := runtime.GOMAXPROCS(0)
	c := &cZstd{cctxs: make(chan czstd.Ctx, n), dctxs: make(chan czstd.Ctx, n), fallback: newGoZstd()}
	for range n {
		c.cctxs <- nil
		c.dctxs <- nil
	}
	return c
}

// libzstdLevel maps a `--compress-level` onto the libzstd level that
// matches what the level has always meant here. The archive started on
// klauspost, which has four encoders and maps the zstd levels onto them
// (1-2 fastest, 3-5 default, 6-9 better, 10-22 best); libzstd at the levels
// klauspost documents as their equivalents (1, 3, 7, 11) gives about the
// same speed, ratio and memory on dump text. Passing 19-22 through instead
// would make those backups about ten times slower than they were, with
// some 120 MiB per compression context.
func libzstdLevel(level int) int {
	switch zstd.EncoderLevelFromZstd(level) {
	case zstd.SpeedFastest:
		return 1
	case zstd.SpeedDefault:
		return 3
	case zstd.SpeedBetterCompression:
		return 7
	default:
		return 11
	}
}

func take(slots chan czstd.Ctx) czstd.Ctx {
	if ctx := <-slots; ctx != nil {
		return ctx
	}
	return czstd.NewCtx()
}

func (c *cZstd) compress(dst, src []byte, level int) ([]byte, error) {
	ctx := take(c.cctxs)
	defer func() { c.cctxs <- ctx }()
	// CompressLevel writes from the start of the slice it is given and
	// allocates a new one when that is shorter than the bound: hand it the
	// tail of dst, grown so that it never allocates.
	dst = slices.Grow(dst, czstd.CompressBound(len(src)))
	out, err := ctx.CompressLevel(dst[len(dst):cap(dst)], src, libzstdLevel(level))
	if err != nil {
		return nil, fmt.Errorf("zstd level %d: %w", level, err)
	}
	return dst[:len(dst)+len(out)], nil
}

func (c *cZstd) decompress(dst, frame []byte, limit int) ([]byte, error) {
	size, known, err := frameContentSize(frame, limit)
	if err != nil {
		return nil, err
	}
	if !known || size == 0 {
		return c.fallback.decompress(dst, frame, limit)
	}
	ctx := take(c.dctxs)
	defer func() { c.dctxs <- ctx }()
	// One-shot decompression into a buffer of exactly the claimed size:
	// libzstd needs no window beyond it, fails a frame that produces more
	// (dstSize_tooSmall) and checks that it produced exactly as much.
	// DataDog's Decompress is not used: when its guess of the size falls
	// short it reads the frame through a stream into memory without a bound.
	dst = slices.Grow(dst, size)
	n, err := ctx.DecompressInto(dst[len(dst):len(dst)+size], frame)
	if err != nil {
		return nil, fmt.Errorf("%w: zstd: %w", errCorrupt, err)
	}
	if n != size {
		return nil, fmt.Errorf("%w: zstd frame claims %d bytes of plaintext and holds %d", errCorrupt, size, n)
	}
	return dst[:len(dst)+n], nil
}

func (c *cZstd) close() { c.fallback.close() }

// ZstdImplementation names the zstd this build compresses with: libzstd,
// compiled from the C sources github.com/DataDog/zstd vendors (so the module
// version is libzstd's), through cgo.
func ZstdImplementation() ZstdInfo {
	return ZstdInfo{Name: ZstdLibzstd, Module: "github.com/DataDog/zstd"}
}

package archive

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Plaintext limits for decompression. A stored blob is hostile input until
// its hash checks out, and a zstd frame can claim any size, so every
// decompression is bounded by what the blob may legitimately hold.
const (
	// maxChunkPlain: the writer cuts chunks at the repository's chunk size,
	// which is at most maxChunkSize.
	maxChunkPlain = maxChunkSize
	// maxBlobPlain bounds the other blobs (manifests), which have no
	// natural size; it is the decoder memory cap the archive always had.
	maxBlobPlain = 256 << 20
)

// zstdImpl is one implementation of zstd for the codec: libzstd through cgo
// when the build has cgo (codec_zstd_cgo.go), klauspost/compress otherwise
// (codec_zstd_nocgo.go). Both write the same format, one RFC 8878 frame per
// blob with the content size in the header (klauspost leaves it out under
// 256 bytes) and no checksum (the chunk id covers the plaintext), so either
// reads what the other wrote; a repository does not record which one wrote
// it.
//
// Safe for concurrent use by the writer's and reader's workers. Each
// implementation keeps at most GOMAXPROCS compression states, since
// compression is CPU-bound and a state per extra caller only costs memory;
// callers beyond that wait their turn.
type zstdImpl interface {
	// compress appends one frame holding src, compressed at level (1 to
	// 22, as `--compress-level` documents), to dst.
	compress(dst, src []byte, level int) ([]byte, error)
	// decompress appends the plaintext of frame to dst. It refuses with
	// errCorrupt a frame that is damaged or whose plaintext would exceed
	// limit bytes. A frame that states its size is refused before anything
	// is allocated; one that does not (only tiny ones are legitimate) is
	// decoded with klauspost, which stops at maxBlobPlain.
	decompress(dst, frame []byte, limit int) ([]byte, error)
	// close releases the implementation's states; no call may follow.
	close()
}

// frameContentSize reads the plaintext size a frame's header claims and
// refuses, before anything is allocated, a frame that is not a zstd frame
// or claims more than limit bytes. known is false for a frame without the
// size (klauspost's encoder omits it below 256 bytes).
func frameContentSize(frame []byte, limit int) (size int, known bool, err error) {
	var h zstd.Header
	if err := h.Decode(frame); err != nil {
		return 0, false, fmt.Errorf("%w: zstd frame header: %w", errCorrupt, err)
	}
	if h.Skippable {
		return 0, false, fmt.Errorf("%w: zstd: a skippable frame where a data frame belongs", errCorrupt)
	}
	if !h.HasFCS {
		return 0, false, nil
	}
	if h.FrameContentSize > uint64(limit) {
		return 0, false, fmt.Errorf("%w: zstd frame claims %d bytes of plaintext, more than the %d a blob of its kind can hold", errCorrupt, h.FrameContentSize, limit)
	}
	return int(h.FrameContentSize), true, nil
}

// goZstd is klauspost/compress/zstd: pure Go, and the implementation of
// builds without cgo. It is compiled into every build, so the tests of a cgo
// build check that each implementation reads the other's frames.
type goZstd struct {
	mu       sync.Mutex
	encoders map[zstd.EncoderLevel]*zstd.Encoder
	decoder  *zstd.Decoder
}

func newGoZstd() *goZstd {
	// DecodeAll runs concurrently on the shared decoder. Its cap is the
	// largest limit: klauspost caps output per decoder, not per call (and
	// counts dst's existing bytes against it), so decompress checks the
	// caller's limit itself. Below the cap, a frame without a content size
	// is stopped as soon as its output passes it.
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(maxBlobPlain),
		zstd.WithDecoderLowmem(true))
	if err != nil {
		panic(err) // only invalid options fail
	}
	return &goZstd{encoders: map[zstd.EncoderLevel]*zstd.Encoder{}, decoder: d}
}

func (g *goZstd) encoder(level int) (*zstd.Encoder, error) {
	// klauspost has four levels; the zstd levels map onto them the way its
	// own EncoderLevelFromZstd says (1-2 fastest, 3-5 default, 6-9 better,
	// 10-22 best).
	l := zstd.EncoderLevelFromZstd(level)
	g.mu.Lock()
	defer g.mu.Unlock()
	if e, ok := g.encoders[l]; ok {
		return e, nil
	}
	// One encoder per level, shared: EncodeAll is safe for concurrent use
	// and keeps one internal state, with a history as large as a chunk, per
	// concurrent caller, up to GOMAXPROCS of them.
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(l),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithZeroFrames(true),
		zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, err
	}
	g.encoders[l] = e
	return e, nil
}

func (g *goZstd) compress(dst, src []byte, level int) ([]byte, error) {
	e, err := g.encoder(level)
	if err != nil {
		return nil, err
	}
	return e.EncodeAll(src, dst), nil
}

func (g *goZstd) decompress(dst, frame []byte, limit int) ([]byte, error) {
	if _, _, err := frameContentSize(frame, limit); err != nil {
		return nil, err
	}
	out, err := g.decoder.DecodeAll(frame, dst)
	if err != nil {
		return nil, fmt.Errorf("%w: zstd: %w", errCorrupt, err)
	}
	if n := len(out) - len(dst); n > limit {
		return nil, fmt.Errorf("%w: zstd frame holds %d bytes of plaintext, more than the %d a blob of its kind can hold", errCorrupt, n, limit)
	}
	return out, nil
}

func (g *goZstd) close() {
	g.decoder.Close()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range g.encoders {
		_ = e.Close()
	}
}

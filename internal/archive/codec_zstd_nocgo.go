//go:build !cgo

package archive

// newZstd returns the pure-Go implementation: a build without cgo
// (CGO_ENABLED=0, or no C compiler) cannot link libzstd.
func newZstd() zstdImpl { return newGoZstd() }

// ZstdImplementation names the zstd this build compresses with: the pure-Go
// encoder, about half as fast per core as libzstd on dump text.
func ZstdImplementation() ZstdInfo {
	return ZstdInfo{Name: ZstdPureGo, Module: "github.com/klauspost/compress"}
}

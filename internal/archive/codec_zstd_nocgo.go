//go:build !cgo

package archive

// newZstd returns the pure-Go implementation: a build without cgo
// (CGO_ENABLED=0, or no C compiler) cannot link libzstd.
func newZstd() zstdImpl { return newGoZstd() }

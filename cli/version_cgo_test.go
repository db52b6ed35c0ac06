//go:build cgo

package cli

const (
	wantZstd   = "libzstd"
	wantModule = "github.com/DataDog/zstd"
)

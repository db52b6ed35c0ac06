//go:build !cgo

package cli

const (
	wantZstd   = "pure-go"
	wantModule = "github.com/klauspost/compress"
)

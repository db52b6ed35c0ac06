//go:build cgo

package cli

const (
	wantZstd = "libzstd"
	wantCgo  = true
)

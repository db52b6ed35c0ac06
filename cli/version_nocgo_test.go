//go:build !cgo

package cli

const (
	wantZstd = "pure-go"
	wantCgo  = false
)

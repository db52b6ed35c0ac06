//go:build !linux

package testenv

import (
	"errors"
	"net"
)

// ConnOwner needs /proc: outside Linux it always fails.
func ConnOwner(net.Conn, []int) (int, error) {
	return 0, errors.New("ConnOwner reads /proc: Linux only")
}

//go:build !linux

package probe

import "errors"

var errNotLinux = errors.New("filesystem probes need Linux")

// Statfs implements Host.
func (LocalHost) Statfs(string) (FS, error) { return FS{}, errNotLinux }

// Device implements Host.
func (LocalHost) Device(string) (uint32, uint32, error) { return 0, 0, errNotLinux }

package probe

import (
	"fmt"
	"syscall"
)

// Statfs implements Host.
func (LocalHost) Statfs(path string) (FS, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return FS{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	// f_type is signed on some architectures; the magic is 32 bits.
	return FS{Magic: uint32(st.Type), AvailBytes: uint64(st.Bavail) * uint64(st.Bsize)}, nil
}

// Device implements Host.
func (LocalHost) Device(path string) (major, minor uint32, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, 0, fmt.Errorf("stat %s: %w", path, err)
	}
	dev := uint64(st.Dev)
	// The glibc encoding of dev_t (gnu_dev_major / gnu_dev_minor).
	major = uint32((dev>>8)&0xfff | (dev>>32)&^0xfff)
	minor = uint32(dev&0xff | (dev>>12)&^0xff)
	return major, minor, nil
}

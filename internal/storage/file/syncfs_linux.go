package file

import (
	"os"

	"golang.org/x/sys/unix"
)

// canDefer: Linux has syncfs(2), which Sync needs.
const canDefer = true

// syncFS makes durable every dirty page and metadata change of the
// filesystem that holds f (syncfs(2)); since Linux 5.8 it also reports a
// writeback error met on that filesystem since f was opened, or not yet
// reported to anyone.
func syncFS(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Syncfs(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("syncfs", serr)
	}
	return nil
}

// startWriteback asks the kernel to start writing f's dirty pages out now,
// without waiting (sync_file_range(2) with SYNC_FILE_RANGE_WRITE): it makes
// nothing durable, but the Sync that will have to leaves less to write.
// Errors are ignored: Sync reports what matters.
func startWriteback(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _ = unix.SyncFileRange(int(fd), 0, 0, unix.SYNC_FILE_RANGE_WRITE) })
	}
}

//go:build !linux

package physical

import "syscall"

// tempServerAttr: its own process group (no parent-death signal outside
// Linux: a killed tidemark leaves the server running).
func tempServerAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

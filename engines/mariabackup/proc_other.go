//go:build !linux

package mariabackup

import "syscall"

// childAttr puts the tool in its own process group, killed as a whole.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

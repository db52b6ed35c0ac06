//go:build !linux

package testenv

import "syscall"

// sysProcAttr: outside Linux there is no Pdeathsig; a crashed test binary can
// leave its servers running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

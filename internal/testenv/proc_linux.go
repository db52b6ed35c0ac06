package testenv

import "syscall"

// sysProcAttr puts the child in its own process group (so a kill reaches
// everything it spawned and a terminal ^C does not race our shutdown) and has
// the kernel SIGKILL it if the test binary dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

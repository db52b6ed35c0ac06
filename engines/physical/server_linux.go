package physical

import "syscall"

// tempServerAttr: its own process group, and SIGTERM when tidemark dies.
func tempServerAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

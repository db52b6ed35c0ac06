package mariabackup

import "syscall"

// childAttr puts the tool in its own process group (killed as a whole) and
// has the kernel kill it if the agent dies first, so that no tool outlives
// the backup it was started for.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

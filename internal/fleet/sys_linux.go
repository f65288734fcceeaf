package fleet

import "syscall"

// sysProcAttr puts a process in a group of its own and kills it when its
// parent dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

package devstack

import "syscall"

// childAttr puts a child in its own process group (so a signal reaches anything it spawns) and
// has the kernel kill it if oathpipe-dev dies first.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

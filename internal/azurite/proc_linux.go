package azurite

import "syscall"

// procAttr puts Azurite in its own process group (Stop signals the group) and, on Linux, has
// the kernel kill it when the process that started it dies, so nothing outlives a crashed test.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

//go:build unix && !linux

package devstack

import "syscall"

// childAttr puts a child in its own process group. Without Linux's parent-death signal, a
// child outlives oathpipe-dev only if oathpipe-dev is killed with SIGKILL.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

//go:build !linux

package azurite

import "syscall"

// procAttr puts Azurite in its own process group, so Stop signals node and anything it spawned.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

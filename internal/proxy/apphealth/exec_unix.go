//go:build unix

package apphealth

import (
	"os/exec"
	"syscall"
)

// killProcessGroup makes the command the leader of its own process group and has a timeout kill
// the whole group: a shell script's children (a curl, a sleep) die with it.
func killProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

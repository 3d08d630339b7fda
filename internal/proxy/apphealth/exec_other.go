//go:build !unix

package apphealth

import "os/exec"

// killProcessGroup leaves the default (kill the command only): WaitDelay still bounds the check.
func killProcessGroup(*exec.Cmd) {}

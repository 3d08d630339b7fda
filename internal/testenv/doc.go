// Package testenv holds what tests need from the machine beyond their own
// process: for now, exclusive use of the fixed loopback addresses the demo
// mesh binds. It is imported by tests only.
package testenv

package testenv

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// LockDemoAddresses blocks until this test is the only one, across all test
// processes on the machine, using the demo mesh's fixed addresses
// (127.0.1.1-6 and 127.0.0.1:1908x). `go test ./...` runs packages in
// parallel, and two demo meshes cannot bind the same ports. The lock is
// released when the test ends.
func LockDemoAddresses(t testing.TB) {
	t.Helper()
	path := filepath.Join(os.TempDir(), "trellis-demo-addresses.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("demo address lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("demo address lock: %v", err)
	}
	// Closing the file releases the flock, also if the process dies.
	t.Cleanup(func() { f.Close() })
}

package kubeenv

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A server's directory (etcd's data, with its preallocated WAL: over 100 MB) is removed by Stop.
// A test binary that is killed (a test timeout, SIGKILL) cannot, though its processes die with it
// (Pdeathsig). So each directory names its owner process in ownerFile, and every start removes the
// directories of owners that are gone.
const (
	dirPattern = "kubeenv-"
	ownerFile  = "owner.pid"
)

// newDir makes a server directory owned by this process, after sweeping stale ones.
func newDir() (string, error) {
	sweepStale(os.TempDir())
	dir, err := os.MkdirTemp("", dirPattern)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// sweepStale removes server directories under tmp whose owner process no longer exists. One
// without an owner file is left alone: it may be another process's, just being created.
func sweepStale(tmp string) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, dirPattern+"*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
}

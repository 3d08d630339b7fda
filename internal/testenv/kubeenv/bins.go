package kubeenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Environment variables that steer where the binaries come from and what happens without them.
const (
	// EnvBinDir overrides the directory holding etcd and kube-apiserver (make sets it).
	EnvBinDir = "TRELLIS_KUBE_BIN_DIR"
	// EnvRequire, set to 1, turns missing binaries into a test failure instead of a skip.
	EnvRequire = "TRELLIS_REQUIRE_KUBE"
)

const mainModule = "github.com/trellis-mesh/trellis"

// toolsDir is where the tools modules live, relative to the repository root.
var toolsDir = filepath.Join("internal", "testenv", "tools")

// binaries are the paths of the two programs a server needs.
type binaries struct {
	etcd, apiserver string
}

// BinDir is the directory `make kube-tools` builds into:
// <repo>/.cache/kube/kube-apiserver-<version>_etcd-<version>, the versions read from the tools
// modules' go.mod files, or $TRELLIS_KUBE_BIN_DIR when set. The Makefile computes the same name.
func BinDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		return dir, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	kube, err := requiredVersion(filepath.Join(root, toolsDir, "kube-apiserver", "go.mod"), "k8s.io/kubernetes")
	if err != nil {
		return "", err
	}
	etcd, err := requiredVersion(filepath.Join(root, toolsDir, "etcd", "go.mod"), "go.etcd.io/etcd/server/v3")
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache", "kube", "kube-apiserver-"+kube+"_etcd-"+etcd), nil
}

// findBinaries returns the two binaries, or an error that tells how to build them.
func findBinaries() (binaries, error) {
	dir, err := BinDir()
	if err != nil {
		return binaries{}, err
	}
	b := binaries{etcd: filepath.Join(dir, "etcd"), apiserver: filepath.Join(dir, "kube-apiserver")}
	for _, path := range []string{b.etcd, b.apiserver} {
		info, err := os.Stat(path)
		if err == nil && info.Mode()&0o111 == 0 {
			err = errors.New("not executable")
		}
		if err != nil {
			return binaries{}, fmt.Errorf("%s: %v: run `make kube-tools` (builds etcd and kube-apiserver from their Go modules, minutes when cold)", path, err)
		}
	}
	return b, nil
}

// skipper is the part of testing.TB that missing needs, so its choice can be tested.
type skipper interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// missing ends the test for want of the binaries: a skip, or a failure under TRELLIS_REQUIRE_KUBE=1.
func missing(t skipper, err error) {
	t.Helper()
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("kubeenv: %v (%s=1: required, not skipped)", err, EnvRequire)
		return
	}
	t.Skipf("kubeenv: %v", err)
}

// repoRoot walks up from the working directory (a package directory under go test) to the main
// module's root.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if path, err := modulePath(filepath.Join(dir, "go.mod")); err == nil && path == mainModule {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory; set %s", mainModule, EnvBinDir)
		}
		dir = parent
	}
}

func modulePath(gomod string) (string, error) {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s: no module line", gomod)
}

// requiredVersion reads module's version from a go.mod's require lines, in a block or not.
func requiredVersion(gomod, module string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "require "))
		if len(fields) >= 2 && fields[0] == module && strings.HasPrefix(fields[1], "v") {
			return fields[1], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s: no requirement of %s", gomod, module)
}

package kubeenv

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// recorder stands in for testing.TB in missing: it records whether the test was skipped or failed.
type recorder struct{ skipped, failed string }

func (r *recorder) Helper()                       {}
func (r *recorder) Skipf(format string, a ...any) { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) {
	r.failed = fmt.Sprintf(format, a...)
}

func TestMissingBinariesSkipNamingMakeTargetButFailWhenRequired(t *testing.T) {
	t.Setenv(EnvBinDir, t.TempDir())
	_, err := findBinaries()
	if err == nil || !strings.Contains(err.Error(), "make kube-tools") {
		t.Fatalf("findBinaries in an empty dir: err = %v, want one naming `make kube-tools`", err)
	}

	t.Setenv(EnvRequire, "")
	var r recorder
	missing(&r, err)
	if r.failed != "" || !strings.Contains(r.skipped, "make kube-tools") {
		t.Errorf("without %s: skipped %q, failed %q; want a skip naming make kube-tools", EnvRequire, r.skipped, r.failed)
	}

	t.Setenv(EnvRequire, "1")
	r = recorder{}
	missing(&r, err)
	if r.skipped != "" || !strings.Contains(r.failed, "make kube-tools") {
		t.Errorf("with %s=1: skipped %q, failed %q; want a failure naming make kube-tools", EnvRequire, r.skipped, r.failed)
	}
}

func TestBinDirIsWhereMakeKubeToolsBuilds(t *testing.T) {
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Skip("no make on PATH")
	}
	t.Setenv(EnvBinDir, "")
	got, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(makeBin, "-s", "--no-print-directory", "-C", root, "print-kube-dir")
	// Under make test this is a make within make: keep the outer one's jobserver and flags out.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); name != "MAKEFLAGS" && name != "MFLAGS" && name != "MAKELEVEL" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("make print-kube-dir: %v", err)
	}
	if want := strings.TrimSpace(string(out)); got != want {
		t.Errorf("BinDir() = %s, make kube-tools builds into %s", got, want)
	}
	if !strings.Contains(got, "kube-apiserver-v1.") || !strings.Contains(got, "_etcd-v3.") {
		t.Errorf("BinDir() = %s, want the pinned versions in its name", got)
	}
}

func TestRequiredVersionReadsBlockAndSingleLineRequires(t *testing.T) {
	dir := t.TempDir()
	gomod := dir + "/go.mod"
	writeFile(t, gomod, "module x\n\ngo 1.26.0\n\nrequire a.example/one v1.2.3\n\nrequire (\n\tb.example/two v0.4.0 // indirect\n\ta.example/one/sub v9.9.9\n)\n")
	for module, want := range map[string]string{"a.example/one": "v1.2.3", "b.example/two": "v0.4.0"} {
		if got, err := requiredVersion(gomod, module); err != nil || got != want {
			t.Errorf("requiredVersion(%s) = %q, %v; want %s", module, got, err, want)
		}
	}
	if _, err := requiredVersion(gomod, "c.example/absent"); err == nil {
		t.Error("requiredVersion of an absent module: no error")
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSweepRemovesOnlyDirectoriesOfDeadOwners(t *testing.T) {
	tmp := t.TempDir()
	// A process that has exited and been reaped: its pid names no process (until reused).
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := tmp + "/" + dirPattern + "dead"
	alive := tmp + "/" + dirPattern + "alive"
	unowned := tmp + "/" + dirPattern + "unowned"
	for _, dir := range []string{dead, alive, unowned} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, dead+"/"+ownerFile, fmt.Sprint(cmd.Process.Pid))
	writeFile(t, alive+"/"+ownerFile, fmt.Sprint(os.Getpid()))

	sweepStale(tmp)
	for dir, want := range map[string]bool{dead: false, alive: true, unowned: true} {
		_, err := os.Stat(dir)
		if exists := err == nil; exists != want {
			t.Errorf("%s exists after sweep: %v, want %v", dir, exists, want)
		}
	}
}

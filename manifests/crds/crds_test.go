package crds

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMatchesIstioAPIModule keeps the committed copy equal to the file of the
// istio.io/api version go.mod requires, so `trellis install` installs the
// CRDs that the code (istio.io/client-go, config validation) was built for.
func TestMatchesIstioAPIModule(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "istio.io/api").Output()
	if err != nil {
		t.Fatalf("go list -m istio.io/api: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		t.Fatal("go list -m istio.io/api: module not downloaded (go mod download istio.io/api)")
	}
	want, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(IstioModuleFile)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(YAML, want) {
		t.Fatalf("manifests/crds/customresourcedefinitions.gen.yaml differs from %s (%d vs %d bytes): run `make crds`",
			filepath.Join(dir, IstioModuleFile), len(YAML), len(want))
	}
}

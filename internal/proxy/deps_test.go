package proxy

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProxyDependsOnNothingFromTheControlPlane keeps trellis-proxy runnable under any xDS control
// plane (istiod included) and small: no Kubernetes client, no go-control-plane server side, none of
// Trellis's control plane packages.
func TestProxyDependsOnNothingFromTheControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const module = "github.com/trellis-mesh/trellis/"
	forbidden := []string{
		"k8s.io/client-go",
		"github.com/envoyproxy/go-control-plane/pkg/server",
		"github.com/envoyproxy/go-control-plane/pkg/cache",
		module + "internal/config",
		module + "internal/translate",
		module + "internal/xds",
		module + "internal/model",
	}
	out, err := exec.Command("go", "list", "-deps", module+"cmd/trellis-proxy", module+"internal/proxy/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list returned too little: %q", out)
	}
	for _, dep := range deps {
		for _, bad := range forbidden {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("trellis-proxy depends on %s", dep)
			}
		}
	}
}

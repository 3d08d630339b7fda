package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/proxyconfig"
)

const goodProxyConfigs = `apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: mesh-defaults, namespace: istio-system}
spec:
  concurrency: 4
---
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata:
  name: reviews-tuning
  namespace: shop
  annotations:
    sidecar.istio.io/proxyCPULimit: 500m
    proxy.istio.io/config: |
      terminationDrainDuration: 20s
spec:
  selector: {matchLabels: {app: reviews}}
  environmentVariables: {FOO: bar}
`

// TestProxyConfigLoadsAndResolves: ProxyConfigs in the config dir reach the hierarchy, with
// their annotations.
func TestProxyConfigLoadsAndResolves(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pc.yaml"), goodProxyConfigs)
	cfg, warns, err := LoadDir(dir)
	if err != nil || len(warns) > 0 {
		t.Fatalf("LoadDir: %v %v", err, warns)
	}
	pcs := ProxyConfigResources(cfg)
	if len(pcs) != 2 {
		t.Fatalf("%d ProxyConfigs, want 2", len(pcs))
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "reviews-1", Namespace: "shop", Labels: map[string]string{"app": "reviews"}}}
	e, _, err := proxyconfig.Resolve(proxyconfig.Input{Mesh: cfg.Mesh, Pod: pod, ProxyConfigs: pcs})
	if err != nil {
		t.Fatal(err)
	}
	if e.Concurrency.V != 4 || e.Concurrency.From.Level != proxyconfig.LevelMeshProxyConfig {
		t.Errorf("concurrency %d from %v, want 4 from the mesh ProxyConfig", e.Concurrency.V, e.Concurrency.From)
	}
	if e.TerminationDrainDuration.V != 20*time.Second || e.ProxyCPULimit.V != "500m" || e.EnvironmentVariables.V["FOO"] != "bar" {
		t.Errorf("workload ProxyConfig not applied: drain %v, cpu limit %q, env %v", e.TerminationDrainDuration.V, e.ProxyCPULimit.V, e.EnvironmentVariables.V)
	}
}

// TestProxyConfigValidation: a bad ProxyConfig is a ValidationError naming file, line,
// resource and field, and the whole load fails as for any kind (Watch keeps the last good config).
func TestProxyConfigValidation(t *testing.T) {
	head := "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata:\n  name: bad\n  namespace: shop\n"
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unknown log level", head + "  annotations:\n    sidecar.istio.io/logLevel: loud\nspec: {}\n",
			`:7: ProxyConfig shop/bad: metadata.annotations[sidecar.istio.io/logLevel]: "loud": unknown log level`},
		{"negative drain", head + "  annotations:\n    proxy.istio.io/config: 'terminationDrainDuration: -1s'\nspec: {}\n",
			`:7: ProxyConfig shop/bad: metadata.annotations[proxy.istio.io/config].terminationDrainDuration: "-1s": must not be negative`},
		{"unknown field in proxy.istio.io/config", head + "  annotations:\n    proxy.istio.io/config: 'concurrancy: 2'\nspec: {}\n",
			`:7: ProxyConfig shop/bad: metadata.annotations[proxy.istio.io/config]: "concurrancy: 2": not a ProxyConfig`},
		{"malformed CIDR", head + "  annotations:\n    traffic.sidecar.istio.io/excludeOutboundIPRanges: 10.0.0.0/33\nspec: {}\n",
			`:7: ProxyConfig shop/bad: metadata.annotations[traffic.sidecar.istio.io/excludeOutboundIPRanges]: "10.0.0.0/33": "10.0.0.0/33" is not a CIDR`},
		{"negative concurrency", head + "spec:\n  concurrency: -1\n",
			`:7: ProxyConfig shop/bad: spec.concurrency: "-1": must be 0 (all cores) or more`},
		{"empty selector", head + "spec:\n  selector: {matchLabels: {}}\n",
			`ProxyConfig shop/bad: spec.selector.matchLabels: "": must not be empty`},
		{"bad label key", head + "spec:\n  selector: {matchLabels: {'a b': x}}\n",
			`ProxyConfig shop/bad: spec.selector.matchLabels[a b]: "a b": label key:`},
		{"unknown spec field", head + "spec:\n  concurency: 2\n",
			`:7: ProxyConfig shop/bad: spec.concurency: unknown field`},
		{"wrong version", strings.Replace(head, "v1beta1", "v1", 1) + "spec: {}\n",
			`:1: ProxyConfig shop/bad: apiVersion: "networking.istio.io/v1" is not served for ProxyConfig; want networking.istio.io/v1beta1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "pc.yaml")
			writeFile(t, file, tc.doc)
			cfg, _, err := LoadDir(dir)
			if err == nil || cfg != nil {
				t.Fatalf("LoadDir accepted it (cfg %v)", cfg)
			}
			if !strings.HasPrefix(err.Error(), file) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n got %s\nwant %s%s...", err, file, tc.want)
			}
		})
	}
}

// TestBadProxyConfigKeepsLastGoodConfig: a broken ProxyConfig is reported and the watcher's
// caller keeps serving what it had; fixing it loads everything again.
func TestBadProxyConfigKeepsLastGoodConfig(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pc.yaml"), goodProxyConfigs)
	results := startWatch(t, dir)
	if r := next(t, results, 10*time.Second); r.err != nil || len(r.cfg.ProxyConfigs) != 2 {
		t.Fatalf("first load: %+v", r)
	}
	writeFile(t, filepath.Join(dir, "pc.yaml"), strings.Replace(goodProxyConfigs, "500m", "half", 1))
	r := next(t, results, 10*time.Second)
	if r.err == nil || !strings.Contains(r.err.Error(), "metadata.annotations[sidecar.istio.io/proxyCPULimit]") {
		t.Fatalf("bad ProxyConfig: got %+v, want an error naming the annotation", r)
	}
	writeFile(t, filepath.Join(dir, "pc.yaml"), goodProxyConfigs)
	if r := next(t, results, 10*time.Second); r.err != nil || len(r.cfg.ProxyConfigs) != 2 {
		t.Fatalf("after the fix: %+v", r)
	}
}

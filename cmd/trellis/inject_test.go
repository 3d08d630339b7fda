package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// TestInjectUsesTheConfigDirAndPassesOtherDocumentsThrough runs `trellis inject` as a user
// would: a Deployment and a ConfigMap in, ProxyConfig and mesh.yaml in --config.
func TestInjectUsesTheConfigDirAndPassesOtherDocumentsThrough(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mesh")
	if err := os.MkdirAll(cfg, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(path, text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(cfg, "mesh.yaml"), "defaultConfig:\n  terminationDrainDuration: 12s\n")
	write(filepath.Join(cfg, "proxyconfig.yaml"), `apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  concurrency: 3
`)
	configMap := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web-config, namespace: shop}\ndata: {key: value}\n"
	in := filepath.Join(dir, "app.yaml")
	write(in, configMap+`---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {traffic.sidecar.istio.io/includeOutboundPorts: "443"}
    spec:
      containers: [{name: web, image: example/web:1}]
`)
	out := filepath.Join(dir, "out.yaml")
	stderr, err := runCLI(context.Background(), "inject", "-f", in, "--config", cfg, "-o", out, "--image", "example/proxy:1")
	if err != nil {
		t.Fatalf("inject: %v\n%s", err, stderr)
	}
	if strings.Contains(stderr, "warning") {
		t.Errorf("want no warnings, got %q", stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(b), "---\n")
	if len(docs) != 2 || docs[0] != configMap {
		t.Fatalf("want the ConfigMap unchanged then the Deployment, got\n%s", b)
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &d); err != nil {
		t.Fatal(err)
	}
	spec := d.Spec.Template.Spec
	if len(spec.InitContainers) != 2 || spec.InitContainers[1].Name != "istio-proxy" || spec.InitContainers[1].Image != "example/proxy:1" {
		t.Fatalf("init containers %+v: want istio-init and the native istio-proxy with --image", spec.InitContainers)
	}
	if args := strings.Join(spec.InitContainers[0].Args, " "); !strings.Contains(args, " --include-outbound-ports=443") {
		t.Errorf("istio-init args %q: want the pod's includeOutboundPorts as --include-outbound-ports=443", args)
	}
	env := map[string]string{}
	for _, e := range spec.InitContainers[1].Env {
		env[e.Name] = e.Value
	}
	if env["GOMAXPROCS"] != "3" || env["TERMINATION_DRAIN_DURATION"] != "12s" {
		t.Errorf("proxy env %v: want GOMAXPROCS 3 (ProxyConfig) and TERMINATION_DRAIN_DURATION 12s (mesh.yaml)", env)
	}
}

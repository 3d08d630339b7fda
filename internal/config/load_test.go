package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/model"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadDirReadsAllKindsSortedWithSources(t *testing.T) {
	cfg, warns, err := LoadDir(filepath.Join("testdata", "valid"))
	if err != nil {
		t.Fatal(err)
	}
	names := func(metas []model.Meta) string {
		var out []string
		for _, m := range metas {
			out = append(out, m.Namespace+"/"+m.Name)
		}
		return strings.Join(out, " ")
	}
	var vs, dr, se, we, gw, sc []model.Meta
	for _, r := range cfg.VirtualServices {
		vs = append(vs, r.Meta)
	}
	for _, r := range cfg.DestinationRules {
		dr = append(dr, r.Meta)
	}
	for _, r := range cfg.ServiceEntries {
		se = append(se, r.Meta)
	}
	for _, r := range cfg.WorkloadEntries {
		we = append(we, r.Meta)
	}
	for _, r := range cfg.Gateways {
		gw = append(gw, r.Meta)
	}
	for _, r := range cfg.Sidecars {
		sc = append(sc, r.Meta)
	}
	for _, c := range []struct{ kind, got, want string }{
		{"VirtualService", names(vs), "default/frontpage default/reviews"},
		{"DestinationRule", names(dr), "default/reviews"},
		{"ServiceEntry", names(se), "default/httpbin-ext default/ratings default/reviews"},
		{"WorkloadEntry", names(we), "default/reviews-v1 default/reviews-v2"},
		{"Gateway", names(gw), "istio-system/ingress"},
		{"Sidecar", names(sc), "default/reviews-v1"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.kind, c.got, c.want)
		}
	}

	we2 := cfg.WorkloadEntries[1]
	if got, want := we2.Source, (model.Source{File: filepath.Join("testdata", "valid", "workloads", "reviews.yml"), Line: 1}); got != want {
		t.Errorf("WorkloadEntry source: got %v, want %v", got, want)
	}
	if we2.Kind != "WorkloadEntry" || we2.Labels["app"] != "reviews" || we2.Spec.GetPorts()["http"] != 19082 {
		t.Errorf("WorkloadEntry reviews-v2: got meta %+v spec %v", we2.Meta, we2.Spec)
	}
	reviews := cfg.VirtualServices[1].Spec
	if got := reviews.GetHttp()[1].GetRoute()[0].GetWeight(); got != 90 {
		t.Errorf("reviews weight: got %d, want 90", got)
	}
	if got := reviews.GetHttp()[0].GetRetries().GetPerTryTimeout().AsDuration(); got != 500*time.Millisecond {
		t.Errorf("perTryTimeout: got %v, want 500ms", got)
	}
	// Istio reads durations with time.ParseDuration: "1m" is valid.
	if got := cfg.DestinationRules[0].Spec.GetTrafficPolicy().GetOutlierDetection().GetInterval().AsDuration(); got != time.Minute {
		t.Errorf("outlierDetection.interval: got %v, want 1m", got)
	}
	if got := cfg.ServiceEntries[1].Spec.GetPorts()[0].GetTargetPort(); got != 19080 {
		t.Errorf("ratings targetPort: got %d, want 19080", got)
	}

	// mesh.yaml sets trustDomain and discoveryAddress; the rest keeps
	// model.DefaultMesh's values.
	m := cfg.Mesh
	if m.GetTrustDomain() != "example.org" || m.GetRootNamespace() != "istio-system" ||
		m.GetDefaultConfig().GetProxyAdminPort() != 15000 || m.GetDefaultConfig().GetDiscoveryAddress() != "127.0.0.1:15010" {
		t.Errorf("mesh: got %v", m)
	}

	if len(warns) != 0 {
		t.Errorf("warnings: got %v, want none", warns)
	}
	if len(cfg.AuthorizationPolicies) != 1 || cfg.AuthorizationPolicies[0].Key() != "AuthorizationPolicy default/allow-all" {
		t.Errorf("authorization policies: got %v, want default/allow-all", cfg.AuthorizationPolicies)
	}
}

func TestLoadDirWithoutMeshUsesDefaultMesh(t *testing.T) {
	cfg, _, err := LoadDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Mesh.String(), model.DefaultMesh().String(); got != want {
		t.Errorf("mesh: got %s, want %s", got, want)
	}
}

func TestLoadDirSkipsDotFilesAndOtherExtensions(t *testing.T) {
	dir := t.TempDir()
	broken := "kind: Broken\n"
	writeFile(t, filepath.Join(dir, ".hidden.yaml"), broken)
	writeFile(t, filepath.Join(dir, ".git", "x.yaml"), broken)
	writeFile(t, filepath.Join(dir, "notes.txt"), broken)
	writeFile(t, filepath.Join(dir, "we.yaml~"), broken)
	writeFile(t, filepath.Join(dir, "sub", "we.yaml"), "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a}\nspec: {address: 127.0.1.2}\n")
	cfg, _, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.WorkloadEntries) != 1 {
		t.Errorf("got %d WorkloadEntries, want 1", len(cfg.WorkloadEntries))
	}
}

// TestLoadDirFollowsConfigMapSymlinks: a Kubernetes ConfigMap volume holds
// symlinks to files in a "..data" dot-directory.
func TestLoadDirFollowsConfigMapSymlinks(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "..2024_01_01", "we.yaml"), "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a}\nspec: {address: 127.0.1.2}\n")
	if err := os.Symlink("..2024_01_01", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "we.yaml"), filepath.Join(dir, "we.yaml")); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.WorkloadEntries) != 1 {
		t.Errorf("got %d WorkloadEntries, want 1", len(cfg.WorkloadEntries))
	}
}

func TestLoadDirMissingDirIsAnError(t *testing.T) {
	if _, _, err := LoadDir(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("got no error for a missing dir")
	}
}

func TestUnknownKindIsAnError(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "x.yaml"), "apiVersion: networking.istio.io/v1\nkind: DestinationRul\nmetadata: {name: a}\nspec: {}\n")
	cfg, _, err := LoadDir(dir)
	if cfg != nil || err == nil {
		t.Fatalf("got cfg %v, err %v; want an error", cfg, err)
	}
	want := filepath.Join(dir, "x.yaml") + `:2: DestinationRul default/a: kind: unknown kind "DestinationRul" (apiVersion "networking.istio.io/v1"); did you mean DestinationRule?`
	if err.Error() != want {
		t.Errorf("error:\n got %s\nwant %s", err, want)
	}
}

func TestKnownUnsupportedKindIsAWarningAndIgnored(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "x.yaml"), `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua}
spec: {}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: mesh-default, namespace: istio-system}
spec: {}
`)
	cfg, warns, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg == nil {
		t.Fatal("got no config")
	}
	want := []string{
		":1: EnvoyFilter default/lua: networking.istio.io/v1alpha3 EnvoyFilter is not supported yet; ignored",
		":6: WasmPlugin istio-system/mesh-default: extensions.istio.io/v1alpha1 WasmPlugin is not supported yet; ignored",
	}
	if len(warns) != len(want) {
		t.Fatalf("got warnings %v, want %d", warns, len(want))
	}
	for i, w := range warns {
		if got := w.String(); got != filepath.Join(dir, "x.yaml")+want[i] {
			t.Errorf("warning %d: got %s, want %s", i, got, want[i])
		}
	}
}

func TestYAMLAnchorsQuotedNumbersAndStatusAreAccepted(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "x.yaml"), `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ratings
  resourceVersion: "12"
  labels: {version: 1.10}
spec:
  hosts: [ratings.default.svc.cluster.local]
  resolution: STATIC
  ports:
  - &http {number: "9080", name: http, protocol: http}
  endpoints:
  - &ep
    address: 127.0.1.9
    labels: {app: ratings}
  - <<: *ep
    address: 127.0.1.10
status: {}
---
# An empty document.
---
`)
	cfg, _, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	se := cfg.ServiceEntries[0]
	if se.Labels["version"] != "1.10" {
		t.Errorf("label version: got %q, want 1.10 kept as written", se.Labels["version"])
	}
	eps := se.Spec.GetEndpoints()
	if se.Spec.GetPorts()[0].GetNumber() != 9080 || len(eps) != 2 || eps[1].GetAddress() != "127.0.1.10" || eps[1].GetLabels()["app"] != "ratings" {
		t.Errorf("got spec %v", se.Spec)
	}
}

// TestAliasBombIsRejectedQuickly: aliases expanding to a billion nodes, in
// the one free-form (google.protobuf.Struct) field Trellis reads.
func TestAliasBombIsRejectedQuickly(t *testing.T) {
	var b strings.Builder
	b.WriteString("x0: &x0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}\n")
	for i := 1; i < 9; i++ {
		fmt.Fprintf(&b, "x%d: &x%d {", i, i)
		for j := range 10 {
			fmt.Fprintf(&b, "k%d: *x%d, ", j, i-1)
		}
		b.WriteString("}\n")
	}
	b.WriteString("extensionProviders: [{name: log, envoyFileAccessLog: {logFormat: {labels: *x8}}}]\n")
	start := time.Now()
	_, errs := parseMesh("mesh.yaml", []byte(b.String()))
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	if len(errs) == 0 || !strings.Contains(joinErrors(errs).Error(), "document too large") {
		t.Errorf("got errors %v, want one saying the document is too large", errs)
	}
}

func TestDanglingGatewayAndSubsetAreWarnings(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vs.yaml")
	writeFile(t, path, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front}
spec:
  hosts: [front.example.com]
  gateways: [ingress]
  http:
  - route:
    - destination: {host: front, subset: v9}
`)
	cfg, warns, err := LoadDir(dir)
	if err != nil || cfg == nil {
		t.Fatalf("got err %v; want a config", err)
	}
	want := []string{
		path + `:6: VirtualService default/front: spec.gateways[0]: Gateway default/ingress not found`,
		path + `:9: VirtualService default/front: spec.http[0].route[0].destination.subset: subset "v9" of front.default.svc.cluster.local is not defined by any DestinationRule`,
	}
	if len(warns) != len(want) {
		t.Fatalf("got warnings %v, want %d", warns, len(want))
	}
	for i, w := range warns {
		if w.String() != want[i] {
			t.Errorf("warning %d:\n got %s\nwant %s", i, w, want[i])
		}
	}
}

func TestMeshConfigInSubdirIsReadAndOnlyOneIsAllowed(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "config", "mesh.yaml"), "trustDomain: a.example\n")
	cfg, _, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Mesh.GetTrustDomain(); got != "a.example" {
		t.Errorf("trustDomain: got %q, want a.example", got)
	}
	writeFile(t, filepath.Join(dir, "mesh.yml"), "trustDomain: b.example\n")
	_, _, err = LoadDir(dir)
	want := filepath.Join(dir, "mesh.yml") + ": MeshConfig: only one mesh config file is allowed; " + filepath.Join(dir, "config", "mesh.yaml") + " is also one"
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
}

func TestDelegateNobodyUsesAndMissingDelegateAreWarnings(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vs.yaml")
	writeFile(t, path, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root}
spec:
  hosts: [front.example.com]
  http:
  - delegate: {name: missing}
  - delegate: {name: used}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: used}
spec:
  http:
  - route:
    - destination: {host: front}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orphan}
spec:
  http:
  - route:
    - destination: {host: front}
`)
	_, warns, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		path + `:7: VirtualService default/root: spec.http[0].delegate: delegate VirtualService default/missing not found (a delegate has no hosts)`,
		path + `:21: VirtualService default/orphan: spec.hosts: no hosts and no VirtualService delegates to it: it routes nothing`,
	}
	var got []string
	for _, w := range warns {
		got = append(got, w.String())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n got %s\nwant %s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// An Istio Gateway with servers Trellis cannot serve yet still loads: its other servers work, and
// each unserved one is a warning naming its field, not a rejection of the whole config.
func TestGatewayWithUnservedServersLoadsWithWarnings(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gw.yaml")
	writeFile(t, path, `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: edge-cert}
  - port: {number: 8443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: edge-cert}
  - port: {number: 15443, name: tls-pass, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
`)
	cfg, warns, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("the Gateway was refused: %v", err)
	}
	if len(cfg.Gateways) != 1 {
		t.Fatalf("%d gateways loaded, want 1", len(cfg.Gateways))
	}
	var got []string
	for _, w := range warns {
		got = append(got, w.String())
	}
	want := []string{
		path + ":9: Gateway istio-system/edge: spec.servers[1].port.protocol: HTTPS servers are not served by Trellis yet; this server is skipped",
		path + ":14: Gateway istio-system/edge: spec.servers[2].tls.mode: SIMPLE on a TLS server is not served by Trellis yet (PASSTHROUGH is); this server is skipped",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A resource's status is never an error, whatever its shape; its
// conditions are read, as a kubectl export holds them (a WorkloadEntry's
// Healthy decides whether it is an endpoint).
func TestStatusConditionsAreReadAndMalformedStatusIgnored(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "we.yaml"), `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: vms, annotations: {proxy.istio.io/health-checks-enabled: "true"}}
spec: {address: 10.9.0.7, labels: {app: vm}}
status:
  conditions:
  - {type: Healthy, status: "False", message: connection refused, lastProbeTime: "2026-11-24T00:00:00Z"}
  - not a condition
  - {status: "True"}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other, namespace: vms}
spec: {address: 10.9.0.8}
status: [a list, not a status]
`)
	cfg, _, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.WorkloadEntries) != 2 {
		t.Fatalf("%d WorkloadEntries, want 2", len(cfg.WorkloadEntries))
	}
	other, vm := cfg.WorkloadEntries[0], cfg.WorkloadEntries[1]
	want := []model.Condition{{Type: "Healthy", Status: "False", Message: "connection refused"}}
	if !slices.Equal(vm.Conditions, want) {
		t.Errorf("conditions %+v, want %+v", vm.Conditions, want)
	}
	if other.Conditions != nil {
		t.Errorf("a malformed status gave conditions %+v", other.Conditions)
	}
}

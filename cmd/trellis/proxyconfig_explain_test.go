package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

func TestMain(m *testing.M) { os.Exit(kubeenv.Run(m)) }

// The file-mode world: MeshConfig sets drain and concurrency; a mesh-wide ProxyConfig turns
// DNS capture on and sets the log level; namespace shop limits CPU; reviews gets 4 workers;
// the reviews Deployment's pod template turns holding off.
const pcMesh = `defaultConfig:
  concurrency: 2
  terminationDrainDuration: 10s
`

const pcConfigs = `apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata:
  name: mesh-defaults
  namespace: istio-system
  annotations: {sidecar.istio.io/logLevel: info}
spec:
  environmentVariables: {ISTIO_META_DNS_CAPTURE: "true"}
---
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata:
  name: shop-defaults
  namespace: shop
  annotations: {sidecar.istio.io/proxyCPULimit: 1500m}
spec: {}
---
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: reviews-tuning, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  concurrency: 4
`

const pcPods = `apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  template:
    metadata:
      labels: {app: reviews}
      annotations:
        proxy.istio.io/config: "holdApplicationUntilProxyStarts: false"
    spec:
      containers: [{name: app, image: reviews}]
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-1, namespace: shop, labels: {app: ratings}}
spec:
  containers: [{name: app, image: ratings}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: front, labels: {app: web}}
spec:
  containers: [{name: app, image: web}]
`

// pcFiles writes the world; extra are more files of the config dir, by name.
func pcFiles(t *testing.T, extra map[string]string) (dir, pods string) {
	t.Helper()
	root := t.TempDir()
	dir = filepath.Join(root, "config")
	files := map[string]string{"mesh.yaml": pcMesh, "proxyconfigs.yaml": pcConfigs}
	for k, v := range extra {
		files[k] = v
	}
	for name, data := range files {
		writeTestFile(t, filepath.Join(dir, name), data)
	}
	pods = filepath.Join(root, "pods.yaml")
	writeTestFile(t, pods, pcPods)
	return dir, pods
}

func writeTestFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

type explainOut struct {
	Pod       string `json:"pod"`
	Fields    []fieldJSON
	Conflicts []conflictJSON
}

func (o explainOut) field(t *testing.T, name string) fieldJSON {
	t.Helper()
	for _, f := range o.Fields {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("explain printed no %s", name)
	return fieldJSON{}
}

func runJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := runCLI(ctx, append(args, "-o", "json")...)
	if err != nil {
		t.Fatalf("trellis %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
}

// wantField checks one explained setting: value, level and a fragment of its setter.
func wantField(t *testing.T, o explainOut, name, value, level, setBy string) {
	t.Helper()
	f := o.field(t, name)
	if f.Value != value || f.Level != level || !strings.Contains(f.SetBy, setBy) || !f.Restart {
		t.Errorf("%s = %q (%s: %s, restart %v), want %q (%s: ...%s..., restart)", name, f.Value, f.Level, f.SetBy, f.Restart, value, level, setBy)
	}
}

func TestProxyConfigExplainFileMode(t *testing.T) {
	dir, pods := pcFiles(t, map[string]string{
		// Two namespace-wide ProxyConfigs for front: by name, a-front wins.
		"front.yaml": `apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: b-front, namespace: front, annotations: {sidecar.istio.io/logLevel: debug}}
spec: {}
---
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: a-front, namespace: front, annotations: {sidecar.istio.io/logLevel: error}}
spec: {}
`})
	var o explainOut
	runJSON(t, &o, "proxy-config", "explain", "reviews", "--config", dir, "-f", pods)
	if o.Pod != "shop/reviews" {
		t.Errorf("explained %q, want shop/reviews", o.Pod)
	}
	wantField(t, o, "concurrency", "4", "workload", "ProxyConfig shop/reviews-tuning spec.concurrency")
	wantField(t, o, "sidecar.istio.io/proxyCPULimit", "1500m", "namespace", "ProxyConfig shop/shop-defaults metadata.annotations[sidecar.istio.io/proxyCPULimit]")
	wantField(t, o, "sidecar.istio.io/logLevel", "info", "mesh", "ProxyConfig istio-system/mesh-defaults")
	wantField(t, o, "proxyMetadata[ISTIO_META_DNS_CAPTURE]", "true", "mesh", "spec.environmentVariables[ISTIO_META_DNS_CAPTURE]")
	wantField(t, o, "holdApplicationUntilProxyStarts", "false", "pod", "Pod shop/reviews metadata.annotations[proxy.istio.io/config]")
	wantField(t, o, "terminationDrainDuration", "10s", "MeshConfig", "MeshConfig defaultConfig.terminationDrainDuration")
	wantField(t, o, "sidecar.istio.io/proxyMemory", "128Mi", "default", "Trellis default")
	if len(o.Conflicts) != 0 {
		t.Errorf("conflicts for shop/reviews: %+v", o.Conflicts)
	}

	// ratings: no explicit concurrency below MeshConfig's 2.
	runJSON(t, &o, "proxy-config", "explain", "ratings-1", "--config", dir, "-f", pods)
	wantField(t, o, "concurrency", "2", "MeshConfig", "MeshConfig defaultConfig.concurrency")

	// front: the conflict is printed, in the table too.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := runCLI(ctx, "proxy-config", "explain", "web-1", "-n", "front", "--config", dir, "-f", pods)
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^sidecar\.istio\.io/logLevel +error +namespace +ProxyConfig front/a-front metadata\.annotations\[sidecar\.istio\.io/logLevel\] +yes \*$`,
		`namespace level: front/a-front applies; ignored: front/b-front`,
		`re-create the pod`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("explain output does not match %s:\n%s", re, out)
		}
	}
}

func TestProxyConfigExplainRejectsBadValues(t *testing.T) {
	dir, _ := pcFiles(t, nil)
	pod := filepath.Join(t.TempDir(), "pod.yaml")
	writeTestFile(t, pod, `apiVersion: v1
kind: Pod
metadata:
  name: bad
  namespace: shop
  annotations: {traffic.sidecar.istio.io/excludeInboundPorts: "80,http", proxy.istio.io/config: "terminationDrainDuration: -1s"}
spec: {containers: [{name: app, image: x}]}
`)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := runCLI(ctx, "proxy-config", "explain", "--config", dir, "-f", pod)
	if err == nil {
		t.Fatal("explain accepted invalid annotations")
	}
	for _, want := range []string{
		`Pod shop/bad: metadata.annotations[traffic.sidecar.istio.io/excludeInboundPorts]: "80,http": "http" is not a port`,
		`Pod shop/bad: metadata.annotations[proxy.istio.io/config].terminationDrainDuration: "-1s": must not be negative`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %s:\n%v", want, err)
		}
	}
	// A bad ProxyConfig in the directory is the loader's error, with file and line.
	dir, pods := pcFiles(t, map[string]string{"bad.yaml": "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: x, namespace: shop}\nspec: {concurrency: -2}\n"})
	_, err = runCLI(ctx, "proxy-config", "explain", "reviews", "--config", dir, "-f", pods)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "bad.yaml")+`:4: ProxyConfig shop/x: spec.concurrency: "-2": must be 0 (all cores) or more`) {
		t.Errorf("error = %v", err)
	}
}

type diffOut struct {
	Proposed []string
	Pods     []podDiff
	Checked  int
	Applied  bool
}

func (d diffOut) pod(name string) *podDiff {
	for i := range d.Pods {
		if d.Pods[i].Pod == name {
			return &d.Pods[i]
		}
	}
	return nil
}

func (p *podDiff) setting(name string) *settingChange {
	for i := range p.Settings {
		if p.Settings[i].Name == name {
			return &p.Settings[i]
		}
	}
	return nil
}

// wantSpecDiff checks that a pod's injected-spec diff removes and adds exactly these lines.
func wantSpecDiff(t *testing.T, spec string, removed, added []string) {
	t.Helper()
	var gotRemoved, gotAdded []string
	for _, l := range strings.Split(spec, "\n") {
		switch {
		case strings.HasPrefix(l, "---"), strings.HasPrefix(l, "+++"):
		case strings.HasPrefix(l, "-"):
			gotRemoved = append(gotRemoved, l)
		case strings.HasPrefix(l, "+"):
			gotAdded = append(gotAdded, l)
		}
	}
	if strings.Join(gotRemoved, "\n") != strings.Join(removed, "\n") || strings.Join(gotAdded, "\n") != strings.Join(added, "\n") {
		t.Errorf("injected spec diff removes %q and adds %q, want %q and %q:\n%s", gotRemoved, gotAdded, removed, added, spec)
	}
}

func TestProxyConfigDiffFileMode(t *testing.T) {
	dir, pods := pcFiles(t, nil)
	change := filepath.Join(t.TempDir(), "change.yaml")
	// shop's CPU limit goes to 3 cores, and a new ProxyConfig gives ratings a log level.
	writeTestFile(t, change, `apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: shop-defaults, namespace: shop, annotations: {sidecar.istio.io/proxyCPULimit: "3"}}
spec: {}
---
apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: ratings-debug, namespace: shop, annotations: {sidecar.istio.io/logLevel: debug}}
spec: {selector: {matchLabels: {app: ratings}}}
`)
	before, _ := os.ReadFile(filepath.Join(dir, "proxyconfigs.yaml"))
	var d diffOut
	runJSON(t, &d, "proxy-config", "diff", "-f", change, "--config", dir, "--pods", pods)
	if got := strings.Join(d.Proposed, "; "); got != "ProxyConfig shop/shop-defaults (changed); ProxyConfig shop/ratings-debug (new)" {
		t.Errorf("proposed: %s", got)
	}
	if d.Checked != 3 || len(d.Pods) != 2 || d.pod("front/web-1") != nil {
		t.Fatalf("checked %d, affected %+v; want shop/reviews and shop/ratings-1 only", d.Checked, d.Pods)
	}
	r := d.pod("shop/reviews")
	if c := r.setting("sidecar.istio.io/proxyCPULimit"); c == nil || c.Old != "1500m" || c.New != "3" || !c.Restart || c.NewLevel != "namespace" {
		t.Errorf("reviews CPU limit change: %+v", c)
	}
	if len(r.Settings) != 1 || !r.Restart {
		t.Errorf("reviews: %+v; want only the CPU limit, restart needed", r)
	}
	// The proxy container's CPU limit is the only line of the injected spec that changes.
	wantSpecDiff(t, r.Spec, []string{`-        cpu: 1500m`}, []string{`+        cpu: "3"`})
	rt := d.pod("shop/ratings-1")
	if c := rt.setting("sidecar.istio.io/logLevel"); c == nil || c.Old != "info" || c.OldLevel != "mesh" || c.New != "debug" ||
		c.NewLevel != "workload" || !strings.Contains(c.NewSetBy, "ProxyConfig shop/ratings-debug") {
		t.Errorf("ratings log level change: %+v", c)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "proxyconfigs.yaml")); string(after) != string(before) {
		t.Error("diff changed the config directory")
	}

	// Deleting the mesh-wide ProxyConfig touches every pod; a change that makes values
	// invalid is reported per pod.
	runJSON(t, &d, "proxy-config", "diff", "--delete", "istio-system/mesh-defaults", "--config", dir, "--pods", pods)
	if len(d.Pods) != 3 {
		t.Errorf("delete mesh-defaults affected %d pods, want 3", len(d.Pods))
	}
	if c := d.pod("front/web-1").setting("proxyMetadata[ISTIO_META_DNS_CAPTURE]"); c == nil || c.Old != "true" || c.New != "false" || c.NewLevel != "default" {
		t.Errorf("DNS capture after delete: %+v", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := runCLI(ctx, "proxy-config", "diff", "--delete", "shop/nope", "--config", dir, "--pods", pods)
	if err == nil || !strings.Contains(err.Error(), "shop/nope: no such ProxyConfig") {
		t.Errorf("deleting a missing ProxyConfig: %v %s", err, out)
	}
	writeTestFile(t, change, "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata: {name: shop-defaults, namespace: shop, annotations: {sidecar.istio.io/logLevel: loud}}\nspec: {}\n")
	_, err = runCLI(ctx, "proxy-config", "diff", "-f", change, "--config", dir, "--pods", pods)
	if err == nil || !strings.Contains(err.Error(), `change.yaml:3: ProxyConfig shop/shop-defaults: metadata.annotations[sidecar.istio.io/logLevel]: "loud": unknown log level`) {
		t.Errorf("a bad proposed ProxyConfig: %v", err)
	}
	// The short output names pods and restarts, shows the spec's changed lines, and says
	// nothing was applied. Concurrency is GOMAXPROCS; the drain duration is an arg, an env
	// var and the grace period.
	writeTestFile(t, change, "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\n"+
		"metadata: {name: reviews-tuning, namespace: shop, annotations: {proxy.istio.io/config: \"terminationDrainDuration: 40s\"}}\n"+
		"spec: {selector: {matchLabels: {app: reviews}}, concurrency: 8}\n")
	out, err = runCLI(ctx, "proxy-config", "diff", "-f", change, "--config", dir, "--pods", pods)
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`Pod shop/reviews: restart needed`,
		`(?m)^    concurrency +4 +8 +workload: ProxyConfig shop/reviews-tuning spec\.concurrency +workload: ProxyConfig shop/reviews-tuning spec\.concurrency$`,
		`(?m)^  Injected spec:\n    --- injected now\n    \+\+\+ injected after the change$`,
		`(?m)^    -    - --drain-duration=10s\n    \+    - --drain-duration=40s$`,
		`(?m)^         - name: TERMINATION_DRAIN_DURATION\n    -      value: 10s\n    \+      value: 40s\n         - name: GOMAXPROCS\n    -      value: "4"\n    \+      value: "8"$`,
		`(?m)^    \+  terminationGracePeriodSeconds: 45$`,
		`1 of 3 pods affected; nothing was applied\.`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("diff output does not match %s:\n%s", re, out)
		}
	}
}

package install

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/security/ca"
	"github.com/trellis-mesh/trellis/manifests/crds"
)

var update = flag.Bool("update", false, "rewrite testdata/install.golden.yaml")

func goldenOptions(t *testing.T) Options {
	t.Helper()
	root, err := os.ReadFile(filepath.Join("testdata", "root-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return Options{Image: "example.com/trellis:golden", CABundle: root, Include: ControlPlane}
}

// decode splits a rendered stream into objects, as kubectl does.
func decode(t testing.TB, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 64<<10)
	for {
		obj := &unstructured.Unstructured{}
		err := dec.Decode(&obj.Object)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("decode rendered YAML (after %d objects): %v", len(out), err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		out = append(out, obj)
	}
}

func find(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %q in the rendered manifests", kind, name)
	return nil
}

func TestRenderMatchesGolden(t *testing.T) {
	got, err := Render(goldenOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "install.golden.yaml")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/install -run Golden -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("rendered manifests differ from %s; if the change is meant, rerun with -update and review the diff", path)
	}
}

func TestRenderIsDeterministic(t *testing.T) {
	o := goldenOptions(t)
	o.Include = All
	first, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		again, err := Render(o)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, again) {
			t.Fatal("two renders of the same options differ")
		}
	}
}

func TestRenderParts(t *testing.T) {
	o := goldenOptions(t)
	o.Include = CRDsOnly
	o.Image, o.CABundle = "", nil // not needed for the CRDs alone
	only, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(only, crds.YAML) {
		t.Error("CRDsOnly: want exactly Istio's CRD file")
	}

	o = goldenOptions(t)
	o.Include = All
	all, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	objs := decode(t, all)
	var nCRD int
	for i, obj := range objs {
		if obj.GetKind() == "CustomResourceDefinition" {
			nCRD++
			if i >= 15 {
				t.Errorf("CRD %s at position %d: CRDs must come first", obj.GetName(), i)
			}
		}
	}
	if nCRD != 15 {
		t.Errorf("All: %d CRDs, want Istio's 15", nCRD)
	}
	if objs[15].GetKind() != "Namespace" {
		t.Errorf("first object after the CRDs is a %s, want the Namespace", objs[15].GetKind())
	}
	if last := objs[len(objs)-1]; last.GetKind() != "MutatingWebhookConfiguration" {
		t.Errorf("last object is a %s, want the webhook (its Service must exist first)", last.GetKind())
	}
}

func TestRenderOptions(t *testing.T) {
	o := goldenOptions(t)
	o.Namespace, o.Replicas, o.TrustDomain = "mesh", 3, "example.org"
	out, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	objs := decode(t, out)
	for _, obj := range objs {
		switch obj.GetKind() {
		case "Namespace":
			if obj.GetName() != "mesh" {
				t.Errorf("Namespace %q, want mesh", obj.GetName())
			}
		case "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration":
		default:
			if obj.GetNamespace() != "mesh" {
				t.Errorf("%s %s in namespace %q, want mesh", obj.GetKind(), obj.GetName(), obj.GetNamespace())
			}
		}
	}
	if n := find(t, objs, "ClusterRole", "trellis-controlplane-mesh"); n == nil {
		t.Fatal("cluster-scoped RBAC must be named per namespace")
	}
	var dep appsv1.Deployment
	toTyped(t, find(t, objs, "Deployment", ControlPlaneName), &dep)
	if *dep.Spec.Replicas != 3 {
		t.Errorf("replicas %d, want 3", *dep.Spec.Replicas)
	}
	hooks, _, _ := unstructured.NestedSlice(find(t, objs, "MutatingWebhookConfiguration", WebhookName).Object, "webhooks")
	for _, h := range hooks {
		ns, _, _ := unstructured.NestedString(h.(map[string]any), "clientConfig", "service", "namespace")
		if ns != "mesh" {
			t.Errorf("webhook calls a Service in %q, want mesh", ns)
		}
	}
	var cm corev1.ConfigMap
	toTyped(t, find(t, objs, "ConfigMap", MeshConfigMap), &cm)
	if !strings.Contains(cm.Data[MeshKey], "trustDomain: example.org") || !strings.Contains(cm.Data[MeshKey], "rootNamespace: mesh") {
		t.Errorf("mesh config does not follow the options:\n%s", cm.Data[MeshKey])
	}
}

func toTyped(t testing.TB, u *unstructured.Unstructured, into any) {
	t.Helper()
	data, err := yaml.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

func TestRenderRejectsBadOptions(t *testing.T) {
	good := goldenOptions(t)
	key := []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	cases := []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"no image", func(o *Options) { o.Image = "" }, "image: required"},
		{"blank CA bundle", func(o *Options) { o.CABundle = []byte("\n") }, "CA bundle: blank"},
		{"CA bundle not PEM", func(o *Options) { o.CABundle = []byte("hello") }, "CA bundle: not PEM"},
		{"private key as CA bundle", func(o *Options) { o.CABundle = key }, `"PRIVATE KEY": want CERTIFICATE only`},
		{"bad namespace", func(o *Options) { o.Namespace = "Istio_System" }, `namespace "Istio_System"`},
		{"negative replicas", func(o *Options) { o.Replicas = -1 }, "replicas -1"},
		{"bad trust domain", func(o *Options) { o.TrustDomain = "a b" }, `trust domain "a b"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := good
			c.mod(&o)
			_, err := Render(o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// Without a CA bundle the webhooks are printed without caBundle, for the
// control plane's leader to fill in (cmd/trellis's
// TestInstallWithoutCARootIsPatchedByTheControlPlane applies this to a real
// API server).
func TestRenderWithoutCABundleLeavesItToTheControlPlane(t *testing.T) {
	o := goldenOptions(t)
	o.CABundle = nil
	out, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	hooks, _, _ := unstructured.NestedSlice(find(t, decode(t, out), "MutatingWebhookConfiguration", WebhookName).Object, "webhooks")
	if len(hooks) != 2 {
		t.Fatalf("%d webhooks, want 2", len(hooks))
	}
	for _, h := range hooks {
		if b, found, _ := unstructured.NestedFieldNoCopy(h.(map[string]any), "clientConfig", "caBundle"); found {
			t.Errorf("webhook %v has caBundle %v, want none", h.(map[string]any)["name"], b)
		}
	}
}

// TestMeshConfigMapLoadsAsMeshYAML: the ConfigMap's `mesh` is a MeshConfig
// the control plane accepts (read by the Kubernetes source, or as mesh.yaml
// in a --config-dir).
func TestMeshConfigMapLoadsAsMeshYAML(t *testing.T) {
	o := goldenOptions(t)
	o.TrustDomain = "example.org"
	out, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	toTyped(t, find(t, decode(t, out), "ConfigMap", MeshConfigMap), &cm)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(cm.Data[MeshKey]), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.LoadDir(dir)
	if err != nil {
		t.Fatalf("control plane rejects the installed MeshConfig: %v", err)
	}
	if got := cfg.Mesh.GetTrustDomain(); got != "example.org" {
		t.Errorf("trustDomain %q, want example.org", got)
	}
	if got := cfg.Mesh.GetRootNamespace(); got != DefaultNamespace {
		t.Errorf("rootNamespace %q, want %s", got, DefaultNamespace)
	}
}

func TestCABundleFromDir(t *testing.T) {
	// A self-signed root as trellis controlplane keeps it in --ca-dir.
	dir := t.TempDir()
	if _, err := ca.LoadOrCreateDir(dir, ca.Options{}); err != nil {
		t.Fatal(err)
	}
	got, err := CABundleFromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(dir, ca.CACertFile))
	if !bytes.Equal(got, want) {
		t.Error("self-signed dir: want its ca-cert.pem")
	}

	// Istio's cacerts layout made from it, as docs/install.md tells users
	// to do for the cacerts Secret: the control plane loads it, and the
	// bundle is root-cert.pem.
	cacerts := t.TempDir()
	key, _ := os.ReadFile(filepath.Join(dir, ca.CAKeyFile))
	for name, data := range map[string][]byte{ca.CACertFile: want, ca.CAKeyFile: key, ca.RootCertFile: want} {
		if err := os.WriteFile(filepath.Join(cacerts, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ca.LoadCACerts(cacerts, ca.Options{}); err != nil {
		t.Fatalf("the documented cacerts recipe does not load: %v", err)
	}
	got, err = CABundleFromDir(cacerts)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("cacerts dir: got %v, want its root-cert.pem", err)
	}

	_, err = CABundleFromDir(t.TempDir())
	if !errors.Is(err, ErrNoCARoot) || !strings.Contains(err.Error(), "--ca-bundle") {
		t.Errorf("empty dir: error %v, want one that names --ca-bundle", err)
	}
}

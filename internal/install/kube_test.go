package install

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/trellis-mesh/trellis/internal/security/ca"
	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

// The API server of this package is its own: nothing else installs
// Istio's CRDs there, so the CRDs under test are the ones Render prints.
func TestMain(m *testing.M) { os.Exit(kubeenv.Run(m)) }

// applier server-side applies objects, as `kubectl apply --server-side`.
type applier struct {
	t      *testing.T
	disc   discovery.DiscoveryInterface
	client dynamic.Interface
	mapper apimeta.RESTMapper
}

func newApplier(t *testing.T, kube *kubeenv.Env) *applier {
	disc, err := discovery.NewDiscoveryClientForConfig(kube.Config())
	if err != nil {
		t.Fatal(err)
	}
	client, err := dynamic.NewForConfig(kube.Config())
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{t: t, disc: disc, client: client}
	a.refresh()
	return a
}

// refresh rereads the served kinds: needed after CRDs are established.
func (a *applier) refresh() {
	groups, err := restmapper.GetAPIGroupResources(a.disc)
	if err != nil {
		a.t.Fatalf("discovery: %v", err)
	}
	a.mapper = restmapper.NewDiscoveryRESTMapper(groups)
}

func (a *applier) resource(obj *unstructured.Unstructured, namespace string) (dynamic.ResourceInterface, error) {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == apimeta.RESTScopeNameRoot {
		return a.client.Resource(m.Resource), nil
	}
	if obj.GetNamespace() != "" {
		namespace = obj.GetNamespace()
	}
	return a.client.Resource(m.Resource).Namespace(namespace), nil
}

// apply returns the API server's answer for obj (in namespace unless obj
// names its own).
func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured, namespace string) error {
	r, err := a.resource(obj, namespace)
	if err != nil {
		return err
	}
	data, err := json.Marshal(obj.Object)
	if err != nil {
		return err
	}
	force := true
	_, err = r.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "trellis-install-test", Force: &force})
	return err
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func (a *applier) waitEstablished(ctx context.Context, name string) {
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		crd, err := a.client.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conds {
			if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		a.t.Fatalf("CRD %s not established: %v", name, err)
	}
}

// install applies everything Render prints, CRDs first, and returns the
// objects.
func install(t *testing.T, kube *kubeenv.Env, ctx context.Context) (*applier, []*unstructured.Unstructured) {
	t.Helper()
	dir := t.TempDir()
	if _, err := ca.LoadOrCreateDir(dir, ca.Options{}); err != nil {
		t.Fatal(err)
	}
	bundle, err := CABundleFromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Render(Options{Image: "example.com/trellis:test", CABundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	objs := decode(t, out)
	a := newApplier(t, kube)
	var crds []string
	for _, obj := range objs {
		if obj.GetKind() != "CustomResourceDefinition" {
			continue
		}
		if err := a.apply(ctx, obj, ""); err != nil {
			t.Fatalf("apply CRD %s: %v", obj.GetName(), err)
		}
		crds = append(crds, obj.GetName())
	}
	for _, name := range crds {
		a.waitEstablished(ctx, name)
	}
	a.refresh()
	for _, obj := range objs {
		if obj.GetKind() == "CustomResourceDefinition" {
			continue
		}
		if err := a.apply(ctx, obj, ""); err != nil {
			t.Fatalf("apply %s %s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	return a, objs
}

// TestInstallAppliesToRealAPIServer applies the rendered manifests to a real
// kube-apiserver, then Istio's own sample YAML, unchanged: all accepted.
// An invalid resource is still rejected by the CRDs' schemas.
func TestInstallAppliesToRealAPIServer(t *testing.T) {
	kube := kubeenv.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, objs := install(t, kube, ctx)

	// Everything is there, as rendered.
	for _, obj := range objs {
		r, err := a.resource(obj, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Get(ctx, obj.GetName(), metav1.GetOptions{}); err != nil {
			t.Errorf("%s %s after apply: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
	hook, err := kube.Client().AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hook.Webhooks) != 2 || len(hook.Webhooks[0].ClientConfig.CABundle) == 0 {
		t.Errorf("webhook as stored: %d webhooks, caBundle %d bytes", len(hook.Webhooks), len(hook.Webhooks[0].ClientConfig.CABundle))
	}

	// Istio's samples, applied as users apply them.
	ns := kube.Namespace(t)
	files, err := filepath.Glob(filepath.Join("testdata", "istio-samples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	kinds := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range decode(t, data) {
			if err := a.apply(ctx, obj, ns); err != nil {
				t.Errorf("%s: %s %s rejected: %v", f, obj.GetKind(), obj.GetName(), err)
				continue
			}
			kinds[obj.GetKind()]++
		}
	}
	for _, k := range []string{"DestinationRule", "VirtualService", "Gateway", "PeerAuthentication", "AuthorizationPolicy", "Telemetry"} {
		if kinds[k] == 0 {
			t.Errorf("no %s sample was applied", k)
		}
	}

	// The CRDs carry Istio's schemas: a DestinationRule without a host is
	// refused, as on a cluster with Istio.
	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
		"metadata": map[string]any{"name": "no-host"},
		"spec":     map[string]any{"subsets": []any{map[string]any{"name": "v1"}}},
	}}
	err = a.apply(ctx, bad, ns)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "host") {
		t.Errorf("DestinationRule without host: %v, want Invalid naming host", err)
	}
}

// TestInstalledRBACIsLeastPrivilege asks the real authorizer what the
// control plane's ServiceAccount may do once the manifests are applied.
func TestInstalledRBACIsLeastPrivilege(t *testing.T) {
	kube := kubeenv.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	install(t, kube, ctx)
	sa := "system:serviceaccount:" + DefaultNamespace + ":" + ControlPlaneName
	can := func(attr authorizationv1.ResourceAttributes) bool {
		t.Helper()
		review, err := kube.Client().AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: sa, ResourceAttributes: &attr},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return review.Status.Allowed
	}
	allowed := []authorizationv1.ResourceAttributes{
		{Verb: "watch", Resource: "services"},
		{Verb: "list", Resource: "pods", Namespace: "default"},
		{Verb: "watch", Resource: "namespaces"},
		{Verb: "get", Resource: "nodes"},
		{Verb: "watch", Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: "default"},
		{Verb: "list", Group: "networking.istio.io", Resource: "virtualservices"},
		{Verb: "watch", Group: "security.istio.io", Resource: "authorizationpolicies", Namespace: "default"},
		{Verb: "list", Group: "telemetry.istio.io", Resource: "telemetries"},
		{Verb: "list", Group: "extensions.istio.io", Resource: "wasmplugins"},
		{Verb: "update", Group: "networking.istio.io", Resource: "virtualservices", Subresource: "status", Namespace: "default"},
		{Verb: "create", Group: "authentication.k8s.io", Resource: "tokenreviews"},
		{Verb: "create", Group: "networking.istio.io", Resource: "workloadentries", Namespace: "default"},
		{Verb: "delete", Group: "networking.istio.io", Resource: "workloadentries", Namespace: "default"},
		{Verb: "patch", Group: "security.istio.io", Resource: "authorizationpolicies", Subresource: "status", Namespace: "default"},
		{Verb: "get", Group: "networking.istio.io", Resource: "workloadgroups", Namespace: "default"},
		{Verb: "create", Resource: "events", Namespace: "default"},
		{Verb: "get", Resource: "secrets", Name: "istio-ca-secret", Namespace: DefaultNamespace},
		{Verb: "get", Resource: "secrets", Name: "cacerts", Namespace: DefaultNamespace},
		{Verb: "create", Resource: "secrets", Namespace: DefaultNamespace},
		{Verb: "watch", Resource: "configmaps", Namespace: DefaultNamespace},
		{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: DefaultNamespace},
		{Verb: "patch", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: WebhookName},
		{Verb: "update", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: WebhookName},
		{Verb: "watch", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: WebhookName},
		{Verb: "list", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: WebhookName},
		{Verb: "list", Group: "networking.istio.io", Resource: "proxyconfigs"},
		{Verb: "create", Resource: "configmaps", Namespace: "default"},
		{Verb: "update", Resource: "configmaps", Name: RootCertConfigMap, Namespace: "default"},
		{Verb: "watch", Resource: "configmaps", Name: RootCertConfigMap},
	}
	for _, attr := range allowed {
		if !can(attr) {
			t.Errorf("control plane may not %+v; it needs to", attr)
		}
	}
	denied := []authorizationv1.ResourceAttributes{
		{Verb: "get", Resource: "secrets", Name: "other", Namespace: DefaultNamespace},
		{Verb: "list", Resource: "secrets", Namespace: DefaultNamespace},
		{Verb: "get", Resource: "secrets", Name: "istio-ca-secret", Namespace: "default"},
		{Verb: "delete", Resource: "pods", Namespace: "default"},
		{Verb: "update", Group: "networking.istio.io", Resource: "virtualservices", Namespace: "default"},
		{Verb: "delete", Group: "networking.istio.io", Resource: "destinationrules", Namespace: "default"},
		{Verb: "delete", Group: "networking.istio.io", Resource: "workloadgroups", Namespace: "default"},
		{Verb: "patch", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: "someone-elses"},
		{Verb: "list", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations"},
		{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: "default"},
		{Verb: "get", Resource: "configmaps", Namespace: "default"},
		{Verb: "update", Resource: "configmaps", Name: "app-settings", Namespace: "default"},
		{Verb: "list", Resource: "configmaps"},
	}
	for _, attr := range denied {
		if can(attr) {
			t.Errorf("control plane may %+v; it must not", attr)
		}
	}
}

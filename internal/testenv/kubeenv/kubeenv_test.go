package kubeenv

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	networkingv1 "istio.io/api/networking/v1"
	istionetworking "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

// watchTimeout bounds how long a test waits for a change to arrive on a watch. Changes arrive in
// milliseconds; the bound is loose for a busy 2-core machine.
const watchTimeout = 10 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestServicesAndEndpointSlicesAreStoredWatchedAndDeleted(t *testing.T) {
	kube := Shared(t)
	ns := kube.Namespace(t)
	ctx := testContext(t)
	client := kube.Client()

	svc, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Labels: map[string]string{"app": "reviews"}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "reviews"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 9080}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Service: %v", err)
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil || !netip.MustParsePrefix(ServiceClusterIPRange).Contains(ip) {
		t.Errorf("Service ClusterIP = %q, want one allocated from %s", svc.Spec.ClusterIP, ServiceClusterIPRange)
	}

	port, proto := int32(9080), corev1.ProtocolTCP
	portName := "http"
	slices := client.DiscoveryV1().EndpointSlices(ns)
	slice, err := slices.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "reviews-1", Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.1"}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create EndpointSlice: %v", err)
	}

	gotSvc, err := client.CoreV1().Services(ns).Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil || gotSvc.Spec.ClusterIP != svc.Spec.ClusterIP || gotSvc.Spec.Ports[0].Port != 9080 {
		t.Fatalf("get Service = %+v, %v; want the created one", gotSvc, err)
	}
	list, err := slices.List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=reviews"})
	if err != nil || len(list.Items) != 1 || list.Items[0].Endpoints[0].Addresses[0] != "10.1.0.1" {
		t.Fatalf("list EndpointSlices of reviews = %+v, %v; want the created one", list, err)
	}

	w, err := slices.Watch(ctx, metav1.ListOptions{ResourceVersion: slice.ResourceVersion})
	if err != nil {
		t.Fatalf("watch EndpointSlices: %v", err)
	}
	defer w.Stop()
	slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.1.0.2"}})
	updated := time.Now()
	if _, err := slices.Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update EndpointSlice: %v", err)
	}
	ev := nextEvent(t, w)
	got, ok := ev.Object.(*discoveryv1.EndpointSlice)
	if ev.Type != watch.Modified || !ok || len(got.Endpoints) != 2 {
		t.Fatalf("watch event = %s %T, want Modified EndpointSlice with 2 endpoints", ev.Type, ev.Object)
	}
	t.Logf("EndpointSlice change seen on the watch %v after the update", time.Since(updated).Round(time.Millisecond))

	if err := slices.Delete(ctx, "reviews-1", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete EndpointSlice: %v", err)
	}
	if ev := nextEvent(t, w); ev.Type != watch.Deleted {
		t.Errorf("watch event after delete = %s, want Deleted", ev.Type)
	}
	if err := client.CoreV1().Services(ns).Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete Service: %v", err)
	}
	if _, err := client.CoreV1().Services(ns).Get(ctx, "reviews", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get deleted Service: err = %v, want NotFound", err)
	}
}

func nextEvent(t *testing.T, w watch.Interface) watch.Event {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("watch closed")
		}
		return ev
	case <-time.After(watchTimeout):
		t.Fatalf("no watch event within %v", watchTimeout)
	}
	return watch.Event{}
}

func TestIstioVirtualServicesAreServedAndValidatedThroughTheRealCRD(t *testing.T) {
	kube := Shared(t)
	kube.InstallIstioCRDs(t)
	ns := kube.Namespace(t)
	ctx := testContext(t)
	istio := kube.IstioClient(t)
	vss := istio.NetworkingV1().VirtualServices(ns)

	route := func(subset string) *networkingv1.HTTPRoute {
		return &networkingv1.HTTPRoute{Route: []*networkingv1.HTTPRouteDestination{{
			Destination: &networkingv1.Destination{Host: "reviews", Subset: subset},
		}}}
	}
	vs, err := vss.Create(ctx, &istionetworking.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews"},
		Spec:       networkingv1.VirtualService{Hosts: []string{"reviews"}, Http: []*networkingv1.HTTPRoute{route("v1")}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create VirtualService: %v", err)
	}
	got, err := vss.Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil || got.Spec.Http[0].Route[0].Destination.Subset != "v1" {
		t.Fatalf("get VirtualService = %v, %v; want the created one routing to v1", got, err)
	}

	w, err := vss.Watch(ctx, metav1.ListOptions{ResourceVersion: vs.ResourceVersion})
	if err != nil {
		t.Fatalf("watch VirtualServices: %v", err)
	}
	defer w.Stop()
	got.Spec.Http[0] = route("v2")
	if _, err := vss.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update VirtualService: %v", err)
	}
	ev := nextEvent(t, w)
	if changed, ok := ev.Object.(*istionetworking.VirtualService); ev.Type != watch.Modified || !ok ||
		changed.Spec.Http[0].Route[0].Destination.Subset != "v2" {
		t.Fatalf("watch event = %s %T, want Modified VirtualService routing to v2", ev.Type, ev.Object)
	}

	// The CRD's schema is enforced by the server: hosts must be a list.
	dyn, err := dynamic.NewForConfig(kube.Config())
	if err != nil {
		t.Fatal(err)
	}
	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1",
		"kind":       "VirtualService",
		"metadata":   map[string]any{"name": "bad"},
		"spec":       map[string]any{"hosts": "reviews"},
	}}
	gvr := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	if _, err := dyn.Resource(gvr).Namespace(ns).Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("create VirtualService with hosts a string: err = %v, want Invalid from the CRD schema", err)
	}

	if err := vss.Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete VirtualService: %v", err)
	}
	if _, err := vss.Get(ctx, "reviews", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get deleted VirtualService: err = %v, want NotFound", err)
	}
}

func TestKubeconfigReachesTheServerAsAdminOfThePinnedVersion(t *testing.T) {
	kube := Shared(t)
	ns := kube.Namespace(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", kube.Kubeconfig)
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Namespaces().Get(testContext(t), ns, metav1.GetOptions{}); err != nil {
		t.Errorf("get namespace %s through the kubeconfig: %v", ns, err)
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	want, err := requiredVersion(filepath.Join(root, toolsDir, "kube-apiserver", "go.mod"), "k8s.io/kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	version, err := client.Discovery().ServerVersion()
	if err != nil || version.GitVersion != want {
		t.Errorf("server version = %v, %v; want %s", version, err, want)
	}
}

func TestRBACDeniesUsersUntilARoleBindingGrantsAccess(t *testing.T) {
	kube := Shared(t)
	ns := kube.Namespace(t)
	ctx := testContext(t)
	user := "system:serviceaccount:" + ns + ":reader"
	cfg := kube.Config()
	cfg.Impersonate.UserName = user // the admin (system:masters) may impersonate anyone
	reader, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader.CoreV1().Services(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list Services as %s without a binding: err = %v, want Forbidden", user, err)
	}
	// A Role of our own: the aggregated ClusterRoles (view, edit, admin) get their rules from a
	// controller of the controller manager, which does not run here.
	_, err = kube.Client().RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "service-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get", "list", "watch"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Role: %v", err)
	}
	_, err = kube.Client().RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "service-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create RoleBinding: %v", err)
	}
	// The authorizer reads bindings through an informer: the grant takes effect within moments.
	deadline := time.Now().Add(watchTimeout)
	for {
		_, err := reader.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("list Services as %s with a Role allowing it: %v", user, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStartedServerStopsLeavingNoProcessOrFileBehind(t *testing.T) {
	kube := Start(t)
	if _, err := kube.Client().CoreV1().Namespaces().List(testContext(t), metav1.ListOptions{}); err != nil {
		t.Fatalf("list namespaces on a private server: %v", err)
	}
	if shared.env == kube {
		t.Fatal("Start returned the shared server")
	}
	pids := []int{kube.etcd.cmd.Process.Pid, kube.apiserver.cmd.Process.Pid}
	kube.Stop()
	for _, pid := range pids {
		// Each child led its own process group: the group must be empty.
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group %d after Stop: kill(0) = %v, want ESRCH", pid, err)
		}
	}
	if _, err := os.Stat(kube.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data dir %s after Stop: %v, want it removed", kube.dir, err)
	}
}

func TestSharedReturnsOneServerPerTestBinary(t *testing.T) {
	first, second := Shared(t), Shared(t)
	if first != second {
		t.Fatalf("Shared started a second server: %s and %s", first.Host, second.Host)
	}
	if _, err := os.Stat(first.Kubeconfig); err != nil {
		t.Errorf("kubeconfig of the shared server: %v", err)
	}
}

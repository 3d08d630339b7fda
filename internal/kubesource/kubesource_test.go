package kubesource_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
	networking "istio.io/api/networking/v1alpha3"
	istiov1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/kubesource"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
	"github.com/trellis-mesh/trellis/internal/translate"
)

func TestMain(m *testing.M) { os.Exit(kubeenv.Run(m)) }

// within is the pass/fail deadline for a change to reach an ADS client:
// generous, since the test machine is shared. The aim is a second; the
// measured time is logged.
const within = 10 * time.Second

type cluster struct {
	kube  kubernetes.Interface
	istio istioclient.Interface
	ns    string
	addr  net.Addr
	errs  chan error // the control plane's OnConfigError
}

// startCluster runs the control plane against the shared API server, with
// Istio's CRDs installed and a fresh namespace for the test.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	kube, ns, ic := istioNamespace(t)
	c := &cluster{kube: kube.Client(), istio: ic, ns: ns, errs: make(chan error, 64)}

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan controlplane.Ready, 1)
	done := make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, controlplane.Options{
			Kubernetes:     kube.Config(),
			IstioNamespace: c.ns,
			XDSAddress:     "127.0.0.1:0",
			CAAddress:      "",
			Logger:         slog.New(slog.NewTextHandler(t.Output(), nil)),
			Ready:          func(r controlplane.Ready) { ready <- r },
			OnConfigError: func(err error) {
				select {
				case c.errs <- err:
				default:
				}
			},
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	select {
	case r := <-ready:
		c.addr = r.XDSAddr
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("control plane not ready")
	}
	return c
}

func (c *cluster) host(svc string) string { return svc + "." + c.ns + ".svc.cluster.local" }

// node is an ADS client posing as a sidecar in the test's namespace.
func (c *cluster) node() string {
	return "sidecar~10.1.255.1~client." + c.ns + "~" + c.ns + ".svc.cluster.local"
}

func (c *cluster) createPod(t *testing.T, name, ip string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	pod, err := c.kube.CoreV1().Pods(c.ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: labels["app"],
			Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// No kubelet runs: the test reports the Pod running, as one would.
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if _, err := c.kube.CoreV1().Pods(c.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) createService(t *testing.T, name string, port int32) *corev1.Service {
	t.Helper()
	svc, err := c.kube.CoreV1().Services(c.ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: port, TargetPort: intstr.FromInt32(port)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// endpoint is one EndpointSlice endpoint: a Pod's address and conditions.
type endpoint struct {
	pod, ip     string
	node        string
	notReady    bool
	terminating bool
}

// writeSlice creates or replaces the Service's EndpointSlice, as the
// EndpointSlice controller would.
func (c *cluster) writeSlice(t *testing.T, svc string, port int32, eps ...endpoint) {
	t.Helper()
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-abc", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(port), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for _, e := range eps {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(!e.notReady), Serving: ptr(!e.notReady), Terminating: ptr(e.terminating)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: c.ns, Name: e.pod},
		})
		if e.node != "" {
			es.Endpoints[len(es.Endpoints)-1].NodeName = ptr(e.node)
		}
	}
	ctx := context.Background()
	api := c.kube.DiscoveryV1().EndpointSlices(c.ns)
	old, err := api.Get(ctx, es.Name, metav1.GetOptions{})
	if err == nil {
		es.ResourceVersion = old.ResourceVersion
		_, err = api.Update(ctx, es, metav1.UpdateOptions{})
	} else {
		_, err = api.Create(ctx, es, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// await reads responses of one type on c, ACKing each, until ok holds for
// one, and returns it; it fails the test after within.
func await(t *testing.T, c *adstest.SotW, typeURL string, names []string, what string, ok func(*discoveryv3.DiscoveryResponse) bool) *discoveryv3.DiscoveryResponse {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("%s: not seen within %v", what, within)
		}
		r := c.Expect(typeURL, left)
		c.ACK(r, names...)
		if ok(r) {
			t.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond))
			return r
		}
	}
}

func clusterNames(t *testing.T, r *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.Resources {
		var c clusterv3.Cluster
		if err := a.UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c.Name)
	}
	return out
}

// edsNames are the EDS clusters of a CDS response: in ADS mode a client
// asks for all of them, as Envoy does, or the server waits for it to.
func edsNames(t *testing.T, r *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.Resources {
		var c clusterv3.Cluster
		if err := a.UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		if c.GetType() == clusterv3.Cluster_EDS {
			out = append(out, c.Name)
		}
	}
	return out
}

// endpointsOf is "ip:port" of every endpoint of the named cluster in r,
// sorted; nil when r does not hold the cluster.
func endpointsOf(t *testing.T, r *discoveryv3.DiscoveryResponse, name string) []string {
	t.Helper()
	for _, a := range r.Resources {
		var cla endpointv3.ClusterLoadAssignment
		if err := a.UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		if cla.ClusterName != name {
			continue
		}
		out := []string{}
		for _, g := range cla.Endpoints {
			for _, lb := range g.LbEndpoints {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				out = append(out, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
			}
		}
		slices.Sort(out)
		return out
	}
	return nil
}

// A Service and its EndpointSlice, written through the API, reach an ADS
// client as a cluster and its endpoints; endpoints added, made terminating
// or not ready, and the Service's deletion follow.
func TestServiceAndEndpointSliceReachADSClient(t *testing.T) {
	c := startCluster(t)
	c.createPod(t, "reviews-v1", "10.1.0.1", map[string]string{"app": "reviews", "version": "v1"})
	c.createPod(t, "reviews-v2", "10.1.0.2", map[string]string{"app": "reviews", "version": "v2"})
	c.createPod(t, "reviews-v3", "10.1.0.3", map[string]string{"app": "reviews", "version": "v3"})

	ads := adstest.Dial(t, c.addr.String())
	cds := adstest.NewSotW(t, ads, adstest.Node(c.node(), nil))
	cds.Request(resourcev3.ClusterType)
	name := "outbound|9080||" + c.host("reviews")
	hasCluster := func(r *discoveryv3.DiscoveryResponse) bool { return slices.Contains(clusterNames(t, r), name) }

	c.createService(t, "reviews", 9080)
	c.writeSlice(t, "reviews", 9080, endpoint{pod: "reviews-v1", ip: "10.1.0.1"})
	names := edsNames(t, await(t, cds, resourcev3.ClusterType, nil, "Service created → cluster "+name, hasCluster))

	eds := adstest.NewSotW(t, ads, adstest.Node(c.node(), nil))
	eds.Request(resourcev3.EndpointType, names...)
	want := func(eps ...string) func(*discoveryv3.DiscoveryResponse) bool {
		return func(r *discoveryv3.DiscoveryResponse) bool { return slices.Equal(endpointsOf(t, r, name), eps) }
	}
	await(t, eds, resourcev3.EndpointType, names, "endpoints of the slice", want("10.1.0.1:9080"))

	c.writeSlice(t, "reviews", 9080, endpoint{pod: "reviews-v1", ip: "10.1.0.1"}, endpoint{pod: "reviews-v2", ip: "10.1.0.2"})
	await(t, eds, resourcev3.EndpointType, names, "endpoint added", want("10.1.0.1:9080", "10.1.0.2:9080"))

	// Terminating and not-ready endpoints are not served (Istio's rule).
	c.writeSlice(t, "reviews", 9080,
		endpoint{pod: "reviews-v1", ip: "10.1.0.1"},
		endpoint{pod: "reviews-v2", ip: "10.1.0.2", notReady: true, terminating: true},
		endpoint{pod: "reviews-v3", ip: "10.1.0.3", notReady: true})
	await(t, eds, resourcev3.EndpointType, names, "terminating and not-ready endpoints left out", want("10.1.0.1:9080"))

	c.writeSlice(t, "reviews", 9080)
	await(t, eds, resourcev3.EndpointType, names, "last endpoint removed", want())

	if err := c.kube.CoreV1().Services(c.ns).Delete(context.Background(), "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, cds, resourcev3.ClusterType, nil, "Service deleted → cluster gone", func(r *discoveryv3.DiscoveryResponse) bool { return !hasCluster(r) })
}

// routeWeights is "cluster=weight" of the reviews route in the outbound
// route configuration, or nil without one.
func routeWeights(t *testing.T, r *discoveryv3.DiscoveryResponse, host string) []string {
	t.Helper()
	for _, a := range r.Resources {
		var rc routev3.RouteConfiguration
		if err := a.UnmarshalTo(&rc); err != nil {
			t.Fatal(err)
		}
		for _, vh := range rc.VirtualHosts {
			if !slices.Contains(vh.Domains, host+":9080") {
				continue
			}
			for _, rt := range vh.Routes {
				var out []string
				for _, wc := range rt.GetRoute().GetWeightedClusters().GetClusters() {
					out = append(out, fmt.Sprintf("%s=%d", wc.Name, wc.Weight.GetValue()))
				}
				if out != nil {
					return out
				}
			}
		}
	}
	return nil
}

// A VirtualService and DestinationRule from the API route by the Pods'
// version labels; an invalid change to the VirtualService is not served
// (the previous version keeps serving), is reported as a config error and
// as a Warning Event on the object naming the field.
func TestInvalidVirtualServiceKeepsLastGoodAndGetsEvent(t *testing.T) {
	c := startCluster(t)
	c.createPod(t, "reviews-v1", "10.2.0.1", map[string]string{"app": "reviews", "version": "v1"})
	c.createPod(t, "reviews-v2", "10.2.0.2", map[string]string{"app": "reviews", "version": "v2"})
	c.createService(t, "reviews", 9080)
	c.writeSlice(t, "reviews", 9080, endpoint{pod: "reviews-v1", ip: "10.2.0.1"}, endpoint{pod: "reviews-v2", ip: "10.2.0.2"})
	ctx := context.Background()
	if _, err := c.istio.NetworkingV1().DestinationRules(c.ns).Create(ctx, &istiov1.DestinationRule{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews"},
		Spec: networking.DestinationRule{Host: "reviews", Subsets: []*networking.Subset{
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2"}},
		}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vsAPI := c.istio.NetworkingV1().VirtualServices(c.ns)
	split := func(v1, v2 int32) networking.VirtualService {
		return networking.VirtualService{Hosts: []string{"reviews"}, Http: []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{
			{Destination: &networking.Destination{Host: "reviews", Subset: "v1"}, Weight: v1},
			{Destination: &networking.Destination{Host: "reviews", Subset: "v2"}, Weight: v2},
		}}}}
	}
	if _, err := vsAPI.Create(ctx, &istiov1.VirtualService{ObjectMeta: metav1.ObjectMeta{Name: "reviews"}, Spec: split(80, 20)}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ads := adstest.Dial(t, c.addr.String())
	v1 := "outbound|9080|v1|" + c.host("reviews")
	cds := adstest.NewSotW(t, ads, adstest.Node(c.node(), nil))
	cds.Request(resourcev3.ClusterType)
	names := edsNames(t, await(t, cds, resourcev3.ClusterType, nil, "DestinationRule subsets → cluster "+v1, func(r *discoveryv3.DiscoveryResponse) bool {
		return slices.Contains(clusterNames(t, r), v1)
	}))
	eds := adstest.NewSotW(t, ads, adstest.Node(c.node(), nil))
	eds.Request(resourcev3.EndpointType, names...)
	await(t, eds, resourcev3.EndpointType, names, "subset v1 holds the version=v1 Pod", func(r *discoveryv3.DiscoveryResponse) bool {
		return slices.Equal(endpointsOf(t, r, v1), []string{"10.2.0.1:9080"})
	})

	rds := adstest.NewSotW(t, ads, adstest.Node(c.node(), nil))
	routes := []string{translate.OutboundRouteName}
	rds.Request(resourcev3.RouteType, routes...)
	good := []string{v1 + "=80", "outbound|9080|v2|" + c.host("reviews") + "=20"}
	await(t, rds, resourcev3.RouteType, routes, "VirtualService 80/20 routed", func(r *discoveryv3.DiscoveryResponse) bool {
		return slices.Equal(routeWeights(t, r, c.host("reviews")), good)
	})

	// Weights summing to 90: the CRD's schema accepts it, Istio's
	// validation (and ours) does not.
	vs, err := vsAPI.Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vs.Spec = split(70, 20)
	if _, err := vsAPI.Update(ctx, vs, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("the API server rejected the update, so the test does not reach our validation: %v", err)
	}
	field := "spec.http[0].route[1].weight"
	deadline := time.Now().Add(within)
	for {
		select {
		case err := <-c.errs:
			if !strings.Contains(err.Error(), "kubernetes: VirtualService "+c.ns+"/reviews: "+field) {
				continue // another test's namespace, or an earlier problem
			}
			t.Logf("config error: %v", err)
		case <-time.After(time.Until(deadline)):
			t.Fatal("the invalid VirtualService was not reported as a config error")
		}
		break
	}
	msg := awaitEvent(t, c, "VirtualService", "reviews")
	if !strings.Contains(msg, field) || !strings.Contains(msg, "sum to 100") {
		t.Fatalf("event message %q does not name %s and the reason", msg, field)
	}

	// A change elsewhere makes a new config; the route is still 80/20.
	c.writeSlice(t, "reviews", 9080, endpoint{pod: "reviews-v1", ip: "10.2.0.1"})
	await(t, eds, resourcev3.EndpointType, names, "endpoint change after the invalid update", func(r *discoveryv3.DiscoveryResponse) bool {
		return len(endpointsOf(t, r, "outbound|9080|v2|"+c.host("reviews"))) == 0
	})
	fresh := adstest.NewSotW(t, ads, adstest.Node(c.node(), nil))
	fresh.Request(resourcev3.RouteType, routes...)
	r := fresh.Expect(resourcev3.RouteType, within)
	if got := routeWeights(t, r, c.host("reviews")); !slices.Equal(got, good) {
		t.Fatalf("route weights = %v after an invalid update, want the last good %v", got, good)
	}
}

// awaitEvent waits for a TrellisValidationFailed Event on the object and
// returns its message.
func awaitEvent(t *testing.T, c *cluster, kind, name string) string {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if evs := validationEvents(t, c, kind, name); len(evs) > 0 {
			t.Logf("event after %v: %s %s: %s", time.Since(start).Round(time.Millisecond), evs[0].Type, evs[0].Reason, evs[0].Message)
			return evs[0].Message
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %s Event on %s %s/%s within %v", kubesource.ReasonValidationFailed, kind, c.ns, name, within)
	return ""
}

// validationEvents are the TrellisValidationFailed Warning Events on the
// object now.
func validationEvents(t *testing.T, c *cluster, kind, name string) []corev1.Event {
	t.Helper()
	list, err := c.kube.CoreV1().Events(c.ns).List(context.Background(), metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + name + ",involvedObject.kind=" + kind,
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, ev := range list.Items {
		if ev.Reason == kubesource.ReasonValidationFailed && ev.Type == corev1.EventTypeWarning {
			out = append(out, ev)
		}
	}
	return out
}

// A sidecar at a Pod's IP is that Pod: it gets the inbound side of the
// Service the Pod backs, and clients reach the Service with mTLS to the
// Pod's service-account identity.
func TestPodIsTheWorkloadBehindItsService(t *testing.T) {
	c := startCluster(t)
	c.createPod(t, "ratings-v1", "10.3.0.1", map[string]string{"app": "ratings", "version": "v1"})
	c.createService(t, "ratings", 9080)
	c.writeSlice(t, "ratings", 9080, endpoint{pod: "ratings-v1", ip: "10.3.0.1"})
	ads := adstest.Dial(t, c.addr.String())

	pod := adstest.NewSotW(t, ads, adstest.Node("sidecar~10.3.0.1~ratings-v1."+c.ns+"~"+c.ns+".svc.cluster.local", nil))
	pod.Request(resourcev3.ClusterType)
	await(t, pod, resourcev3.ClusterType, nil, "the Pod's sidecar gets inbound|9080||", func(r *discoveryv3.DiscoveryResponse) bool {
		return slices.Contains(clusterNames(t, r), "inbound|9080||")
	})

	name := "outbound|9080||" + c.host("ratings")
	identity := "spiffe://cluster.local/ns/" + c.ns + "/sa/ratings"
	client := adstest.NewSotW(t, ads, adstest.Node(c.node(), nil))
	client.Request(resourcev3.ClusterType)
	await(t, client, resourcev3.ClusterType, nil, "a client verifies "+identity, func(r *discoveryv3.DiscoveryResponse) bool {
		for _, a := range r.Resources {
			var cl clusterv3.Cluster
			if err := a.UnmarshalTo(&cl); err != nil {
				t.Fatal(err)
			}
			if cl.Name == name {
				js, err := protojson.Marshal(&cl)
				if err != nil {
					t.Fatal(err)
				}
				return strings.Contains(string(js), identity)
			}
		}
		return false
	})
}

// The istio ConfigMap's mesh key is the MeshConfig; an invalid one gets an
// Event on the ConfigMap, and is reported as a config error.
func TestInvalidMeshConfigMapGetsEvent(t *testing.T) {
	c := startCluster(t)
	if _, err := c.kube.CoreV1().ConfigMaps(c.ns).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "istio"},
		Data:       map[string]string{"mesh": "defaultConfig:\n  proxyAdminPort: not-a-port\n"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	msg := awaitEvent(t, c, "ConfigMap", "istio")
	if !strings.Contains(msg, "proxyAdminPort") {
		t.Fatalf("event message %q does not name the field", msg)
	}
}

// An endpoint's locality is its Node's region/zone/subzone labels, as
// Istio's; a Pod's istio-locality label overrides it.
func TestEndpointLocalityComesFromItsNode(t *testing.T) {
	c := startCluster(t)
	node := "node-" + c.ns
	if _, err := c.kube.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{
		corev1.LabelTopologyRegion: "us-east1", corev1.LabelTopologyZone: "us-east1-b", "topology.istio.io/subzone": "rack7",
	}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.kube.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	c.createPod(t, "details-v1", "10.4.0.1", map[string]string{"app": "details"})
	c.createPod(t, "details-v2", "10.4.0.2", map[string]string{"app": "details", "istio-locality": "eu-west1.eu-west1-a"})
	c.createService(t, "details", 9080)
	c.writeSlice(t, "details", 9080, endpoint{pod: "details-v1", ip: "10.4.0.1", node: node}, endpoint{pod: "details-v2", ip: "10.4.0.2", node: node})

	ads := adstest.Dial(t, c.addr.String())
	name := "outbound|9080||" + c.host("details")
	cds := adstest.NewSotW(t, ads, adstest.Node(c.node(), nil))
	cds.Request(resourcev3.ClusterType)
	names := edsNames(t, await(t, cds, resourcev3.ClusterType, nil, "cluster "+name, func(r *discoveryv3.DiscoveryResponse) bool {
		return slices.Contains(clusterNames(t, r), name)
	}))
	eds := adstest.NewSotW(t, ads, adstest.Node(c.node(), nil))
	eds.Request(resourcev3.EndpointType, names...)
	want := []string{"10.4.0.1 us-east1/us-east1-b/rack7", "10.4.0.2 eu-west1/eu-west1-a/"}
	await(t, eds, resourcev3.EndpointType, names, "endpoints with their localities", func(r *discoveryv3.DiscoveryResponse) bool {
		var got []string
		for _, a := range r.Resources {
			var cla endpointv3.ClusterLoadAssignment
			if err := a.UnmarshalTo(&cla); err != nil {
				t.Fatal(err)
			}
			if cla.ClusterName != name {
				continue
			}
			for _, g := range cla.Endpoints {
				l := g.GetLocality()
				for _, lb := range g.LbEndpoints {
					got = append(got, lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()+" "+l.GetRegion()+"/"+l.GetZone()+"/"+l.GetSubZone())
				}
			}
		}
		slices.Sort(got)
		return slices.Equal(got, want)
	})
}

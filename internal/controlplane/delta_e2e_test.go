package controlplane

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

const productpageCluster = "outbound|9080||productpage.default.svc.cluster.local"

// deltaSidecar connects a delta ADS client as a REDIRECT sidecar with no
// WorkloadEntry of its own (so it shares its class's translation), takes
// clusters and listeners by wildcard, then the endpoints of eds and the
// routes the listeners name (withRoutes), ACKing each, as Envoy does.
func deltaSidecar(t *testing.T, addr, id string, eds []string, withRoutes bool) *adstest.Delta {
	t.Helper()
	c := adstest.NewDelta(t, adstest.Dial(t, addr), adstest.Node(id, map[string]string{"app": "client"}))
	c.Subscribe(resourcev3.ClusterType)
	c.ACK(c.Expect(resourcev3.ClusterType, 5*time.Second))
	c.Subscribe(resourcev3.ListenerType)
	lds := c.Expect(resourcev3.ListenerType, 5*time.Second)
	c.ACK(lds)
	var rds []string
	if withRoutes {
		if rds = routeNames(t, lds); len(rds) == 0 {
			t.Fatalf("%s: no listener refers to a route configuration", id)
		}
	}
	c.Subscribe(resourcev3.EndpointType, eds...)
	r := c.Expect(resourcev3.EndpointType, 5*time.Second)
	if got := adstest.DeltaResourceNames(r); !slices.Equal(got, eds) {
		t.Fatalf("%s: endpoints %v, want %v", id, got, eds)
	}
	c.ACK(r)
	if len(rds) > 0 {
		c.Subscribe(resourcev3.RouteType, rds...)
		r := c.Expect(resourcev3.RouteType, 5*time.Second)
		if got := adstest.DeltaResourceNames(r); !slices.Equal(got, rds) {
			t.Fatalf("%s: routes %v, want %v", id, got, rds)
		}
		c.ACK(r)
	}
	return c
}

// One endpoint change, end to end from the config directory: a delta proxy
// subscribed to the changed cluster gets that one ClusterLoadAssignment and
// nothing else (no clusters, listeners, routes or other assignments); a delta
// proxy not subscribed to it gets nothing at all.
func TestEndpointChangeSendsDeltaClientsOnlyTheChangedAssignment(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "services.yaml"), services)
	writeFile(t, filepath.Join(dir, "workloads.yaml"), workloads)
	addr := startControlPlane(t, dir, func(err error) { t.Errorf("config error: %v", err) }).String()

	both := []string{productpageCluster, reviewsCluster}
	// Two proxies of one class (same namespace and labels), and one that
	// asks only for productpage's endpoints.
	a := deltaSidecar(t, addr, "sidecar~10.9.0.1~client-a.default~default.svc.cluster.local", both, true)
	b := deltaSidecar(t, addr, "sidecar~10.9.0.2~client-b.default~default.svc.cluster.local", both, true)
	other := deltaSidecar(t, addr, "sidecar~10.9.0.3~client-c.default~default.svc.cluster.local", []string{productpageCluster}, false)

	writeFile(t, filepath.Join(dir, "workloads.yaml"), workloads+reviewsV2)
	for _, c := range []*adstest.Delta{a, b} {
		r := c.Expect(resourcev3.EndpointType, 5*time.Second)
		if got := adstest.DeltaResourceNames(r); !slices.Equal(got, []string{reviewsCluster}) || len(r.RemovedResources) > 0 {
			t.Fatalf("endpoint change sent %v (removed %v), want only %s", got, r.RemovedResources, reviewsCluster)
		}
		c.ACK(r)
	}
	// The debounce is 100 ms and the push follows at once; a second is
	// ample for anything else to have arrived.
	for _, c := range []*adstest.Delta{a, b, other} {
		c.ExpectNone(time.Second)
	}
}

// routeNames lists the RDS route configurations the listeners refer to.
func routeNames(t *testing.T, r *discoveryv3.DeltaDiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, res := range r.GetResources() {
		var l listenerv3.Listener
		if err := res.GetResource().UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var h hcmv3.HttpConnectionManager
				if f.GetTypedConfig().MessageIs(&h) {
					if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
						t.Fatal(err)
					}
					if n := h.GetRds().GetRouteConfigName(); n != "" && !slices.Contains(out, n) {
						out = append(out, n)
					}
				}
			}
		}
	}
	return out
}

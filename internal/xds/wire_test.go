package xds

import (
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

// translatedByName is the stub's resources for mesh and the proxy at ip,
// deterministically encoded, by type URL and name: what a proxy must
// receive byte for byte.
func translatedByName(t *testing.T, mesh *model.Snapshot, ip string) map[string]map[string][]byte {
	t.Helper()
	res, err := newStub().translate(mesh, &model.Proxy{ID: productpageID, IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]byte{}
	for _, typ := range res.byType() {
		out[typ.url] = map[string][]byte{}
		for _, r := range typ.items {
			buf, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			out[typ.url][cachev3.GetResourceName(r)] = buf
		}
	}
	return out
}

// Proxies of one class are served the class's shared encodings; each must
// still receive exactly what translation produced, SotW and delta alike.
func TestProxiesOfOneClassReceiveTheTranslatedBytes(t *testing.T) {
	// The stub's listener binds the proxy's IP: the class's config is
	// that of its first proxy, productpage at 127.0.1.2.
	oneClass := func(o *Options) {
		o.ShareKey = func(*model.Snapshot, *model.Proxy) (string, bool) { return "one", true }
	}
	srv, conn := startServer(t, newStub(), oneClass)
	mesh := meshSnapshot("127.0.1.3", "127.0.1.4")
	srv.Update(mesh)
	want := translatedByName(t, mesh, "127.0.1.2")

	for _, id := range []string{productpageID, reviewsID} {
		got := syncSotw(t, adstest.NewSotW(t, conn, node(id)))
		for url, r := range got {
			if r.GetTypeUrl() != url || len(r.GetResources()) != len(want[url]) {
				t.Fatalf("%s: %s: %d resources of type %s, want %d", id, url, len(r.GetResources()), r.GetTypeUrl(), len(want[url]))
			}
			for _, a := range r.GetResources() {
				name := nameIn(t, url, a.GetValue())
				if buf, ok := want[url][name]; !ok || a.GetTypeUrl() != url || string(buf) != string(a.GetValue()) {
					t.Fatalf("%s: %s: resource %q differs from its translation", id, url, name)
				}
			}
		}
	}

	d := adstest.NewDelta(t, conn, adstest.Node("sidecar~127.0.1.6~details-v1.default~default.svc.cluster.local", map[string]string{"app": "details"}))
	d.Subscribe(resourcev3.ClusterType)
	cds := d.Expect(resourcev3.ClusterType, pushDeadline)
	if len(cds.GetResources()) != len(want[resourcev3.ClusterType]) {
		t.Fatalf("delta CDS: %d clusters, want %d", len(cds.GetResources()), len(want[resourcev3.ClusterType]))
	}
	for _, r := range cds.GetResources() {
		buf := want[resourcev3.ClusterType][r.GetName()]
		if buf == nil || string(r.GetResource().GetValue()) != string(buf) || r.GetResource().GetTypeUrl() != resourcev3.ClusterType {
			t.Fatalf("delta CDS: cluster %q differs from its translation", r.GetName())
		}
		// The version a proxy echoes back on reconnect must be the one
		// the cache compares with: the hash of the encoding.
		if r.GetVersion() != resourceVersion(buf) {
			t.Fatalf("delta CDS: cluster %q version %q, want the hash of its encoding", r.GetName(), r.GetVersion())
		}
	}
}

// A delta proxy is told by name which resources went away: a service
// dropped from the mesh removes its cluster (wildcard) and its endpoints
// (subscribed by name).
func TestDeltaProxyIsToldOfRemovedResources(t *testing.T) {
	srv, conn := startServer(t, newStub())
	srv.Update(meshSnapshot("127.0.1.3"))
	// One stream per type: ADS orders a node's answers, the test need not.
	cds := adstest.NewDelta(t, conn, node(productpageID))
	cds.Subscribe(resourcev3.ClusterType)
	cds.ACK(cds.Expect(resourcev3.ClusterType, pushDeadline))
	eds := adstest.NewDelta(t, conn, node(reviewsID))
	eds.Subscribe(resourcev3.EndpointType, ratingsCluster, reviewsCluster)
	eds.ACK(eds.Expect(resourcev3.EndpointType, pushDeadline))

	srv.Update(ratingsOnly())
	for url, c := range map[string]*adstest.Delta{resourcev3.ClusterType: cds, resourcev3.EndpointType: eds} {
		r := c.Expect(url, pushDeadline)
		if !slices.Equal(r.GetRemovedResources(), []string{reviewsCluster}) || len(r.GetResources()) != 0 {
			t.Fatalf("%s: removed %v and updated %v, want only %s removed", url, r.GetRemovedResources(), adstest.DeltaResourceNames(r), reviewsCluster)
		}
		c.ACK(r)
	}
}

func ratingsOnly() *model.Snapshot {
	return model.NewSnapshot(&model.Config{ServiceEntries: []*model.ServiceEntry{{
		Meta: model.Meta{Kind: "ServiceEntry", Namespace: "default", Name: "ratings"},
		Spec: &networking.ServiceEntry{
			Hosts:      []string{"ratings.default.svc.cluster.local"},
			Location:   networking.ServiceEntry_MESH_INTERNAL,
			Resolution: networking.ServiceEntry_STATIC,
			Ports:      []*networking.ServicePort{{Name: "http", Number: 9080, Protocol: "HTTP"}},
			Endpoints:  []*networking.WorkloadEntry{{Address: "127.0.1.5"}},
		},
	}}})
}

// nameIn reads the name of an encoded resource of type url.
func nameIn(t *testing.T, url string, buf []byte) string {
	t.Helper()
	var r proto.Message
	switch url {
	case resourcev3.ClusterType:
		r = &clusterv3.Cluster{}
	case resourcev3.EndpointType:
		r = &endpointv3.ClusterLoadAssignment{}
	case resourcev3.ListenerType:
		r = &listenerv3.Listener{}
	case resourcev3.RouteType:
		r = &routev3.RouteConfiguration{}
	default:
		t.Fatalf("unexpected type %s", url)
	}
	if err := proto.Unmarshal(buf, r); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return cachev3.GetResourceName(r)
}

package xds

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

func oneClass(o *Options) {
	o.ShareKey = func(*model.Snapshot, *model.Proxy) (string, bool) { return "one", true }
}

// A state-of-the-world client in step is sent only the endpoints that
// changed; with what it kept, it holds exactly the new translation.
func TestSotwEDSSendsOnlyTheChangedCLAAndTheClientEndsWithTheFullSet(t *testing.T) {
	srv, conn := startServer(t, newStub())
	srv.Update(meshSnapshot("127.0.1.3"))
	c := adstest.NewSotW(t, conn, node(productpageID))
	got := syncSotw(t, c)
	held := map[string][]byte{}
	for _, a := range got[resourcev3.EndpointType].GetResources() {
		held[nameIn(t, resourcev3.EndpointType, a.GetValue())] = a.GetValue()
	}

	next := meshSnapshot("127.0.1.3", "127.0.1.4")
	srv.Update(next)
	r := c.Expect(resourcev3.EndpointType, pushDeadline)
	if names := adstest.ResourceNames(t, r); !slices.Equal(names, []string{reviewsCluster}) {
		t.Fatalf("EDS response carries %v, want only %s", names, reviewsCluster)
	}
	for _, a := range r.GetResources() {
		held[nameIn(t, resourcev3.EndpointType, a.GetValue())] = a.GetValue()
	}
	want := translatedByName(t, next, "127.0.1.2")[resourcev3.EndpointType]
	if !maps.EqualFunc(held, want, func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Fatalf("client holds %d CLAs that differ from the new translation's %d", len(held), len(want))
	}
	if v := statusOf(t, srv, productpageID).Versions[resourcev3.EndpointType]; r.GetVersionInfo() != v {
		t.Fatalf("version_info %s, want the class's EDS version %s", r.GetVersionInfo(), v)
	}
	c.ACK(r, ratingsCluster, reviewsCluster)
	c.ExpectNone(quiet) // clusters, listeners and routes did not change
	eventually(t, pushDeadline, "EDS synced", func() bool {
		p := statusOf(t, srv, productpageID)
		return SyncStatus(p.Sent[resourcev3.EndpointType], p.Acked[resourcev3.EndpointType]) == Synced
	})
}

// One endpoint change reaches, as exactly one resource, only the delta
// clients subscribed to it.
func TestDeltaEndpointChangeSendsExactlyOneCLAToItsSubscribersOnly(t *testing.T) {
	srv, conn := startServer(t, newStub(), oneClass)
	srv.Update(meshSnapshot("127.0.1.3"))
	both := adstest.NewDelta(t, conn, node(productpageID))
	both.Subscribe(resourcev3.EndpointType, ratingsCluster, reviewsCluster)
	both.ACK(both.Expect(resourcev3.EndpointType, pushDeadline))
	ratings := adstest.NewDelta(t, conn, node(reviewsID))
	ratings.Subscribe(resourcev3.EndpointType, ratingsCluster)
	ratings.ACK(ratings.Expect(resourcev3.EndpointType, pushDeadline))

	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	r := both.Expect(resourcev3.EndpointType, pushDeadline)
	if names := adstest.DeltaResourceNames(r); !slices.Equal(names, []string{reviewsCluster}) || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("delta EDS: %v updated, %v removed; want only %s updated", names, r.GetRemovedResources(), reviewsCluster)
	}
	both.ACK(r)
	ratings.ExpectNone(quiet)
	both.ExpectNone(quiet)
}

// Proxies of one class cost one translation per mesh snapshot, and hold
// the very same snapshot.
func TestStreamsOfAClassShareOneTranslation(t *testing.T) {
	stub := newStub()
	srv, conn := startServer(t, stub, oneClass)
	srv.Update(meshSnapshot("127.0.1.3"))
	a, b := adstest.NewSotW(t, conn, node(productpageID)), adstest.NewSotW(t, conn, node(reviewsID))
	syncSotw(t, a)
	syncSotw(t, b)
	if n := stub.calls.Load(); n != 1 {
		t.Fatalf("%d translations for two proxies of one class, want 1", n)
	}
	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	a.ACK(a.Expect(resourcev3.EndpointType, pushDeadline), ratingsCluster, reviewsCluster)
	b.ACK(b.Expect(resourcev3.EndpointType, pushDeadline), ratingsCluster, reviewsCluster)
	if n := stub.calls.Load(); n != 2 {
		t.Fatalf("%d translations after one update, want 2", n)
	}
	if sa, sb := srv.snapshotOf(productpageID), srv.snapshotOf(reviewsID); sa == nil || sa != sb {
		t.Fatal("proxies of one class hold different snapshots")
	}
}

// A stream that narrows its subscription is answered for its new names;
// another stream of the same class sees nothing of it.
func TestSubscriptionChangeOnOneStreamDoesNotAffectAnother(t *testing.T) {
	srv, conn := startServer(t, newStub(), oneClass)
	srv.Update(meshSnapshot("127.0.1.3"))
	a, b := adstest.NewSotW(t, conn, node(productpageID)), adstest.NewSotW(t, conn, node(reviewsID))
	syncEDS(t, a)
	syncEDS(t, b)

	a.Request(resourcev3.EndpointType, ratingsCluster)
	r := a.Expect(resourcev3.EndpointType, pushDeadline)
	if names := adstest.ResourceNames(t, r); !slices.Equal(names, []string{ratingsCluster}) {
		t.Fatalf("narrowed stream got %v, want %s", names, ratingsCluster)
	}
	a.ACK(r, ratingsCluster)
	b.ExpectNone(quiet)

	// reviews changes: only b, still subscribed to it, hears of it.
	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	r = b.Expect(resourcev3.EndpointType, pushDeadline)
	if names := adstest.ResourceNames(t, r); !slices.Equal(names, []string{reviewsCluster}) {
		t.Fatalf("other stream got %v, want %s", names, reviewsCluster)
	}
	a.ExpectNone(quiet)
}

// A delta client reconnecting with the versions it holds is sent only the
// resources that changed meanwhile.
func TestDeltaReconnectWithInitialVersionsGetsOnlyWhatDiffers(t *testing.T) {
	srv, conn := startServer(t, newStub())
	srv.Update(meshSnapshot("127.0.1.3"))
	ctx, cancel := context.WithCancel(context.Background())
	first, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node(productpageID), TypeUrl: resourcev3.EndpointType,
		ResourceNamesSubscribe: []string{ratingsCluster, reviewsCluster}}); err != nil {
		t.Fatal(err)
	}
	r, err := first.Recv()
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, res := range r.GetResources() {
		held[res.GetName()] = res.GetVersion()
	}
	cancel()
	if len(held) != 2 {
		t.Fatalf("first stream got %v", held)
	}

	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	again := adstest.NewDelta(t, conn, node(productpageID))
	again.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType,
		ResourceNamesSubscribe: []string{ratingsCluster, reviewsCluster}, InitialResourceVersions: held})
	r2 := again.Expect(resourcev3.EndpointType, pushDeadline)
	if names := adstest.DeltaResourceNames(r2); !slices.Equal(names, []string{reviewsCluster}) {
		t.Fatalf("reconnected client got %v, want only %s", names, reviewsCluster)
	}
	again.ACK(r2)
	again.ExpectNone(quiet)
}

// fakeEndpointDelta is EndpointDelta for the stub's meshes: the hosts
// whose endpoint addresses differ, when the services are otherwise alike.
func fakeEndpointDelta(old, new *model.Snapshot) (model.EndpointChange, bool) {
	if len(old.Services) != len(new.Services) {
		return model.EndpointChange{}, false
	}
	var hosts []string
	for i, o := range old.Services {
		n := new.Services[i]
		if o.Hostname != n.Hostname || len(o.Ports) != len(n.Ports) {
			return model.EndpointChange{}, false
		}
		addr := func(s *model.Service) []string {
			var out []string
			for _, e := range s.Endpoints {
				out = append(out, e.Address)
			}
			return out
		}
		if !slices.Equal(addr(o), addr(n)) {
			hosts = append(hosts, n.Hostname)
		}
	}
	return model.EndpointChange{Hosts: hosts}, true
}

// An endpoint-only change patches each class's snapshot with the CLAs of
// the changed hosts, without translating; versions agree with a full build.
func TestEndpointOnlyChangePatchesTheClassWithoutTranslating(t *testing.T) {
	stub := newStub()
	var mu sync.Mutex
	var epCalls [][]string
	srv, conn := startServer(t, stub, oneClass, func(o *Options) {
		o.EndpointDelta = fakeEndpointDelta
		o.TranslateEndpoints = func(snap *model.Snapshot, _ *model.Proxy, hosts []string) ([]*endpointv3.ClusterLoadAssignment, error) {
			mu.Lock()
			epCalls = append(epCalls, hosts)
			mu.Unlock()
			var out []*endpointv3.ClusterLoadAssignment
			for _, svc := range snap.Services {
				if slices.Contains(hosts, svc.Hostname) {
					for _, p := range svc.Ports {
						out = append(out, stubCLA(svc, p))
					}
				}
			}
			return out, nil
		}
	})
	srv.Update(meshSnapshot("127.0.1.3"))
	c := adstest.NewSotW(t, conn, node(productpageID))
	syncSotw(t, c)
	before := stub.calls.Load()

	next := meshSnapshot("127.0.1.3", "127.0.1.4")
	srv.Update(next)
	r := c.Expect(resourcev3.EndpointType, pushDeadline)
	if names := adstest.ResourceNames(t, r); !slices.Equal(names, []string{reviewsCluster}) {
		t.Fatalf("EDS response carries %v, want only %s", names, reviewsCluster)
	}
	c.ACK(r, ratingsCluster, reviewsCluster)
	c.ExpectNone(quiet)
	if n := stub.calls.Load(); n != before {
		t.Fatalf("%d full translations for an endpoint-only change", n-before)
	}
	mu.Lock()
	calls := slices.Clone(epCalls)
	mu.Unlock()
	if len(calls) != 1 || !slices.Equal(calls[0], []string{"reviews.default.svc.cluster.local"}) {
		t.Fatalf("TranslateEndpoints calls = %v, want one for reviews", calls)
	}
	p, _ := model.ParseProxy(productpageID)
	full, err := srv.generate(next, p)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetVersionInfo() != full.versions[resourcev3.EndpointType] {
		t.Fatalf("patched EDS version %s, a full build gives %s", r.GetVersionInfo(), full.versions[resourcev3.EndpointType])
	}

	// A proxy of the class connecting now joins the patched snapshot.
	before = stub.calls.Load() // generate above translated
	late := adstest.NewSotW(t, conn, node(reviewsID))
	late.Request(resourcev3.EndpointType, ratingsCluster, reviewsCluster)
	if lr := late.Expect(resourcev3.EndpointType, pushDeadline); lr.GetVersionInfo() != r.GetVersionInfo() || len(lr.GetResources()) != 2 {
		t.Fatalf("late proxy got version %s with %d CLAs", lr.GetVersionInfo(), len(lr.GetResources()))
	}
	if n := stub.calls.Load(); n != before {
		t.Fatalf("%d translations for a proxy joining its class", n-before)
	}
}

// OnConnect fires on each stream of a node, OnDisconnect only when its
// last one closes: a proxy whose new stream overlaps its old one stays
// connected, with the new connect time.
func TestConnectHooksFireOnEachStreamAndTheLastClose(t *testing.T) {
	var mu sync.Mutex
	var events []string
	record := func(e string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}
	srv, conn := startServer(t, newStub(), func(o *Options) {
		o.OnConnect = func(n *corev3.Node) { record("connect " + n.GetId()) }
		o.OnDisconnect = func(id string) { record("disconnect " + id) }
	})
	srv.Update(meshSnapshot("127.0.1.3"))
	open := func() context.CancelFunc {
		ctx, cancel := context.WithCancel(context.Background())
		s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&discoveryv3.DiscoveryRequest{Node: node(productpageID), TypeUrl: resourcev3.ClusterType}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		return cancel
	}
	closeA, closeB := open(), open()
	closeA()
	eventually(t, pushDeadline, "one stream left", func() bool { return statusOf(t, srv, productpageID).Streams == 1 })
	closeB()
	want := []string{"connect " + productpageID, "connect " + productpageID, "disconnect " + productpageID}
	eventually(t, pushDeadline, "disconnect hook", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Equal(events, want)
	})
	time.Sleep(quiet) // nothing more may follow
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(events, want) {
		t.Fatalf("hooks = %v, want %v", events, want)
	}
}

package xds

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/model"
)

const (
	reviewsCluster = "outbound|9080||reviews.default.svc.cluster.local"
	ratingsCluster = "outbound|9080||ratings.default.svc.cluster.local"
	pushDeadline   = time.Second
	quiet          = 300 * time.Millisecond
)

func names(t *testing.T, anys []*anypb.Any) []string {
	t.Helper()
	var out []string
	for _, a := range anys {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cachev3.GetResourceName(m))
	}
	slices.Sort(out)
	return out
}

func deltaNames(t *testing.T, rs []*discoveryv3.Resource) []string {
	t.Helper()
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	slices.Sort(out)
	return out
}

// syncSotw walks the ADS handshake Envoy does (CDS, EDS, LDS, RDS), ACKing
// each response, and returns the responses by type.
func syncSotw(t *testing.T, c *sotwClient) map[string]*discoveryv3.DiscoveryResponse {
	t.Helper()
	got := map[string]*discoveryv3.DiscoveryResponse{}
	c.request(resourcev3.ClusterType)
	got[resourcev3.ClusterType] = c.expect(resourcev3.ClusterType, pushDeadline)
	c.ack(got[resourcev3.ClusterType])
	clusters := names(t, got[resourcev3.ClusterType].Resources)
	c.request(resourcev3.EndpointType, clusters...)
	got[resourcev3.EndpointType] = c.expect(resourcev3.EndpointType, pushDeadline)
	c.ack(got[resourcev3.EndpointType], clusters...)
	c.request(resourcev3.ListenerType)
	got[resourcev3.ListenerType] = c.expect(resourcev3.ListenerType, pushDeadline)
	c.ack(got[resourcev3.ListenerType])
	c.request(resourcev3.RouteType, "15001")
	got[resourcev3.RouteType] = c.expect(resourcev3.RouteType, pushDeadline)
	c.ack(got[resourcev3.RouteType], "15001")
	return got
}

// syncEDS subscribes to both services' endpoints only and ACKs.
func syncEDS(t *testing.T, c *sotwClient) *discoveryv3.DiscoveryResponse {
	t.Helper()
	c.request(resourcev3.EndpointType, ratingsCluster, reviewsCluster)
	r := c.expect(resourcev3.EndpointType, pushDeadline)
	c.ack(r, ratingsCluster, reviewsCluster)
	return r
}

func statusOf(t *testing.T, srv *Server, id string) ProxyStatus {
	t.Helper()
	for _, p := range srv.Proxies() {
		if p.ID == id {
			return p
		}
	}
	t.Fatalf("proxy %s not tracked; have %v", id, srv.Proxies())
	return ProxyStatus{}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSotwProxyGetsConfigThenOnlyChangedTypesWithin1s(t *testing.T) {
	srv, conn := startServer(t, newStub())
	srv.Update(meshSnapshot("127.0.1.3"))
	c := newSotw(t, conn, productpageID)
	got := syncSotw(t, c)

	if n := names(t, got[resourcev3.ClusterType].Resources); !slices.Equal(n, []string{ratingsCluster, reviewsCluster}) {
		t.Fatalf("clusters = %v", n)
	}
	if n := names(t, got[resourcev3.ListenerType].Resources); !slices.Equal(n, []string{"virtualOutbound"}) {
		t.Fatalf("listeners = %v", n)
	}
	eventually(t, pushDeadline, "every type ACKed", func() bool {
		p := statusOf(t, srv, productpageID)
		return len(p.Versions) == 4 && maps.Equal(p.Versions, p.Acked)
	})

	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	eds := c.expect(resourcev3.EndpointType, pushDeadline)
	if eds.VersionInfo == got[resourcev3.EndpointType].VersionInfo {
		t.Fatalf("EDS re-sent with the same version %s", eds.VersionInfo)
	}
	c.ack(eds, ratingsCluster, reviewsCluster)
	c.expectNone(quiet) // clusters, listeners and routes did not change

	// The same config again changes nothing at all.
	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	c.expectNone(quiet)
}

func TestDeltaProxyGetsConfigThenOnlyTheChangedResource(t *testing.T) {
	srv, conn := startServer(t, newStub())
	srv.Update(meshSnapshot("127.0.1.3"))
	c := newDelta(t, conn, productpageID)

	c.subscribe(resourcev3.ClusterType) // wildcard
	cds := c.expect(resourcev3.ClusterType, pushDeadline)
	if n := deltaNames(t, cds.Resources); !slices.Equal(n, []string{ratingsCluster, reviewsCluster}) {
		t.Fatalf("clusters = %v", n)
	}
	c.ack(cds)
	c.subscribe(resourcev3.EndpointType, ratingsCluster, reviewsCluster)
	eds := c.expect(resourcev3.EndpointType, pushDeadline)
	if n := deltaNames(t, eds.Resources); len(n) != 2 {
		t.Fatalf("endpoints = %v", n)
	}
	c.ack(eds)
	c.subscribe(resourcev3.ListenerType)
	c.ack(c.expect(resourcev3.ListenerType, pushDeadline))
	c.subscribe(resourcev3.RouteType, "15001")
	c.ack(c.expect(resourcev3.RouteType, pushDeadline))
	c.expectNone(quiet)

	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	eds = c.expect(resourcev3.EndpointType, pushDeadline)
	if n := deltaNames(t, eds.Resources); !slices.Equal(n, []string{reviewsCluster}) {
		t.Fatalf("delta update carried %v, want only the changed %s", n, reviewsCluster)
	}
	if len(eds.RemovedResources) != 0 {
		t.Fatalf("removed = %v", eds.RemovedResources)
	}
	c.ack(eds)
	c.expectNone(quiet)
	eventually(t, pushDeadline, "delta ACK recorded", func() bool {
		p := statusOf(t, srv, productpageID)
		return p.Acked[resourcev3.EndpointType] == p.Versions[resourcev3.EndpointType]
	})
}

func TestTranslationErrorKeepsThatProxysPreviousSnapshot(t *testing.T) {
	stub := newStub()
	srv, conn := startServer(t, stub)
	srv.Update(meshSnapshot("127.0.1.3"))
	broken, healthy := newSotw(t, conn, productpageID), newSotw(t, conn, reviewsID)
	before := syncEDS(t, broken)
	syncEDS(t, healthy)
	versionBefore := statusOf(t, srv, productpageID).Versions[resourcev3.EndpointType]

	stub.setFail(productpageID, errStub)
	next := meshSnapshot("127.0.1.3", "127.0.1.4")
	srv.Update(next)
	c := healthy.expect(resourcev3.EndpointType, pushDeadline)
	healthy.ack(c, ratingsCluster, reviewsCluster)
	broken.expectNone(quiet)

	p := statusOf(t, srv, productpageID)
	if !strings.Contains(p.LastError, errStub.Error()) {
		t.Fatalf("LastError = %q, want it to carry the translation error", p.LastError)
	}
	if p.Versions[resourcev3.EndpointType] != versionBefore {
		t.Fatalf("version moved to %s after a failed translation", p.Versions[resourcev3.EndpointType])
	}
	snap, err := srv.cache.GetSnapshot(productpageID)
	if err != nil || snap.GetVersion(resourcev3.EndpointType) != before.VersionInfo {
		t.Fatalf("cache lost the last good snapshot: %v", err)
	}

	stub.setFail(productpageID, nil)
	srv.Update(next)
	if r := broken.expect(resourcev3.EndpointType, pushDeadline); r.VersionInfo != c.VersionInfo {
		t.Fatalf("recovered proxy got version %s, want %s", r.VersionInfo, c.VersionInfo)
	}
	eventually(t, pushDeadline, "error cleared", func() bool { return statusOf(t, srv, productpageID).LastError == "" })
}

func TestInvalidNodeIDClosesOnlyItsStream(t *testing.T) {
	for _, tc := range []struct{ name, id, want string }{
		{"too few fields", "productpage", "want 4 fields"},
		{"bad type", "pod~127.0.1.2~productpage-v1.default~default.svc.cluster.local", "want sidecar or router"},
		{"bad ip", "sidecar~not-an-ip~productpage-v1.default~default.svc.cluster.local", "ip"},
		{"no namespace", "sidecar~127.0.1.2~productpage~default.svc.cluster.local", "want name.namespace"},
		{"empty", "", "carries no node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, conn := startServer(t, newStub())
			srv.Update(meshSnapshot("127.0.1.3"))
			good := newSotw(t, conn, reviewsID)
			syncEDS(t, good)

			bad := newSotw(t, conn, tc.id)
			bad.request(resourcev3.ClusterType)
			assertRejected(t, bad.expectError(pushDeadline), tc.want)
			badDelta := newDelta(t, conn, tc.id)
			badDelta.subscribe(resourcev3.ClusterType)
			select {
			case err := <-badDelta.errc:
				assertRejected(t, err, tc.want)
			case <-time.After(pushDeadline):
				t.Fatal("delta stream with a bad node ID stayed open")
			}

			srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
			good.expect(resourcev3.EndpointType, pushDeadline)
			if ps := srv.Proxies(); len(ps) != 1 || ps[0].ID != reviewsID {
				t.Fatalf("tracked proxies = %+v", ps)
			}
		})
	}
}

func assertRejected(t *testing.T, err error, want string) {
	t.Helper()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), want) {
		t.Fatalf("stream error = %v, want InvalidArgument containing %q", err, want)
	}
}

func TestResourceFailingValidateIsNotPushed(t *testing.T) {
	stub := newStub()
	srv, conn := startServer(t, stub)
	srv.Update(meshSnapshot("127.0.1.3"))
	c := newSotw(t, conn, productpageID)
	got := syncSotw(t, c)

	stub.setBad(productpageID, true)
	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	c.expectNone(quiet)
	p := statusOf(t, srv, productpageID)
	if !strings.Contains(p.LastError, "ConnectTimeout") {
		t.Fatalf("LastError = %q, want the Validate() failure", p.LastError)
	}
	if p.Versions[resourcev3.ClusterType] != got[resourcev3.ClusterType].VersionInfo {
		t.Fatal("a snapshot failing Validate() replaced the last good one")
	}
}

func TestNACKIsRecordedInProxyStatus(t *testing.T) {
	srv, conn := startServer(t, newStub())
	srv.Update(meshSnapshot("127.0.1.3"))
	c := newSotw(t, conn, productpageID)
	c.request(resourcev3.ClusterType)
	r := c.expect(resourcev3.ClusterType, pushDeadline)
	c.nack(r, "", "cluster outbound|9080||reviews: unsupported thing")

	eventually(t, pushDeadline, "NACK recorded", func() bool { return statusOf(t, srv, productpageID).LastNACK != nil })
	n := statusOf(t, srv, productpageID).LastNACK
	if n.TypeURL != resourcev3.ClusterType || n.Version != r.VersionInfo || !strings.Contains(n.Message, "unsupported thing") {
		t.Fatalf("NACK = %+v", n)
	}
	if _, acked := statusOf(t, srv, productpageID).Acked[resourcev3.ClusterType]; acked {
		t.Fatal("a NACK counted as an ACK")
	}
}

func TestProxyForgottenAfterLastStreamCloses(t *testing.T) {
	srv, conn := startServer(t, newStub(), func(o *Options) { o.ForgetAfter = 50 * time.Millisecond })
	srv.Update(meshSnapshot("127.0.1.3"))
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node(productpageID), TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	eventually(t, 2*time.Second, "proxy forgotten", func() bool { return len(srv.Proxies()) == 0 })
	if _, err := srv.cache.GetSnapshot(productpageID); err == nil {
		t.Fatal("snapshot still cached for a forgotten proxy")
	}

	// It comes back as new when it reconnects.
	c := newSotw(t, conn, productpageID)
	c.request(resourcev3.ClusterType)
	c.expect(resourcev3.ClusterType, pushDeadline)
}

func TestUpdateNeverBlocksWhileTranslationIsSlow(t *testing.T) {
	stub := newStub()
	release := make(chan struct{})
	stub.block = release
	srv, conn := startServer(t, stub)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before the server's cleanup, or Shutdown waits on the stuck push
	c := newSotw(t, conn, productpageID)
	c.request(resourcev3.ClusterType) // no config yet: registers, translates nothing
	eventually(t, pushDeadline, "proxy registered", func() bool { return len(srv.Proxies()) == 1 })

	snaps := make([]*model.Snapshot, 200)
	for i := range snaps {
		snaps[i] = meshSnapshot("127.0.1.3", fmt.Sprintf("127.0.2.%d", i))
	}
	start := time.Now()
	for _, snap := range snaps {
		srv.Update(snap)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("200 Updates took %v while a push was stuck", d)
	}
	unblock()
	c.expect(resourcev3.ClusterType, pushDeadline)

	p, _ := model.ParseProxy(productpageID)
	res, _ := newStub().translate(snaps[len(snaps)-1], p)
	_, want, err := buildSnapshot(res)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, pushDeadline, "latest snapshot pushed", func() bool {
		return statusOf(t, srv, productpageID).Versions[resourcev3.EndpointType] == want[resourcev3.EndpointType]
	})
	// At most: the translation that was stuck, then one pass with the
	// latest for the whole burst.
	time.Sleep(quiet)
	if n := stub.calls.Load(); n > 2 {
		t.Fatalf("%d translations for one burst of updates, want them coalesced into at most 2", n)
	}
}

func TestShutdownEndsStreamsAndServe(t *testing.T) {
	srv := NewServer(Options{Translate: newStub().translate, Logger: testLogger(t)})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), lis) }()
	srv.Update(meshSnapshot("127.0.1.3"))
	cc := dial(t, lis.Addr().String())
	c := newSotw(t, cc, productpageID)
	c.request(resourcev3.ClusterType)
	c.expect(resourcev3.ClusterType, pushDeadline)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve returned %v after Shutdown", err)
	}
	select {
	case <-c.errc:
	case <-time.After(pushDeadline):
		t.Fatal("client stream still open after Shutdown")
	}
}

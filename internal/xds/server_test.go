package xds

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

const (
	productpageID  = "sidecar~127.0.1.2~productpage-v1.default~default.svc.cluster.local"
	reviewsID      = "sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local"
	reviewsCluster = "outbound|9080||reviews.default.svc.cluster.local"
	ratingsCluster = "outbound|9080||ratings.default.svc.cluster.local"
	pushDeadline   = time.Second
	quiet          = 300 * time.Millisecond
)

// startServer serves a Server on an ephemeral loopback port and returns it
// with a client connection to it; both are torn down at test end.
func startServer(t *testing.T, st *stubTranslator, opts ...func(*Options)) (*Server, *grpc.ClientConn) {
	t.Helper()
	o := Options{Translate: st.translate, Logger: testLogger(t)}
	for _, f := range opts {
		f(&o)
	}
	srv := NewServer(o)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), lis) }()
	conn := adstest.Dial(t, lis.Addr().String())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, conn
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// node is the proxy every test here plays; the stub translator ignores its
// labels, so they only need to parse.
func node(id string) *corev3.Node {
	return adstest.Node(id, map[string]string{"app": "x", "version": "v1"})
}

// syncSotw walks the ADS handshake Envoy does (CDS, EDS, LDS, RDS), ACKing
// each response, and returns the responses by type.
func syncSotw(t *testing.T, c *adstest.SotW) map[string]*discoveryv3.DiscoveryResponse {
	t.Helper()
	got := map[string]*discoveryv3.DiscoveryResponse{}
	c.Request(resourcev3.ClusterType)
	got[resourcev3.ClusterType] = c.Expect(resourcev3.ClusterType, pushDeadline)
	c.ACK(got[resourcev3.ClusterType])
	clusters := adstest.ResourceNames(t, got[resourcev3.ClusterType])
	c.Request(resourcev3.EndpointType, clusters...)
	got[resourcev3.EndpointType] = c.Expect(resourcev3.EndpointType, pushDeadline)
	c.ACK(got[resourcev3.EndpointType], clusters...)
	c.Request(resourcev3.ListenerType)
	got[resourcev3.ListenerType] = c.Expect(resourcev3.ListenerType, pushDeadline)
	c.ACK(got[resourcev3.ListenerType])
	c.Request(resourcev3.RouteType, "15001")
	got[resourcev3.RouteType] = c.Expect(resourcev3.RouteType, pushDeadline)
	c.ACK(got[resourcev3.RouteType], "15001")
	return got
}

// syncEDS subscribes to both services' endpoints only and ACKs.
func syncEDS(t *testing.T, c *adstest.SotW) *discoveryv3.DiscoveryResponse {
	t.Helper()
	c.Request(resourcev3.EndpointType, ratingsCluster, reviewsCluster)
	r := c.Expect(resourcev3.EndpointType, pushDeadline)
	c.ACK(r, ratingsCluster, reviewsCluster)
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
	c := adstest.NewSotW(t, conn, node(productpageID))
	got := syncSotw(t, c)

	if n := adstest.ResourceNames(t, got[resourcev3.ClusterType]); !slices.Equal(n, []string{ratingsCluster, reviewsCluster}) {
		t.Fatalf("clusters = %v", n)
	}
	if n := adstest.ResourceNames(t, got[resourcev3.ListenerType]); !slices.Equal(n, []string{"virtualOutbound"}) {
		t.Fatalf("listeners = %v", n)
	}
	eventually(t, pushDeadline, "every type ACKed", func() bool {
		p := statusOf(t, srv, productpageID)
		return len(p.Versions) == 4 && maps.Equal(p.Versions, p.Acked)
	})

	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	eds := c.Expect(resourcev3.EndpointType, pushDeadline)
	if eds.VersionInfo == got[resourcev3.EndpointType].VersionInfo {
		t.Fatalf("EDS re-sent with the same version %s", eds.VersionInfo)
	}
	c.ACK(eds, ratingsCluster, reviewsCluster)
	c.ExpectNone(quiet) // clusters, listeners and routes did not change

	// The same config again changes nothing at all.
	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	c.ExpectNone(quiet)
}

func TestDeltaProxyGetsConfigThenOnlyTheChangedResource(t *testing.T) {
	srv, conn := startServer(t, newStub())
	srv.Update(meshSnapshot("127.0.1.3"))
	c := adstest.NewDelta(t, conn, node(productpageID))

	c.Subscribe(resourcev3.ClusterType) // wildcard
	cds := c.Expect(resourcev3.ClusterType, pushDeadline)
	if n := adstest.DeltaResourceNames(cds); !slices.Equal(n, []string{ratingsCluster, reviewsCluster}) {
		t.Fatalf("clusters = %v", n)
	}
	c.ACK(cds)
	c.Subscribe(resourcev3.EndpointType, ratingsCluster, reviewsCluster)
	eds := c.Expect(resourcev3.EndpointType, pushDeadline)
	if n := adstest.DeltaResourceNames(eds); len(n) != 2 {
		t.Fatalf("endpoints = %v", n)
	}
	c.ACK(eds)
	c.Subscribe(resourcev3.ListenerType)
	c.ACK(c.Expect(resourcev3.ListenerType, pushDeadline))
	c.Subscribe(resourcev3.RouteType, "15001")
	c.ACK(c.Expect(resourcev3.RouteType, pushDeadline))
	c.ExpectNone(quiet)

	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	eds = c.Expect(resourcev3.EndpointType, pushDeadline)
	if n := adstest.DeltaResourceNames(eds); !slices.Equal(n, []string{reviewsCluster}) {
		t.Fatalf("delta update carried %v, want only the changed %s", n, reviewsCluster)
	}
	if len(eds.RemovedResources) != 0 {
		t.Fatalf("removed = %v", eds.RemovedResources)
	}
	c.ACK(eds)
	c.ExpectNone(quiet)
	eventually(t, pushDeadline, "delta ACK recorded", func() bool {
		p := statusOf(t, srv, productpageID)
		return p.Acked[resourcev3.EndpointType] == p.Versions[resourcev3.EndpointType]
	})
}

func TestTranslationErrorKeepsThatProxysPreviousSnapshot(t *testing.T) {
	stub := newStub()
	srv, conn := startServer(t, stub)
	srv.Update(meshSnapshot("127.0.1.3"))
	broken, healthy := adstest.NewSotW(t, conn, node(productpageID)), adstest.NewSotW(t, conn, node(reviewsID))
	before := syncEDS(t, broken)
	syncEDS(t, healthy)
	versionBefore := statusOf(t, srv, productpageID).Versions[resourcev3.EndpointType]

	stub.setFail(productpageID, errStub)
	next := meshSnapshot("127.0.1.3", "127.0.1.4")
	srv.Update(next)
	c := healthy.Expect(resourcev3.EndpointType, pushDeadline)
	healthy.ACK(c, ratingsCluster, reviewsCluster)
	broken.ExpectNone(quiet)

	p := statusOf(t, srv, productpageID)
	if !strings.Contains(p.LastError, errStub.Error()) {
		t.Fatalf("LastError = %q, want it to carry the translation error", p.LastError)
	}
	if p.Versions[resourcev3.EndpointType] != versionBefore {
		t.Fatalf("version moved to %s after a failed translation", p.Versions[resourcev3.EndpointType])
	}
	if snap := srv.snapshotOf(productpageID); snap == nil || snap.versions[resourcev3.EndpointType] != before.VersionInfo {
		t.Fatal("server lost the last good snapshot")
	}

	stub.setFail(productpageID, nil)
	srv.Update(next)
	if r := broken.Expect(resourcev3.EndpointType, pushDeadline); r.VersionInfo != c.VersionInfo {
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
			good := adstest.NewSotW(t, conn, node(reviewsID))
			syncEDS(t, good)

			bad := adstest.NewSotW(t, conn, node(tc.id))
			bad.Request(resourcev3.ClusterType)
			assertRejected(t, bad.ExpectError(pushDeadline), tc.want)
			badDelta := adstest.NewDelta(t, conn, node(tc.id))
			badDelta.Subscribe(resourcev3.ClusterType)
			assertRejected(t, badDelta.ExpectError(pushDeadline), tc.want)

			srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
			good.Expect(resourcev3.EndpointType, pushDeadline)
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
	c := adstest.NewSotW(t, conn, node(productpageID))
	got := syncSotw(t, c)

	stub.setBad(productpageID, true)
	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	c.ExpectNone(quiet)
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
	c := adstest.NewSotW(t, conn, node(productpageID))
	c.Request(resourcev3.ClusterType)
	r := c.Expect(resourcev3.ClusterType, pushDeadline)
	c.NACK(r, "", "cluster outbound|9080||reviews: unsupported thing")

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
	if srv.snapshotOf(productpageID) != nil {
		t.Fatal("snapshot still held for a forgotten proxy")
	}

	// It comes back as new when it reconnects.
	c := adstest.NewSotW(t, conn, node(productpageID))
	c.Request(resourcev3.ClusterType)
	c.Expect(resourcev3.ClusterType, pushDeadline)
}

func TestUpdateNeverBlocksWhileTranslationIsSlow(t *testing.T) {
	stub := newStub()
	release := make(chan struct{})
	stub.block = release
	srv, conn := startServer(t, stub)
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before the server's cleanup, or Shutdown waits on the stuck push
	c := adstest.NewSotW(t, conn, node(productpageID))
	c.Request(resourcev3.ClusterType) // no config yet: registers, translates nothing
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
	c.Expect(resourcev3.ClusterType, pushDeadline)

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
	cc := adstest.Dial(t, lis.Addr().String())
	c := adstest.NewSotW(t, cc, node(productpageID))
	c.Request(resourcev3.ClusterType)
	c.Expect(resourcev3.ClusterType, pushDeadline)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve returned %v after Shutdown", err)
	}
	c.ExpectError(pushDeadline) // any error: the stream only has to end
}

// A connection lasts at most MaxConnectionAge: its stream then ends, and
// the proxy's reconnect counts as a new connect and gets its config again.
func TestConnectionIsClosedAtItsMaximumAge(t *testing.T) {
	var mu sync.Mutex
	var connects int
	srv, conn := startServer(t, newStub(), func(o *Options) {
		o.MaxConnectionAge = 2 * time.Second
		o.OnConnect = func(*corev3.Node) { mu.Lock(); connects++; mu.Unlock() }
	})
	srv.Update(meshSnapshot("127.0.1.3"))
	c := adstest.NewSotW(t, conn, node(productpageID))
	syncSotw(t, c)
	err := c.ExpectError(15 * time.Second)
	if code := status.Code(err); code != codes.Unavailable {
		t.Fatalf("stream ended with %v, want Unavailable (connection closed at its maximum age)", err)
	}
	again := adstest.NewSotW(t, conn, node(productpageID))
	again.Request(resourcev3.ClusterType)
	again.Expect(resourcev3.ClusterType, 5*time.Second) // a new connection first
	eventually(t, 5*time.Second, "the reconnect counted as a connect", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return connects == 2
	})
}

package xdsclient

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// recorder is a Watcher that remembers what it was given and, like the proxy will, subscribes to the
// EDS names of the clusters and the RDS names of the listeners it receives.
type recorder struct {
	client        *Client
	autoSubscribe bool
	reject        func(typeURL string, resources []proto.Message) error

	mu       sync.Mutex
	last     map[string][]proto.Message
	calls    map[string]int
	rejected int
}

func newRecorder(autoSubscribe bool) *recorder {
	return &recorder{autoSubscribe: autoSubscribe, last: map[string][]proto.Message{}, calls: map[string]int{}}
}

func (r *recorder) OnResources(typeURL string, resources []proto.Message) error {
	if r.reject != nil {
		if err := r.reject(typeURL, resources); err != nil {
			r.mu.Lock()
			r.rejected++
			r.mu.Unlock()
			return err
		}
	}
	r.mu.Lock()
	r.last[typeURL] = resources
	r.calls[typeURL]++
	r.mu.Unlock()
	if !r.autoSubscribe {
		return nil
	}
	switch typeURL {
	case ClusterType:
		var names []string
		for _, m := range resources {
			if c := m.(*clusterv3.Cluster); c.GetType() == clusterv3.Cluster_EDS {
				names = append(names, c.GetName())
			}
		}
		r.client.Subscribe(EndpointType, names)
	case ListenerType:
		var names []string
		for _, m := range resources {
			for _, fc := range m.(*listenerv3.Listener).GetFilterChains() {
				for _, f := range fc.GetFilters() {
					var hcm hcmv3.HttpConnectionManager
					if f.GetTypedConfig().UnmarshalTo(&hcm) == nil && hcm.GetRds() != nil {
						names = append(names, hcm.GetRds().GetRouteConfigName())
					}
				}
			}
		}
		r.client.Subscribe(RouteType, names)
	}
	return nil
}

// names lists the resource names last given for typeURL.
func (r *recorder) names(typeURL string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.last[typeURL] {
		out = append(out, ResourceName(m))
	}
	return out
}

func (r *recorder) resources(typeURL string) []proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[typeURL]
}

func (r *recorder) callCount(typeURL string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[typeURL]
}

func (r *recorder) rejectCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rejected
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// newTestClient builds a client for addr with the recorder wired in; tweak may shorten its delays.
func newTestClient(t *testing.T, addr string, w *recorder) *Client {
	c := New(Config{Address: addr, Node: &corev3.Node{Id: testNodeID}, Watcher: w, Logger: testLogger(t)})
	w.client = c
	return c
}

// run starts c.Run and, at test end, cancels it and checks it returns ctx.Err() promptly.
func run(t *testing.T, c *Client) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context was cancelled")
		}
	})
}

func newCache() cachev3.SnapshotCache { return cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil) }

var allTypes = []string{ClusterType, EndpointType, ListenerType, RouteType}

func TestReceivesEveryTypeAndACKsEachResponse(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", newCache())
	srv.setSnapshot(t, mesh{version: "1", clusters: []string{"c1"}}.snapshot(t))
	w := newRecorder(true)
	c := newTestClient(t, srv.addr, w)
	run(t, c)

	want := map[string][]string{ClusterType: {"c1"}, EndpointType: {"c1"}, ListenerType: {"virtualOutbound"}, RouteType: {"r1"}}
	for _, typ := range allTypes {
		waitFor(t, "ACK of "+shortType(typ), func() bool { return srv.findRequest(srv.isACK(typ, "1")) >= 0 })
		if got := w.names(typ); !slices.Equal(got, want[typ]) {
			t.Errorf("%s: watcher got %v, want %v", shortType(typ), got, want[typ])
		}
	}
	if _, ok := w.resources(EndpointType)[0].(*endpointv3.ClusterLoadAssignment); !ok {
		t.Errorf("EDS resource is %T, want *endpointv3.ClusterLoadAssignment", w.resources(EndpointType)[0])
	}
	st := c.Status()
	if !st.Connected {
		t.Error("Status().Connected = false while streaming")
	}
	for _, typ := range allTypes {
		if ts := st.Types[typ]; ts.AckedVersion != "1" || ts.NACKed || ts.LastNACK != nil {
			t.Errorf("Status %s = %+v, want ACKed version 1 and no NACK", shortType(typ), ts)
		}
	}
	if got := st.Types[EndpointType].Subscribed; !slices.Equal(got, []string{"c1"}) {
		t.Errorf("Status EDS subscribed = %v, want [c1]", got)
	}
}

func TestSubscribeInsideOnResourcesSendsEDSRequestAfterCDSACK(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", newCache())
	srv.setSnapshot(t, mesh{version: "1", clusters: []string{"c1", "c2"}}.snapshot(t))
	w := newRecorder(true)
	run(t, newTestClient(t, srv.addr, w))

	waitFor(t, "EDS ACK", func() bool { return srv.findRequest(srv.isACK(EndpointType, "1")) >= 0 })
	cdsACK := srv.findRequest(srv.isACK(ClusterType, "1"))
	edsReq := srv.findRequest(func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == EndpointType })
	if cdsACK < 0 || edsReq < cdsACK {
		t.Fatalf("first EDS request at %d, CDS ACK at %d: EDS must follow the CDS ACK", edsReq, cdsACK)
	}
	reqs := srv.seenRequests()
	if got := reqs[edsReq].GetResourceNames(); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Errorf("EDS request names = %v, want [c1 c2]", got)
	}
	if got := w.names(EndpointType); !slices.Equal(got, []string{"c1", "c2"}) {
		t.Errorf("watcher EDS = %v, want [c1 c2]", got)
	}
	// First requests: CDS then LDS, wildcard; the node only on the very first request of the stream.
	if reqs[0].GetTypeUrl() != ClusterType || len(reqs[0].GetResourceNames()) != 0 || reqs[0].GetNode().GetId() != testNodeID {
		t.Errorf("first request = %v, want wildcard CDS with the node", reqs[0])
	}
	// The server fills the node in for its callbacks; what went over the wire is in srv.wire.
	for i, r := range srv.wireRequests()[1:] {
		if r.GetNode() != nil {
			t.Errorf("request %d (%s) carries the node again", i+1, shortType(r.GetTypeUrl()))
		}
	}
	lds := srv.findRequest(func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == ListenerType })
	if lds < 0 || len(reqs[lds].GetResourceNames()) != 0 {
		t.Errorf("no wildcard LDS request (index %d)", lds)
	}
}

func TestWatcherErrorNACKsWithLastACKedVersionAndReportsItInStatus(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", newCache())
	srv.setSnapshot(t, mesh{version: "1", clusters: []string{"c1"}}.snapshot(t))
	w := newRecorder(true)
	w.reject = func(typeURL string, rs []proto.Message) error {
		for _, m := range rs {
			if typeURL == ClusterType && ResourceName(m) == "bad" {
				return errors.New("cluster bad: rejected by test")
			}
		}
		return nil
	}
	c := newTestClient(t, srv.addr, w)
	run(t, c)
	waitFor(t, "CDS ACK of v1", func() bool { return srv.findRequest(srv.isACK(ClusterType, "1")) >= 0 })

	srv.setSnapshot(t, mesh{version: "2", clusters: []string{"c1", "bad"}}.snapshot(t))
	var nack *discoveryv3.DiscoveryRequest
	waitFor(t, "CDS NACK", func() bool {
		i := srv.findRequest(func(r *discoveryv3.DiscoveryRequest) bool {
			return r.GetTypeUrl() == ClusterType && r.GetErrorDetail() != nil
		})
		if i >= 0 {
			nack = srv.seenRequests()[i]
		}
		return nack != nil
	})
	if nack.GetVersionInfo() != "1" {
		t.Errorf("NACK version_info = %q, want the last ACKed %q", nack.GetVersionInfo(), "1")
	}
	if want := srv.firstNonceOf(ClusterType, "2"); nack.GetResponseNonce() != want {
		t.Errorf("NACK nonce = %q, want %q (the rejected response's)", nack.GetResponseNonce(), want)
	}
	if d := nack.GetErrorDetail(); d.GetCode() != int32(codes.InvalidArgument) || d.GetMessage() != "cluster bad: rejected by test" {
		t.Errorf("NACK error_detail = %v, want code 3 and the watcher's message", d)
	}
	st := c.Status().Types[ClusterType]
	if st.AckedVersion != "1" || !st.NACKed || st.LastNACK == nil ||
		st.LastNACK.Version != "2" || st.LastNACK.Message != "cluster bad: rejected by test" {
		t.Errorf("Status CDS = %+v (NACK %+v), want acked 1, NACKed version 2 with the message", st, st.LastNACK)
	}
	if got := w.names(ClusterType); !slices.Equal(got, []string{"c1"}) {
		t.Errorf("watcher clusters = %v, want the previous [c1]", got)
	}
	// Other types of the same snapshot are unaffected.
	waitFor(t, "LDS ACK of v2", func() bool { return srv.findRequest(srv.isACK(ListenerType, "2")) >= 0 })

	srv.setSnapshot(t, mesh{version: "3", clusters: []string{"c1", "c3"}}.snapshot(t))
	waitFor(t, "CDS ACK of v3", func() bool { return srv.findRequest(srv.isACK(ClusterType, "3")) >= 0 })
	st = c.Status().Types[ClusterType]
	if st.AckedVersion != "3" || st.NACKed || st.LastNACK == nil {
		t.Errorf("Status CDS after a good update = %+v, want acked 3, not NACKed, last NACK kept", st)
	}
}

func TestRejectedVersionResentByServerIsRetriedWithBackoff(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", newCache())
	srv.setSnapshot(t, mesh{version: "1", clusters: []string{"c1"}}.snapshot(t))
	w := newRecorder(true)
	w.reject = func(typeURL string, rs []proto.Message) error {
		if typeURL == ClusterType && len(rs) > 1 {
			return errors.New("too many clusters")
		}
		return nil
	}
	c := newTestClient(t, srv.addr, w)
	c.minNACKRetry, c.maxNACKRetry = 20*time.Millisecond, 80*time.Millisecond
	run(t, c)
	waitFor(t, "CDS ACK of v1", func() bool { return srv.findRequest(srv.isACK(ClusterType, "1")) >= 0 })

	// go-control-plane answers each NACK by resending the same version at once.
	srv.setSnapshot(t, mesh{version: "2", clusters: []string{"c1", "c2"}}.snapshot(t))
	waitFor(t, "first rejection", func() bool { return w.rejectCount() >= 1 })
	time.Sleep(500 * time.Millisecond)
	// Delays 20+40+80+80+... ms: about 8 tries in 500ms; without damping it would be thousands.
	if n := w.rejectCount(); n < 3 || n > 15 {
		t.Errorf("watcher saw the rejected version %d times in 500ms, want a handful (retried with backoff)", n)
	}
}

func TestInvalidResourceIsNACKedWithoutReachingTheWatcher(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", newCache())
	bad := &clusterv3.Cluster{Name: "c-bad", ConnectTimeout: durationpb.New(-time.Second)}
	srv.setSnapshot(t, mesh{version: "1", clusters: []string{"c1"}, extraClusters: []types.Resource{bad}}.snapshot(t))
	w := newRecorder(true)
	c := newTestClient(t, srv.addr, w)
	run(t, c)

	isNACK := func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == ClusterType && r.GetErrorDetail() != nil
	}
	waitFor(t, "CDS NACK", func() bool { return srv.findRequest(isNACK) >= 0 })
	nack := srv.seenRequests()[srv.findRequest(isNACK)]
	if !c.Status().Types[ClusterType].NACKed {
		t.Error("Status does not report the CDS NACK")
	}
	want := `Cluster "c-bad": invalid Cluster.ConnectTimeout: value must be greater than 0s`
	if got := nack.GetErrorDetail().GetMessage(); got != want {
		t.Errorf("NACK message = %q, want %q", got, want)
	}
	if nack.GetVersionInfo() != "" {
		t.Errorf("NACK version_info = %q, want empty (nothing accepted yet)", nack.GetVersionInfo())
	}
	if n := w.callCount(ClusterType); n != 0 {
		t.Errorf("watcher got %d CDS updates, want none from a rejected response", n)
	}
	// The listener type of the same snapshot is accepted on its own.
	waitFor(t, "LDS ACK", func() bool { return srv.findRequest(srv.isACK(ListenerType, "1")) >= 0 })
}

func TestReconnectsAfterServerRestartOnSamePortWithLastACKedVersions(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", newCache())
	srv.setSnapshot(t, mesh{version: "1", clusters: []string{"c1"}}.snapshot(t))
	w := newRecorder(true)
	c := newTestClient(t, srv.addr, w)
	run(t, c)
	for _, typ := range allTypes {
		waitFor(t, "v1 ACK of "+shortType(typ), func() bool { return srv.findRequest(srv.isACK(typ, "1")) >= 0 })
	}

	srv.stop()
	waitFor(t, "client to notice the server is gone", func() bool { return !c.Status().Connected })
	if c.Status().LastStreamError == "" {
		t.Error("Status().LastStreamError is empty after the stream broke")
	}

	srv2 := startServer(t, srv.addr, newCache())
	srv2.setSnapshot(t, mesh{version: "1", clusters: []string{"c1"}}.snapshot(t))
	for _, typ := range allTypes {
		waitFor(t, "ACK of "+shortType(typ)+" on the new server", func() bool { return srv2.findRequest(srv2.isACK(typ, "1")) >= 0 })
	}
	reqs := srv2.seenRequests()
	wantNames := map[string][]string{ClusterType: nil, EndpointType: {"c1"}, ListenerType: nil, RouteType: {"r1"}}
	for i, typ := range requestOrder {
		r := reqs[i]
		if r.GetTypeUrl() != typ || r.GetVersionInfo() != "1" || r.GetResponseNonce() != "" ||
			!slices.Equal(r.GetResourceNames(), wantNames[typ]) {
			t.Errorf("request %d on the new stream = %v, want %s at the last ACKed version 1 with names %v",
				i, r, shortType(typ), wantNames[typ])
		}
	}
	if !c.Status().Connected {
		t.Error("Status().Connected = false after reconnecting")
	}
	// The server resent identical resources; the watcher was not bothered with them.
	for _, typ := range allTypes {
		if n := w.callCount(typ); n != 1 {
			t.Errorf("watcher got %d %s updates, want 1 (the resend was unchanged)", n, shortType(typ))
		}
	}

	srv2.setSnapshot(t, mesh{version: "2", clusters: []string{"c1"}, port: 9090}.snapshot(t))
	waitFor(t, "new endpoints after reconnect", func() bool { return w.callCount(EndpointType) == 2 })
	cla := w.resources(EndpointType)[0].(*endpointv3.ClusterLoadAssignment)
	if port := cla.GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue(); port != 9090 {
		t.Errorf("endpoint port = %d, want 9090", port)
	}
}

func TestSubscribeChangesAreSentAndEmptyListUnsubscribes(t *testing.T) {
	// Not ADS mode: go-control-plane's ADS mode only answers a request naming every resource of the
	// snapshot, and this test subscribes to subsets.
	srv := startServer(t, "127.0.0.1:0", cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil))
	srv.setSnapshot(t, mesh{version: "1", clusters: []string{"c1", "c2"}}.snapshot(t))
	w := newRecorder(false)
	c := newTestClient(t, srv.addr, w)
	run(t, c)
	waitFor(t, "LDS ACK", func() bool { return srv.findRequest(srv.isACK(ListenerType, "1")) >= 0 })
	waitFor(t, "CDS ACK", func() bool { return srv.findRequest(srv.isACK(ClusterType, "1")) >= 0 })
	isEDS := func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == EndpointType }
	if i := srv.findRequest(isEDS); i >= 0 {
		t.Fatalf("EDS requested before any Subscribe: %v", srv.seenRequests()[i])
	}

	withNames := func(names ...string) func(*discoveryv3.DiscoveryRequest) bool {
		return func(r *discoveryv3.DiscoveryRequest) bool {
			return isEDS(r) && slices.Equal(r.GetResourceNames(), names)
		}
	}
	c.Subscribe(EndpointType, []string{"c1"})
	waitFor(t, "EDS [c1] delivered", func() bool { return slices.Equal(w.names(EndpointType), []string{"c1"}) })
	if srv.findRequest(withNames("c1")) < 0 {
		t.Error("server never saw an EDS request for [c1]")
	}

	c.Subscribe(EndpointType, []string{"c2", "c1", "c1", ""})
	waitFor(t, "EDS [c1 c2] delivered", func() bool { return slices.Equal(w.names(EndpointType), []string{"c1", "c2"}) })
	waitFor(t, "EDS ACK naming [c1 c2]", func() bool {
		return srv.findRequest(func(r *discoveryv3.DiscoveryRequest) bool {
			return withNames("c1", "c2")(r) && srv.isACK(EndpointType, "1")(r)
		}) >= 0
	})

	// The same set in another order is no change: nothing is sent.
	before := len(slices.DeleteFunc(srv.seenRequests(), func(r *discoveryv3.DiscoveryRequest) bool { return !isEDS(r) }))
	c.Subscribe(EndpointType, []string{"c2", "c1"})
	c.Subscribe(RouteType, []string{"r1"})
	waitFor(t, "RDS delivered", func() bool { return w.callCount(RouteType) == 1 })
	waitFor(t, "RDS ACK", func() bool { return srv.findRequest(srv.isACK(RouteType, "1")) >= 0 })
	if after := len(slices.DeleteFunc(srv.seenRequests(), func(r *discoveryv3.DiscoveryRequest) bool { return !isEDS(r) })); after != before {
		t.Errorf("re-subscribing the same EDS names sent %d requests", after-before)
	}

	// Withdrawing every name sends an empty (not wildcard) list; later EDS pushes are ignored.
	edsCalls := w.callCount(EndpointType)
	c.Subscribe(EndpointType, nil)
	waitFor(t, "empty EDS request", func() bool { return srv.findRequest(withNames()) >= 0 })
	if st := c.Status().Types[EndpointType]; st.Subscribed != nil {
		t.Errorf("Status EDS subscribed = %v, want none", st.Subscribed)
	}
	srv.setSnapshot(t, mesh{version: "2", clusters: []string{"c1", "c2"}, port: 9090}.snapshot(t))
	waitFor(t, "LDS ACK of v2", func() bool { return srv.findRequest(srv.isACK(ListenerType, "2")) >= 0 })
	waitFor(t, "RDS ACK of v2", func() bool { return srv.findRequest(srv.isACK(RouteType, "2")) >= 0 })
	// go-control-plane answers an empty non-wildcard EDS request with every CLA of the snapshot; the
	// client must ignore them all and ACK.
	waitFor(t, "EDS ACK of v2", func() bool { return srv.findRequest(srv.isACK(EndpointType, "2")) >= 0 })
	if n := w.callCount(EndpointType); n != edsCalls {
		t.Errorf("watcher got %d EDS updates after unsubscribing everything, want none", n-edsCalls)
	}
}

func TestRunKeepsRetryingWhileServerIsDownAndReturnsContextError(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()

	c := newTestClient(t, addr, newRecorder(false))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitFor(t, "a failed attempt", func() bool { return c.Status().LastStreamError != "" })
	if c.Status().Connected {
		t.Error("Status().Connected = true with no server")
	}
	if err := c.Run(ctx); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("second concurrent Run = %v, want an already-running error", err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestRunRejectsIncompleteConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no address", Config{Watcher: newRecorder(false)}},
		{"no watcher", Config{Address: "127.0.0.1:15010"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if err := New(tc.cfg).Run(ctx); err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Run = %v, want a configuration error", err)
			}
		})
	}
}

func TestSubscribeIgnoresWildcardTypes(t *testing.T) {
	c := New(Config{Address: "127.0.0.1:1", Watcher: newRecorder(false), Logger: testLogger(t)})
	c.Subscribe(ClusterType, []string{"c1"})
	c.Subscribe("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", []string{"s"})
	for typ, ts := range c.Status().Types {
		if ts.Subscribed != nil {
			t.Errorf("%s subscribed to %v", shortType(typ), ts.Subscribed)
		}
	}
	if len(c.Status().Types) != 4 {
		t.Errorf("Status has %d types, want 4", len(c.Status().Types))
	}
}

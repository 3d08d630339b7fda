package xdsclient

import (
	"slices"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
)

func isHealth(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == HealthInfoType }

// healthReports are the health requests the server received over the wire, in order.
func (s *xdsServer) healthReports() []*discoveryv3.DiscoveryRequest {
	return slices.DeleteFunc(s.wireRequests(), func(r *discoveryv3.DiscoveryRequest) bool { return !isHealth(r) })
}

// checkHealthReport fails unless r is Istio's HealthInformation request for the given state:
// nothing but the type URL, and error_detail {code 13, message} when unhealthy.
func checkHealthReport(t *testing.T, r *discoveryv3.DiscoveryRequest, healthy bool, message string) {
	t.Helper()
	if r.GetNode() != nil || r.GetVersionInfo() != "" || r.GetResponseNonce() != "" || len(r.GetResourceNames()) != 0 {
		t.Errorf("health report carries more than its type and error: %v", r)
	}
	d := r.GetErrorDetail()
	switch {
	case healthy && d != nil:
		t.Errorf("healthy report has error_detail %v", d)
	case !healthy && (d.GetCode() != int32(codes.Internal) || d.GetMessage() != message):
		t.Errorf("unhealthy report error_detail = %v, want code 13 (INTERNAL) and %q", d, message)
	}
}

// waitAllACKed waits for the server to see the ACK of version of every type: the initial requests
// of the stream are all out by then.
func waitAllACKed(t *testing.T, srv *xdsServer, version string) {
	t.Helper()
	for _, typ := range allTypes {
		waitFor(t, "ACK of "+shortType(typ), func() bool { return srv.findRequest(srv.isACK(typ, version)) >= 0 })
	}
}

func TestHealthReportsGoOutOnChangeOnlyAndAgainOnEachNewStream(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", newCache())
	srv.setSnapshot(t, mesh{version: "1", clusters: []string{"c1"}}.snapshot(t))
	c := newTestClient(t, srv.addr, newRecorder(true))
	run(t, c)
	waitAllACKed(t, srv, "1")
	if got := srv.healthReports(); len(got) != 0 {
		t.Fatalf("health reports %v before any SetHealth, want none", got)
	}

	c.SetHealth(true, "ignored when healthy")
	waitFor(t, "the healthy report", func() bool { return len(srv.healthReports()) == 1 })
	checkHealthReport(t, srv.healthReports()[0], true, "")

	// The same state again is no transition: nothing goes out. The unhealthy report that follows
	// shows the stream goroutine has looked since.
	c.SetHealth(true, "")
	c.SetHealth(false, "HTTP GET http://localhost:9080/ready: status 503, want 200-399")
	c.SetHealth(false, "HTTP GET http://localhost:9080/ready: status 503, want 200-399")
	waitFor(t, "the unhealthy report", func() bool { return len(srv.healthReports()) >= 2 })
	time.Sleep(50 * time.Millisecond)
	got := srv.healthReports()
	if len(got) != 2 {
		t.Fatalf("%d health reports, want 2 (one per change): %v", len(got), got)
	}
	checkHealthReport(t, got[1], false, "HTTP GET http://localhost:9080/ready: status 503, want 200-399")

	// A new control plane on the same address (a restart, or another replica behind a Service)
	// learns the latest state once the new stream's first requests are out.
	srv.stop()
	waitFor(t, "the client to notice", func() bool { return !c.Status().Connected })
	srv2 := startServer(t, srv.addr, newCache())
	srv2.setSnapshot(t, mesh{version: "1", clusters: []string{"c1"}}.snapshot(t))
	waitAllACKed(t, srv2, "1")
	waitFor(t, "the report on the new stream", func() bool { return len(srv2.healthReports()) == 1 })
	wire := srv2.wireRequests()
	if wire[0].GetNode().GetId() != testNodeID || isHealth(wire[0]) {
		t.Errorf("first message on the new stream = %v, want a discovery request with the node", wire[0])
	}
	at := slices.IndexFunc(wire, isHealth)
	lds := slices.IndexFunc(wire, func(r *discoveryv3.DiscoveryRequest) bool { return r.GetTypeUrl() == ListenerType })
	if at < lds {
		t.Errorf("health report at %d, before the stream's LDS request at %d", at, lds)
	}
	checkHealthReport(t, wire[at], false, "HTTP GET http://localhost:9080/ready: status 503, want 200-399")

	c.SetHealth(true, "")
	waitFor(t, "healthy on the new stream", func() bool { return len(srv2.healthReports()) == 2 })
	checkHealthReport(t, srv2.healthReports()[1], true, "")
	if n := len(srv.healthReports()); n != 2 {
		t.Errorf("the stopped server got %d reports, want the 2 from before", n)
	}
}

func TestHealthSetBeforeConnectingFollowsTheFirstRequests(t *testing.T) {
	srv := startServer(t, "127.0.0.1:0", newCache())
	srv.setSnapshot(t, mesh{version: "1", clusters: []string{"c1"}}.snapshot(t))
	c := newTestClient(t, srv.addr, newRecorder(true))
	c.SetHealth(false, "proxy not ready: PRE_INITIALIZING")
	c.SetHealth(true, "")
	run(t, c)
	waitAllACKed(t, srv, "1")
	waitFor(t, "the report", func() bool { return len(srv.healthReports()) == 1 })
	time.Sleep(50 * time.Millisecond)
	wire := srv.wireRequests()
	if isHealth(wire[0]) || wire[0].GetNode().GetId() != testNodeID {
		t.Fatalf("first message = %v, want a discovery request with the node", wire[0])
	}
	if got := srv.healthReports(); len(got) != 1 {
		t.Fatalf("%d reports, want only the latest state: %v", len(got), got)
	}
	checkHealthReport(t, srv.healthReports()[0], true, "")
}

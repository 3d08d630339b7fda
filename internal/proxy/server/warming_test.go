package server

import (
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
)

// TestReadyWaitsForRoutesAndEndpoints: with WaitForWarming the proxy is LIVE only once the RDS and
// EDS its listeners and clusters name have arrived, as Envoy's init manager holds the server until
// listeners and clusters have warmed; once LIVE, a later unwarmed resource does not take it back.
func TestReadyWaitsForRoutesAndEndpoints(t *testing.T) {
	p := newProxy(t, Options{WaitForLDS: true, WaitForCDS: true, WaitForWarming: true})
	p.SetSubscriber(&fakeSubscriber{})
	if err := p.ApplyBootstrap(&bootstrapv3.Bootstrap{}); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, "a", nil)
	mustApply(t, p, ClusterType, msgs(edsCluster("a")))
	mustApply(t, p, ListenerType, msgs(hcmListener(t, "l", "127.0.0.1:0", "r", nil)))
	if state, ok := p.Ready(); ok || state != "PRE_INITIALIZING" {
		t.Fatalf("ready without RDS and EDS: %s", state)
	}
	mustApply(t, p, RouteType, msgs(routeConfig("r", []string{"*"}, routeTo("/", toCluster("a")))))
	if state, ok := p.Ready(); ok {
		t.Fatalf("ready without EDS: %s", state)
	}
	mustApply(t, p, EndpointType, msgs(cla("a", b.addr)))
	if state, ok := p.Ready(); !ok {
		t.Fatalf("not ready with every route and endpoint: %s", state)
	}
	mustApply(t, p, ClusterType, msgs(edsCluster("a"), edsCluster("b")))
	if state, ok := p.Ready(); !ok {
		t.Fatalf("LIVE taken back by a new cluster: %s", state)
	}
}

// TestReadyAfterInitialFetchTimeout: a route that never arrives holds readiness only for the
// initial fetch timeout.
func TestReadyAfterInitialFetchTimeout(t *testing.T) {
	p := newProxy(t, Options{WaitForLDS: true, WaitForCDS: true, WaitForWarming: true, InitialFetchTimeout: 200 * time.Millisecond})
	p.SetSubscriber(&fakeSubscriber{})
	if err := p.ApplyBootstrap(&bootstrapv3.Bootstrap{}); err != nil {
		t.Fatal(err)
	}
	mustApply(t, p, ClusterType, nil)
	mustApply(t, p, ListenerType, msgs(hcmListener(t, "l", "127.0.0.1:0", "missing", nil)))
	if _, ok := p.Ready(); ok {
		t.Fatal("ready at once without the route")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := p.Ready(); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("still not ready long after the initial fetch timeout")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

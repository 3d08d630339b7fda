package xds

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"

	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

// A proxy's health reports (Istio's HealthInformation requests) reach
// OnHealth after its connect hook, in the order sent, on SotW and delta
// streams alike; they are never answered.
func TestHealthReportsReachTheHookAndAreNotAnswered(t *testing.T) {
	var mu sync.Mutex
	var events []string
	record := func(e string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}
	srv, conn := startServer(t, newStub(), func(o *Options) {
		o.OnConnect = func(n *corev3.Node) { record("connect") }
		o.OnHealth = func(id string, healthy bool, message string) {
			record(fmt.Sprintf("%s healthy=%v %q", id, healthy, message))
		}
	})
	srv.Update(meshSnapshot("127.0.1.3"))
	unhealthy := &rpcstatus.Status{Code: 13, Message: "Get \"http://localhost:9080/ready\": connection refused"}
	want := []string{"connect",
		productpageID + ` healthy=true ""`,
		productpageID + ` healthy=false "Get \"http://localhost:9080/ready\": connection refused"`}
	expect := func(what string) {
		t.Helper()
		eventually(t, pushDeadline, what, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.Equal(events, want)
		})
		mu.Lock()
		events = nil
		mu.Unlock()
	}

	sotw := adstest.NewSotW(t, conn, node(productpageID))
	sotw.Request(resourcev3.ClusterType)
	sotw.ACK(sotw.Expect(resourcev3.ClusterType, pushDeadline))
	sotw.Send(&discoveryv3.DiscoveryRequest{TypeUrl: HealthInfoType})
	sotw.Send(&discoveryv3.DiscoveryRequest{TypeUrl: HealthInfoType, ErrorDetail: unhealthy})
	expect("SotW reports")
	sotw.ExpectNone(quiet)

	delta := adstest.NewDelta(t, conn, node(productpageID))
	delta.Subscribe(resourcev3.ClusterType)
	delta.ACK(delta.Expect(resourcev3.ClusterType, pushDeadline))
	delta.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: HealthInfoType})
	delta.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: HealthInfoType, ErrorDetail: unhealthy})
	expect("delta reports")
	delta.ExpectNone(quiet)
}

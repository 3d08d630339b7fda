package xds

import (
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

// With room for one response in flight, a second proxy's config waits until
// the first proxy ACKs what it was sent, then arrives.
func TestPushThrottleHoldsResponsesUntilInFlightOnesAreACKed(t *testing.T) {
	srv, conn := startServer(t, newStub(), func(o *Options) { o.MaxInFlight, o.UnthrottledBytes = 1, -1 })
	srv.Update(meshSnapshot("127.0.1.3"))

	first := adstest.NewSotW(t, conn, node(productpageID))
	first.Request(resourcev3.ClusterType)
	cds := first.Expect(resourcev3.ClusterType, 5*time.Second)

	second := adstest.NewSotW(t, conn, node(reviewsID))
	second.Request(resourcev3.ClusterType)
	// A slot is held for inFlightHold without an ACK; well within that,
	// nothing reaches the second proxy.
	second.ExpectNone(inFlightHold / 4)

	first.ACK(cds)
	second.Expect(resourcev3.ClusterType, inFlightHold/2)
}

// A proxy that never ACKs does not hold the slot for ever.
func TestPushThrottleSlotOfASilentProxyExpires(t *testing.T) {
	srv, conn := startServer(t, newStub(), func(o *Options) { o.MaxInFlight, o.UnthrottledBytes = 1, -1 })
	srv.Update(meshSnapshot("127.0.1.3"))

	silent := adstest.NewSotW(t, conn, node(productpageID))
	silent.Request(resourcev3.ClusterType)
	silent.Expect(resourcev3.ClusterType, 5*time.Second)

	next := adstest.NewSotW(t, conn, node(reviewsID))
	next.Request(resourcev3.ClusterType)
	next.Expect(resourcev3.ClusterType, inFlightHold+5*time.Second)
}

// Delta ACKs carry no node after the first request; they still return the
// slot (else every response would wait out inFlightHold).
func TestPushThrottleSlotReturnsOnDeltaACKWithoutNode(t *testing.T) {
	srv, conn := startServer(t, newStub(), func(o *Options) { o.MaxInFlight, o.UnthrottledBytes = 1, -1 })
	srv.Update(meshSnapshot("127.0.1.3"))

	first := adstest.NewDelta(t, conn, node(productpageID))
	first.Subscribe(resourcev3.ClusterType)
	cds := first.Expect(resourcev3.ClusterType, 5*time.Second)

	second := adstest.NewDelta(t, conn, node(reviewsID))
	second.Subscribe(resourcev3.ClusterType)
	second.ExpectNone(inFlightHold / 4)

	first.ACK(cds) // the first request carried the node; this one does not
	second.Expect(resourcev3.ClusterType, inFlightHold/2)
}

// The bound is across streams and types: with two slots, two proxies'
// unanswered clusters hold them both, and a third proxy's listeners wait
// until one of them ACKs.
func TestPushThrottleBoundsResponsesAcrossStreams(t *testing.T) {
	srv, conn := startServer(t, newStub(), func(o *Options) { o.MaxInFlight, o.UnthrottledBytes = 2, -1 })
	srv.Update(meshSnapshot("127.0.1.3"))
	a := adstest.NewSotW(t, conn, node(productpageID))
	a.Request(resourcev3.ClusterType)
	cds := a.Expect(resourcev3.ClusterType, 5*time.Second)
	b := adstest.NewSotW(t, conn, node(reviewsID))
	b.Request(resourcev3.ClusterType)
	b.Expect(resourcev3.ClusterType, 5*time.Second)

	c := adstest.NewSotW(t, conn, node("sidecar~127.0.1.6~details-v1.default~default.svc.cluster.local"))
	c.Request(resourcev3.ListenerType)
	c.ExpectNone(inFlightHold / 4)
	a.ACK(cds)
	c.Expect(resourcev3.ListenerType, inFlightHold/2)
}

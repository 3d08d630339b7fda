package adstest

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
)

// Delta is a raw incremental ADS stream (DeltaAggregatedResources). Its
// methods must be called from the test's goroutine, as they may call
// t.Fatal.
type Delta struct {
	t      testing.TB
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	node   *corev3.Node // sent on the first request only, then nil
	*receiver[*discoveryv3.DeltaDiscoveryResponse]
}

// NewDelta opens a delta stream on conn that identifies itself as node.
// Nothing is sent until the first request. The stream is cancelled when the
// test ends.
func NewDelta(t testing.TB, conn *grpc.ClientConn, node *corev3.Node) *Delta {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		cancel()
		t.Fatalf("open delta ADS stream: %v", err)
	}
	return &Delta{t: t, stream: stream, node: node, receiver: startReceiver(t, ctx, cancel, stream.Recv)}
}

// Send sends req as it is, except that the first request on the stream
// carries the node and later ones do not, as Envoy does: the server must
// remember who is on the stream.
func (c *Delta) Send(req *discoveryv3.DeltaDiscoveryRequest) {
	c.t.Helper()
	if c.node != nil {
		req.Node, c.node = c.node, nil
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send %s: %v", req.TypeUrl, err)
	}
}

// Subscribe adds names to the subscription for typeURL; with none given,
// the first subscription to a type is a wildcard.
func (c *Delta) Subscribe(typeURL string, names ...string) {
	c.t.Helper()
	c.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names})
}

// ACK accepts r. Delta ACKs name only the nonce; the subscription stands.
func (c *Delta) ACK(r *discoveryv3.DeltaDiscoveryResponse) {
	c.t.Helper()
	c.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
}

// Expect returns the next response and fails the test unless it arrives
// within the deadline and is for typeURL.
func (c *Delta) Expect(typeURL string, within time.Duration) *discoveryv3.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.resps:
		if r.TypeUrl != typeURL {
			c.t.Fatalf("got delta response for %s, want %s", r.TypeUrl, typeURL)
		}
		return r
	case err := <-c.errc:
		c.t.Fatalf("stream ended waiting for %s: %v", typeURL, err)
	case <-time.After(within):
		c.t.Fatalf("no delta %s response within %v", typeURL, within)
	}
	return nil
}

// ExpectNone fails the test if any response arrives, or the stream ends,
// within the given time.
func (c *Delta) ExpectNone(within time.Duration) {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected delta %s response with %d resources", r.TypeUrl, len(r.Resources))
	case err := <-c.errc:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(within):
	}
}

// ExpectError returns the error that ends the stream, and fails the test if
// a response arrives first or the stream is still open after within.
func (c *Delta) ExpectError(within time.Duration) error {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("got delta %s response, want the stream to fail", r.TypeUrl)
	case err := <-c.errc:
		return err
	case <-time.After(within):
		c.t.Fatalf("delta stream still open after %v", within)
	}
	return nil
}

package adstest

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// SotW is a raw state-of-the-world ADS stream
// (StreamAggregatedResources). Its methods must be called from the test's
// goroutine, as they may call t.Fatal.
type SotW struct {
	t      testing.TB
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
	*receiver[*discoveryv3.DiscoveryResponse]
}

// NewSotW opens a state-of-the-world stream on conn that identifies itself
// as node. Nothing is sent until the first request. The stream is cancelled
// when the test ends.
func NewSotW(t testing.TB, conn *grpc.ClientConn, node *corev3.Node) *SotW {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		cancel()
		t.Fatalf("open ADS stream: %v", err)
	}
	return &SotW{t: t, stream: stream, node: node, receiver: startReceiver(t, ctx, cancel, stream.Recv)}
}

// Send sends req as it is, except that it sets the node: every request
// carries it, as Envoy's do by default, and the server must cope either way.
func (c *SotW) Send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	req.Node = c.node
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send %s: %v", req.TypeUrl, err)
	}
}

// Request subscribes to typeURL: to names, or to every resource of the type
// (a wildcard) when none are given.
func (c *SotW) Request(typeURL string, names ...string) {
	c.t.Helper()
	c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names})
}

// ACK accepts r, staying subscribed to names. State-of-the-world requests
// restate the whole subscription, so names must repeat what was requested.
func (c *SotW) ACK(r *discoveryv3.DiscoveryResponse, names ...string) {
	c.t.Helper()
	c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ResourceNames: names})
}

// NACK rejects r with msg, reporting lastGood as the version still applied,
// as Envoy does.
func (c *SotW) NACK(r *discoveryv3.DiscoveryResponse, lastGood, msg string) {
	c.t.Helper()
	c.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: lastGood, ResponseNonce: r.Nonce,
		ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: msg}})
}

// Expect returns the next response and fails the test unless it arrives
// within the deadline and is for typeURL.
func (c *SotW) Expect(typeURL string, within time.Duration) *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	select {
	case r := <-c.resps:
		if r.TypeUrl != typeURL {
			c.t.Fatalf("got response for %s, want %s", r.TypeUrl, typeURL)
		}
		return r
	case err := <-c.errc:
		c.t.Fatalf("stream ended waiting for %s: %v", typeURL, err)
	case <-time.After(within):
		c.t.Fatalf("no %s response within %v", typeURL, within)
	}
	return nil
}

// ExpectACKingOthers returns the next response for typeURL, ACKing (and
// logging) responses of other types that come first: for tests about one
// type whose pushes may follow others still in flight.
func (c *SotW) ExpectACKingOthers(typeURL string, within time.Duration) *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case r := <-c.resps:
			if r.TypeUrl == typeURL {
				return r
			}
			c.t.Logf("ACKing a %s response (version %s) while waiting for %s", r.TypeUrl, r.VersionInfo, typeURL)
			c.ACK(r)
		case err := <-c.errc:
			c.t.Fatalf("stream ended waiting for %s: %v", typeURL, err)
		case <-deadline:
			c.t.Fatalf("no %s response within %v", typeURL, within)
		}
	}
}

// ExpectNone fails the test if any response arrives, or the stream ends,
// within the given time.
func (c *SotW) ExpectNone(within time.Duration) {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected %s response version %s", r.TypeUrl, r.VersionInfo)
	case err := <-c.errc:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(within):
	}
}

// ExpectError returns the error that ends the stream, and fails the test if
// a response arrives first or the stream is still open after within.
func (c *SotW) ExpectError(within time.Duration) error {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("got %s response, want the stream to fail", r.TypeUrl)
	case err := <-c.errc:
		return err
	case <-time.After(within):
		c.t.Fatalf("stream still open after %v", within)
	}
	return nil
}

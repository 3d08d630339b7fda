package xds

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	productpageID = "sidecar~127.0.1.2~productpage-v1.default~default.svc.cluster.local"
	reviewsID     = "sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local"
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
	conn := dial(t, lis.Addr().String())
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

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func node(id string) *corev3.Node {
	md, _ := structpb.NewStruct(map[string]any{
		"INTERCEPTION_MODE": "NONE",
		"LABELS":            map[string]any{"app": "x", "version": "v1"},
	})
	return &corev3.Node{Id: id, Metadata: md}
}

// sotwClient is a raw state-of-the-world ADS stream.
type sotwClient struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node
	resps  chan *discoveryv3.DiscoveryResponse
	errc   chan error
}

func newSotw(t *testing.T, conn *grpc.ClientConn, id string) *sotwClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sotwClient{t: t, stream: stream, node: node(id), resps: make(chan *discoveryv3.DiscoveryResponse, 16), errc: make(chan error, 1)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				c.errc <- err
				return
			}
			c.resps <- r
		}
	}()
	return c
}

func (c *sotwClient) send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	req.Node = c.node // every request carries it; the server must cope either way
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send %s: %v", req.TypeUrl, err)
	}
}

func (c *sotwClient) request(typeURL string, names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names})
}

func (c *sotwClient) ack(r *discoveryv3.DiscoveryResponse, names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ResourceNames: names})
}

func (c *sotwClient) nack(r *discoveryv3.DiscoveryResponse, lastGood, msg string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: lastGood, ResponseNonce: r.Nonce, ErrorDetail: &status.Status{Code: 3, Message: msg}})
}

func (c *sotwClient) expect(typeURL string, within time.Duration) *discoveryv3.DiscoveryResponse {
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

func (c *sotwClient) expectNone(within time.Duration) {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected %s response version %s", r.TypeUrl, r.VersionInfo)
	case err := <-c.errc:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(within):
	}
}

func (c *sotwClient) expectError(within time.Duration) error {
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

// deltaClient is a raw incremental ADS stream.
type deltaClient struct {
	t      *testing.T
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	resps  chan *discoveryv3.DeltaDiscoveryResponse
	errc   chan error
	first  bool
	node   *corev3.Node
}

func newDelta(t *testing.T, conn *grpc.ClientConn, id string) *deltaClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &deltaClient{t: t, stream: stream, node: node(id), first: true, resps: make(chan *discoveryv3.DeltaDiscoveryResponse, 16), errc: make(chan error, 1)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				c.errc <- err
				return
			}
			c.resps <- r
		}
	}()
	return c
}

func (c *deltaClient) send(req *discoveryv3.DeltaDiscoveryRequest) {
	c.t.Helper()
	if c.first { // as Envoy does: only the first request names the node
		req.Node, c.first = c.node, false
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send %s: %v", req.TypeUrl, err)
	}
}

func (c *deltaClient) subscribe(typeURL string, names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names})
}

func (c *deltaClient) ack(r *discoveryv3.DeltaDiscoveryResponse) {
	c.t.Helper()
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
}

func (c *deltaClient) expect(typeURL string, within time.Duration) *discoveryv3.DeltaDiscoveryResponse {
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

func (c *deltaClient) expectNone(within time.Duration) {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected delta %s response with %d resources", r.TypeUrl, len(r.Resources))
	case err := <-c.errc:
		c.t.Fatalf("stream ended: %v", err)
	case <-time.After(within):
	}
}

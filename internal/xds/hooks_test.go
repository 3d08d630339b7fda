package xds

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

// OnConnect fires once for a node's first stream, not for a second one of
// the same node; OnDisconnect once its last stream has closed.
func TestConnectHooksFireOncePerNode(t *testing.T) {
	connected := make(chan string, 4)
	disconnected := make(chan string, 4)
	srv, conn := startServer(t, newStub(), func(o *Options) {
		o.OnConnect = func(n *corev3.Node) { connected <- n.GetId() }
		o.OnDisconnect = func(id string) { disconnected <- id }
	})
	srv.Update(meshSnapshot("127.0.1.3"))
	for range 2 {
		c := adstest.NewSotW(t, conn, node(productpageID))
		c.Request(resourcev3.ClusterType)
		c.Expect(resourcev3.ClusterType, pushDeadline)
	}
	select {
	case id := <-connected:
		if id != productpageID {
			t.Fatalf("OnConnect(%q), want %q", id, productpageID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnConnect not called")
	}
	if len(connected) != 0 || len(disconnected) != 0 {
		t.Fatalf("after two streams of one node: %d more connects, %d disconnects; want 0, 0", len(connected), len(disconnected))
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-disconnected:
		if id != productpageID {
			t.Fatalf("OnDisconnect(%q), want %q", id, productpageID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnDisconnect not called after the streams closed")
	}
	// Both streams are closed now (OnDisconnect came after the last), so
	// a second call would already have been made.
	if len(disconnected) != 0 {
		t.Fatalf("OnDisconnect called %d more times", len(disconnected))
	}
}

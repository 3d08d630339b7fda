package ui

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/xds"
)

// The console's own loop: it scrapes the connected proxies on the mesh's
// status port on its own, and the graph it serves shows their traffic.
func TestConsoleScrapesProxiesOnTheMeshStatusPort(t *testing.T) {
	fakes, port := startFakeProxies(t, "reviews-v1")
	reviews := fakes[0]
	c, err := Listen(ConsoleOptions{
		Address: "127.0.0.1:0",
		Proxies: proxyList{{ID: reviews.id, Streams: 1}},
		Scrape:  ScraperOptions{Interval: 50 * time.Millisecond, Timeout: 5 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	mesh := model.DefaultMesh()
	mesh.DefaultConfig = &meshv1alpha1.ProxyConfig{StatusPort: int32(port)}
	c.Accept(model.NewSnapshot(&model.Config{Mesh: mesh}))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	l := httpLabels("destination", "productpage-v1", "reviews-v1", "200", "-", "mutual_tls")
	url := "http://" + c.Addr().String() + "/api/graph"
	deadline := time.Now().Add(20 * time.Second)
	for {
		reviews.requests(l, 10, 3)
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		var g Graph
		err = json.NewDecoder(resp.Body).Decode(&g)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(g.Edges) == 1 && g.Edges[0].ID == "default/productpage-v1>default/reviews-v1" && g.Edges[0].RPS > 0 {
			if len(g.Nodes) != 2 {
				t.Errorf("nodes: %+v, want both ends of the edge", g.Nodes)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no productpage→reviews edge within 20 s: %+v", g)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var _ ProxySource = (*xds.Server)(nil)

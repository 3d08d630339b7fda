package ui_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/examples/demo"
	"github.com/trellis-mesh/trellis/internal/localmesh"
	"github.com/trellis-mesh/trellis/internal/testenv"
	"github.com/trellis-mesh/trellis/internal/ui"
)

// reviewsToV2 sends every reviews request to v2, which calls ratings, so
// the demo's traffic crosses gateway → productpage → reviews → ratings.
const reviewsToV2 = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
`

// The whole path a user takes: `trellis up`'s mesh with real proxies and
// demo apps, real requests through the gateway, and the console's graph
// built from what the proxies report on their 15020 metrics endpoints.
func TestConsoleGraphShowsTheDemoTrafficFromProxyMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole local mesh")
	}
	testenv.LockDemoAddresses(t)
	dir := t.TempDir()
	if err := demo.WriteConfig(dir); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "reviews.yaml"), reviewsToV2)

	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	appsDone := make(chan error, 1)
	go func() { appsDone <- demo.RunApps(ctx, log) }()
	ready := make(chan localmesh.Mesh, 1)
	meshDone := make(chan error, 1)
	go func() {
		meshDone <- localmesh.Run(ctx, localmesh.Options{
			ConfigDir:  dir,
			XDSAddress: "127.0.0.1:0",
			UIAddress:  "127.0.0.1:0",
			Logger:     log,
			Ready:      func(m localmesh.Mesh) { ready <- m },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-meshDone; err != nil {
			t.Errorf("mesh stopped with: %v", err)
		}
		if err := <-appsDone; err != nil {
			t.Errorf("demo apps stopped with: %v", err)
		}
	})
	var mesh localmesh.Mesh
	select {
	case mesh = <-ready:
	case err := <-meshDone:
		t.Fatalf("mesh did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("mesh not ready within 60 s")
	}
	if mesh.UIAddress == "" {
		t.Fatal("the mesh reports no console address")
	}
	console := "http://" + mesh.UIAddress

	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	get := func() error {
		resp, err := client.Get(demo.GatewayURL)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil
	}
	if err := get(); err != nil {
		t.Fatalf("front page: %v", err)
	}
	skipWithoutProxyMetrics(t, mesh)

	want := []string{
		"istio-system/istio-ingressgateway>default/productpage-v1",
		"default/productpage-v1>default/reviews-v2",
		"default/reviews-v2>default/ratings-v1",
	}
	deadline := time.Now().Add(60 * time.Second)
	var g ui.Graph
	for {
		for range 5 {
			if err := get(); err != nil {
				t.Fatalf("front page: %v", err)
			}
		}
		getJSON(t, console+"/api/graph", &g)
		if missing := missingEdges(g, want); len(missing) == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("edges %v not in the graph within 60 s of traffic; edges: %+v", missing, g.Edges)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, e := range g.Edges {
		if e.Protocol != "http" || e.ErrorRate != 0 || e.P99Ms <= 0 {
			t.Errorf("edge %s: %+v, want http with no errors and a p99", e.ID, e)
		}
	}
}

func missingEdges(g ui.Graph, want []string) []string {
	rps := map[string]float64{}
	for _, e := range g.Edges {
		rps[e.ID] = e.RPS
	}
	var missing []string
	for _, id := range want {
		if rps[id] <= 0 {
			missing = append(missing, id)
		}
	}
	return missing
}

// skipWithoutProxyMetrics skips the test when the proxies serve no Istio
// metrics on the status port: the console can only draw what they report.
func skipWithoutProxyMetrics(t *testing.T, mesh localmesh.Mesh) {
	t.Helper()
	ip := ""
	for _, p := range mesh.Proxies {
		if strings.HasPrefix(p.Name, "productpage") {
			ip = p.IP
		}
	}
	url := "http://" + net.JoinHostPort(ip, "15020") + ui.MetricsPath
	resp, err := http.Get(url)
	if errors.Is(err, syscall.ECONNREFUSED) {
		t.Skipf("trellis-proxy serves nothing on %s (connection refused): the proxies' Istio metrics endpoint is not merged yet", url)
	}
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		t.Skipf("GET %s: 404: the proxies' Istio metrics endpoint is not merged yet", url)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
}

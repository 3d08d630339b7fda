package ui_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/ui"
)

func TestSyntheticTopologyServesAGraphOfTheAskedSize(t *testing.T) {
	srv := httptest.NewServer(ui.New(ui.SyntheticTopology(500, 2000, 1).Options()))
	t.Cleanup(srv.Close)

	var g ui.Graph
	getJSON(t, srv.URL+"/api/graph", &g)
	if len(g.Edges) != 2000 {
		t.Errorf("edges: got %d, want 2000", len(g.Edges))
	}
	if len(g.Nodes) != 550 { // 500 v1 workloads and a v2 for every tenth service
		t.Errorf("nodes: got %d, want 550", len(g.Nodes))
	}
	ids := map[string]bool{}
	for _, n := range g.Nodes {
		ids[n.ID] = true
	}
	for _, e := range g.Edges {
		if !ids[e.Source] || !ids[e.Target] {
			t.Fatalf("edge %s names a node the graph lacks", e.ID)
		}
	}
	var services []ui.Service
	getJSON(t, srv.URL+"/api/services", &services)
	if len(services) != 500 {
		t.Errorf("services: got %d, want 500", len(services))
	}

	// The same seed gives the same graph.
	again := httptest.NewServer(ui.New(ui.SyntheticTopology(500, 2000, 1).Options()))
	t.Cleanup(again.Close)
	var g2 ui.Graph
	getJSON(t, again.URL+"/api/graph", &g2)
	a, _ := json.Marshal(g.Edges)
	b, _ := json.Marshal(g2.Edges)
	if string(a) != string(b) {
		t.Error("two synthetic topologies of the same seed differ")
	}
}

func TestSyntheticTopologyTakesWeightsThatAddUpTo100(t *testing.T) {
	srv := httptest.NewServer(ui.New(ui.SyntheticTopology(20, 10, 1).Options()))
	t.Cleanup(srv.Close)
	url := srv.URL + "/api/virtualservices/ns-0/svc-0/http/0/weights"
	if code, body := put(t, url, `{"weights": [50, 40]}`); code != http.StatusUnprocessableEntity || !strings.Contains(body, "100") {
		t.Errorf("weights adding to 90: got %d %s, want 422 naming 100", code, body)
	}
	if code, body := put(t, url, `{"weights": [50, 50]}`); code != http.StatusOK {
		t.Fatalf("weights 50/50: got %d %s", code, body)
	}
	var view ui.ServiceView
	getJSON(t, srv.URL+"/api/services/ns-0/svc-0", &view)
	if got := view.VirtualServices[0].HTTP[0].Route[1].Weight; got != 50 {
		t.Errorf("v2's weight after the change: got %d, want 50", got)
	}
}

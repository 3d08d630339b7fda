package ui

import (
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/model"
)

// DefaultWindow is the span the graph's rates are computed over.
const DefaultWindow = 30 * time.Second

// graphCache keeps the encoded graph for one (snapshot, traffic) pair, so
// that many browsers polling every 2 s cost one encoding per scrape.
type graphCache struct {
	mu      sync.Mutex
	snap    *model.Snapshot
	traffic *Traffic
	body    []byte
}

func (s *Server) graphJSON(now time.Time) []byte {
	snap := s.opts.Config.Current().Snapshot
	var traffic *Traffic
	if s.opts.Traffic != nil {
		traffic = s.opts.Traffic.Traffic()
	}
	c := &s.graph
	c.mu.Lock()
	defer c.mu.Unlock()
	if traffic != nil && c.body != nil && c.snap == snap && c.traffic == traffic {
		return c.body
	}
	body, err := json.Marshal(buildGraph(snap, traffic, now))
	if err != nil {
		// Only plain strings and finite numbers go in; cannot happen.
		panic("ui: encoding the graph: " + err.Error())
	}
	c.snap, c.traffic, c.body = snap, traffic, body
	return body
}

// buildGraph merges the workloads known from config with the measured
// traffic. Nodes are sorted by id, edges by id.
func buildGraph(snap *model.Snapshot, traffic *Traffic, now time.Time) *Graph {
	g := &Graph{GeneratedAt: now.UTC().Format(time.RFC3339), WindowSeconds: DefaultWindow.Seconds(), Nodes: []Node{}, Edges: []Edge{}}
	seen := map[string]bool{}
	for _, n := range configNodes(snap) {
		seen[n.ID] = true
		g.Nodes = append(g.Nodes, n)
	}
	if traffic != nil {
		g.GeneratedAt = traffic.At.UTC().Format(time.RFC3339)
		if traffic.WindowSeconds > 0 {
			g.WindowSeconds = traffic.WindowSeconds
		}
		for _, n := range traffic.Nodes {
			if !seen[n.ID] {
				seen[n.ID] = true
				g.Nodes = append(g.Nodes, n)
			}
		}
		g.Edges = append(g.Edges, traffic.Edges...)
	}
	sort.Slice(g.Nodes, func(i, j int) bool { return g.Nodes[i].ID < g.Nodes[j].ID })
	sort.Slice(g.Edges, func(i, j int) bool { return g.Edges[i].ID < g.Edges[j].ID })
	return g
}

// configNodes is one node per WorkloadEntry, labelled as Istio labels its
// metrics: app and version from the workload's labels, service the first
// service (by host) that selects it.
func configNodes(snap *model.Snapshot) []Node {
	if snap == nil {
		return nil
	}
	serviceOf := map[*model.WorkloadEntry]string{}
	for _, svc := range snap.Services { // sorted by host
		for _, ep := range svc.Endpoints {
			if ep.Workload != nil && serviceOf[ep.Workload] == "" {
				serviceOf[ep.Workload] = svc.Hostname
			}
		}
	}
	out := make([]Node, 0, len(snap.Config.WorkloadEntries))
	for _, we := range snap.Config.WorkloadEntries {
		labels := we.Spec.GetLabels()
		out = append(out, Node{
			ID:        workloadID(we.Namespace, we.Name),
			Namespace: we.Namespace,
			Workload:  we.Name,
			App:       appLabel(labels),
			Version:   versionLabel(labels),
			Service:   serviceOf[we],
			Kind:      KindWorkload,
		})
	}
	return out
}

// appLabel and versionLabel read Istio's canonical-service labels in
// Istio's order of precedence.
func appLabel(l map[string]string) string {
	for _, k := range []string{"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"} {
		if v := l[k]; v != "" {
			return v
		}
	}
	return ""
}

func versionLabel(l map[string]string) string {
	for _, k := range []string{"service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"} {
		if v := l[k]; v != "" {
			return v
		}
	}
	return ""
}

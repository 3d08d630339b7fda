package hcm

import (
	"log/slog"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// BenchmarkLocalReply measures the connection manager's own per-request work, without a network
// round trip: routing, the request's record and a local reply (no route).
func BenchmarkLocalReply(b *testing.B) {
	tbl, err := route.NewTable("r", []*route.VirtualHost{{Name: "vh", Domains: []string{"svc"}, Routes: []*route.Route{
		{Match: route.Match{Kind: route.PathPrefix, Path: "/"}, Action: route.Action{Cluster: "c"}},
	}}})
	if err != nil {
		b.Fatal(err)
	}
	var snap atomic.Pointer[Snapshot]
	snap.Store(&Snapshot{Routes: map[string]*route.Table{"r": tbl}, Clusters: map[string]*upstream.Cluster{}})
	h := New(&xdsconfig.HTTPConnectionManager{StatPrefix: "b", RDSName: "r", ServerName: "envoy"}, &snap, stats.NewStore(), slog.New(slog.DiscardHandler))
	req := httptest.NewRequest("GET", "http://other/x", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 404 {
			b.Fatalf("status %d", rec.Code)
		}
	}
}

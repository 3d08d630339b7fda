package hcm

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

func TestRequestPathIsOriginFormForAbsoluteAndOriginRequests(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"GET /a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n", "/a/b?c=d"},
		{"GET http://reviews:9080/a%2Fb?c HTTP/1.1\r\nHost: reviews:9080\r\n\r\n", "/a%2Fb?c"},
		{"GET http://reviews:9080 HTTP/1.1\r\nHost: reviews:9080\r\n\r\n", "/"},
		{"CONNECT reviews:443 HTTP/1.1\r\nHost: reviews:443\r\n\r\n", ""},
	} {
		r, err := http.ReadRequest(bufioReader(tc.raw))
		if err != nil {
			t.Fatal(err)
		}
		if got := requestPath(r); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.raw, got, tc.want)
		}
	}
}

func TestHopByHopHeadersAreRemoved(t *testing.T) {
	h := http.Header{
		"Connection":        {"close, X-Private"},
		"X-Private":         {"x"},
		"Keep-Alive":        {"timeout=5"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"websocket"},
		"Te":                {"trailers"},
		"X-Public":          {"y"},
	}
	removeHopByHop(h)
	if len(h) != 2 || h.Get("X-Public") != "y" || h.Get("Te") != "trailers" {
		t.Fatalf("left %v", h)
	}
	h = http.Header{"Te": {"gzip"}}
	removeHopByHop(h)
	if len(h) != 0 {
		t.Fatalf("te: gzip kept: %v", h)
	}
}

func TestRequestIDsAreUUIDv4(t *testing.T) {
	id := newRequestID()
	if len(id) != 36 || id[14] != '4' || !strings.ContainsAny(id[19:20], "89ab") || strings.Count(id, "-") != 4 {
		t.Fatalf("bad id %q", id)
	}
	if newRequestID() == id {
		t.Fatal("ids repeat")
	}
}

func TestStripPort(t *testing.T) {
	h := &Handler{cfg: &xdsconfig.HTTPConnectionManager{StripPortIfMatches: 8080}}
	for in, want := range map[string]string{"a:8080": "a", "a:9090": "a:9090", "[::1]:8080": "[::1]", "a": "a"} {
		if got := h.authority(in); got != want {
			t.Errorf("%s: got %s want %s", in, got, want)
		}
	}
}

// BenchmarkProxyRequest measures one proxied request end to end through a recorder downstream and
// a real loopback upstream with a warm keep-alive pool.
func BenchmarkProxyRequest(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer backend.Close()
	store := stats.NewStore()
	cl := upstream.New(upstream.Config{Name: "c", Endpoints: []upstream.Endpoint{{Address: strings.TrimPrefix(backend.URL, "http://"), Healthy: true}}}, store)
	defer cl.Close()
	tbl, err := route.NewTable("r", []*route.VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: []*route.Route{
		{Match: route.Match{Kind: route.PathPrefix, Path: "/"}, Action: route.Action{Cluster: "c", Timeout: 0}},
	}}})
	if err != nil {
		b.Fatal(err)
	}
	var snap atomic.Pointer[Snapshot]
	snap.Store(&Snapshot{Routes: map[string]*route.Table{"r": tbl}, Clusters: map[string]*upstream.Cluster{"c": cl}})
	h := New(&xdsconfig.HTTPConnectionManager{StatPrefix: "b", RDSName: "r", ServerName: "envoy", GenerateRequestID: true}, &snap, store, slog.New(slog.DiscardHandler))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("GET", "http://svc/x", nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("status %d", rec.Code)
		}
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

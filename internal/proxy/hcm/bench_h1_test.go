package hcm

import (
	"bufio"
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/istiostats"
	"github.com/trellis-mesh/trellis/internal/proxy/h1"
	"github.com/trellis-mesh/trellis/internal/proxy/istiometrics"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// serveH1 serves h on a loopback h1.Server for the benchmark's life.
func serveH1(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &h1.Server{Handler: h}
	go func() { _ = s.Serve(ln) }()
	b.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String()
}

// BenchmarkProxyRequestH1 is the path trellis-proxy serves: an h1.Server in front of the connection
// manager (Envoy's default 15 s route timeout, request IDs on), an h1.Transport upstream to an
// h1.Server backend answering 1 KiB, and a client on one keep-alive connection that allocates
// nothing. Allocations are the proxy's plus the backend server's (none per request).
func BenchmarkProxyRequestH1(b *testing.B) { benchProxyH1(b, "c", nil, nil) }

// BenchmarkProxyRequestH1IstioStats is the same path through a client sidecar's istio.stats
// filter: the metadata exchange header set on the request, the server's read from the response and
// stripped, and the request recorded in Istio's standard metrics.
func BenchmarkProxyRequestH1IstioStats(b *testing.B) {
	self := istiometrics.IdentityFromNode("sidecar~127.0.1.2~client-v1.default~default.svc.cluster.local", nil)
	peer := istiometrics.ExchangeValue(&istiometrics.Identity{Name: "server-v1", Namespace: "default", Workload: "server-v1", App: "server", Version: "v1"})
	cfg, err := istiostats.Parse(nil)
	if err != nil {
		b.Fatal(err)
	}
	tel := istiometrics.New(self)
	benchProxyH1(b, "outbound|80||svc.default.svc.cluster.local", []filters.Spec{{Name: istiostats.Name, Config: cfg}},
		http.Header{istiometrics.HeaderPeerMetadata: {peer}}, filters.WithTelemetry(tel))
	if n := len(tel.HTTP.Keys()); n != 1 {
		b.Fatalf("%d series recorded, want 1", n)
	}
}

func benchProxyH1(b *testing.B, cluster string, chain []filters.Spec, backendHeaders http.Header, opts ...filters.EnvOption) {
	body := bytes.Repeat([]byte("k"), 1024)
	ct, cl := []string{"text/plain"}, []string{"1024"}
	backend := serveH1(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = ct
		w.Header()["Content-Length"] = cl
		for k, v := range backendHeaders {
			w.Header()[k] = v
		}
		_, _ = w.Write(body)
	}))
	store := stats.NewStore()
	c := upstream.New(upstream.Config{Name: cluster, Endpoints: []upstream.Endpoint{{Address: backend, Healthy: true}}}, store)
	b.Cleanup(c.Close)
	tbl, err := route.NewTable("r", []*route.VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: []*route.Route{
		{Match: route.Match{Kind: route.PathPrefix, Path: "/"}, Action: route.Action{Cluster: cluster, Timeout: xdsconfig.DefaultRouteTimeout}},
	}}})
	if err != nil {
		b.Fatal(err)
	}
	var snap atomic.Pointer[Snapshot]
	snap.Store(&Snapshot{Routes: map[string]*route.Table{"r": tbl}, Clusters: map[string]*upstream.Cluster{cluster: c}})
	h := New(&xdsconfig.HTTPConnectionManager{StatPrefix: "b", RDSName: "r", ServerName: "envoy", GenerateRequestID: true, HTTPFilters: chain},
		&snap, store, slog.New(slog.DiscardHandler), WithFilterEnv(opts...))
	conn, err := net.Dial("tcp", serveH1(b, h))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReaderSize(conn, 16<<10)
	req := []byte("GET /bench HTTP/1.1\r\nHost: svc\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	do := func() {
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		n := -1
		for first := true; ; first = false {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if first && !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
				b.Fatalf("status line %q", line)
			}
			if len(line) <= 2 {
				break
			}
			if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
				n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
			}
		}
		if n != len(body) {
			b.Fatalf("content length %d", n)
		}
		if _, err := br.Discard(n); err != nil {
			b.Fatal(err)
		}
	}
	do()
	b.ReportAllocs()
	for b.Loop() {
		do()
	}
}

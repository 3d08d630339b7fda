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

	"github.com/trellis-mesh/trellis/internal/proxy/h1"
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
func BenchmarkProxyRequestH1(b *testing.B) {
	body := bytes.Repeat([]byte("k"), 1024)
	ct, cl := []string{"text/plain"}, []string{"1024"}
	backend := serveH1(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = ct
		w.Header()["Content-Length"] = cl
		_, _ = w.Write(body)
	}))
	store := stats.NewStore()
	c := upstream.New(upstream.Config{Name: "c", Endpoints: []upstream.Endpoint{{Address: backend, Healthy: true}}}, store)
	b.Cleanup(c.Close)
	tbl, err := route.NewTable("r", []*route.VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: []*route.Route{
		{Match: route.Match{Kind: route.PathPrefix, Path: "/"}, Action: route.Action{Cluster: "c", Timeout: xdsconfig.DefaultRouteTimeout}},
	}}})
	if err != nil {
		b.Fatal(err)
	}
	var snap atomic.Pointer[Snapshot]
	snap.Store(&Snapshot{Routes: map[string]*route.Table{"r": tbl}, Clusters: map[string]*upstream.Cluster{"c": c}})
	h := New(&xdsconfig.HTTPConnectionManager{StatPrefix: "b", RDSName: "r", ServerName: "envoy", GenerateRequestID: true}, &snap, store, slog.New(slog.DiscardHandler))
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

package controlplane

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy"
	"github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/testenv/tracetest"
)

// Two hops of real traffic: a client app → productpage's sidecar (outbound, 127.0.3.2) → reviews'
// sidecar (inbound, 127.0.3.3:9080) → the reviews app, with a real control plane serving both
// proxies from a config dir, and the spans going to an in-test collector through each proxy's
// outbound cluster for the collector's ServiceEntry.
const (
	clientIP = "127.0.3.2"
	serverIP = "127.0.3.3"
)

type twoHopMesh struct {
	dir       string
	clientURL *url.URL // productpage's sidecar as the app's HTTP proxy
	mu        sync.Mutex
	seen      []http.Header // what the reviews app received
}

func (m *twoHopMesh) last() http.Header {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.seen) == 0 {
		return nil
	}
	return m.seen[len(m.seen)-1]
}

// send makes one request from productpage to reviews through the mesh.
func (m *twoHopMesh) send(t *testing.T, target string, hdr map[string]string) int {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(m.clientURL)}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest("GET", target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

const reviewsURL = "http://reviews.default.svc.cluster.local:9080/reviews/1"

func startTwoHopMesh(t *testing.T, mesh, collector string) *twoHopMesh {
	t.Helper()
	m := &twoHopMesh{dir: t.TempDir()}
	app, err := net.Listen("tcp", serverIP+":0")
	if err != nil {
		t.Skipf("cannot bind %s (loopback /8 needed): %v", serverIP, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.seen = append(m.seen, r.Header.Clone())
		m.mu.Unlock()
		_, _ = io.WriteString(w, "reviews")
	})}
	go func() { _ = srv.Serve(app) }()
	t.Cleanup(func() { _ = srv.Close() })

	writeFile(t, filepath.Join(m.dir, "mesh.yaml"), mesh)
	writeFile(t, filepath.Join(m.dir, "mesh-services.yaml"), fmt.Sprintf(`%s---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage-v1, namespace: default}
spec: {address: %s, labels: {app: productpage, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: %s, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: default}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 0.0.0.0:%d
---
%s`, services, clientIP, serverIP, app.Addr().(*net.TCPAddr).Port, collector))
	// The mesh runs Istio's defaults (auto mTLS), so the proxies get their
	// certificates from the control plane's CA, as sidecars do.
	cp := startWithCA(t, m.dir, t.TempDir())
	xds := cp.XDSAddr

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, n := range []struct{ ip, name string }{{clientIP, "productpage-v1"}, {serverIP, "reviews-v1"}} {
		wg.Go(func() {
			err := proxy.Run(ctx, proxy.Options{
				XDSAddress:    xds.String(),
				NodeID:        "sidecar~" + n.ip + "~" + n.name + ".default~default.svc.cluster.local",
				Metadata:      map[string]string{"INTERCEPTION_MODE": "NONE"},
				AdminAddress:  n.ip + ":0",
				DrainDuration: 100 * time.Millisecond,
				Identity: &identity.Config{
					CAAddress: cp.CA.Addr.String(), RootCert: cp.CA.RootPEM(),
					Token:     func() (string, error) { return cp.CA.MintBootstrapToken("default", "default", time.Hour) },
					Namespace: "default", ServiceAccount: "default",
				},
				Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
			})
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("proxy %s: %v", n.name, err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	m.clientURL = &url.URL{Scheme: "http", Host: clientIP + ":15001"}
	deadline := time.Now().Add(20 * time.Second)
	for m.send(t, reviewsURL, nil) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("the mesh did not serve productpage → reviews within 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return m
}

const sampleAll = `---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{randomSamplingPercentage: %v}]
`

func collectorEntry(host string, port int, portName, protocol string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: collector, namespace: observability}
spec:
  hosts: [%s]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {number: 4317, name: %s, protocol: %s}
  endpoints:
  - {address: 127.0.0.1, ports: {%s: %d}}
`, host, portName, protocol, portName, port)
}

func byTrace(spans []tracetest.Span, trace string) []tracetest.Span {
	var out []tracetest.Span
	for _, s := range spans {
		if s.TraceID == trace {
			out = append(out, s)
		}
	}
	return out
}

func kindOf(spans []tracetest.Span, kind string) *tracetest.Span {
	for i := range spans {
		if spans[i].Kind == kind {
			return &spans[i]
		}
	}
	return nil
}

func TestTracePropagatesAcrossTwoHopsToAnOTLPCollector(t *testing.T) {
	otlp := tracetest.OTLP(t, "")
	_, port, _ := net.SplitHostPort(otlp.Addr)
	logPath := filepath.Join(t.TempDir(), "access.log")
	mesh := fmt.Sprintf(`extensionProviders:
- name: otel
  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317}
defaultProviders: {tracing: [otel]}
accessLogFile: %s
accessLogEncoding: JSON
`, logPath)
	var p int
	fmt.Sscan(port, &p)
	collector := collectorEntry("otel-collector.observability.svc.cluster.local", p, "grpc-otlp", "GRPC")
	m := startTwoHopMesh(t, mesh, collector+fmt.Sprintf(sampleAll, 100))

	// A new trace: the client sidecar's CLIENT span is the root, the server sidecar's SERVER span
	// its child, and the app sees the server span as its parent.
	tp := ""
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasSuffix(tp, "-01") { // the Telemetry may land a moment after the first route
		if time.Now().After(deadline) {
			t.Fatalf("reviews never got a sampled traceparent; last %q", tp)
		}
		if code := m.send(t, reviewsURL, nil); code != 200 {
			t.Fatalf("status %d", code)
		}
		tp = m.last().Get("Traceparent")
	}
	trace := strings.Split(tp, "-")[1]
	spans := otlp.WaitSpans(t, 15*time.Second, "client and server spans of trace "+trace, func(s []tracetest.Span) bool {
		return len(byTrace(s, trace)) == 2
	})
	client, server := kindOf(byTrace(spans, trace), "CLIENT"), kindOf(byTrace(spans, trace), "SERVER")
	if client == nil || server == nil {
		t.Fatalf("spans %+v: want one CLIENT and one SERVER", byTrace(spans, trace))
	}
	if client.ParentID != "" || server.ParentID != client.ID {
		t.Errorf("client %+v, server %+v: want the server span's parent to be the client span", client, server)
	}
	if want := "00-" + trace + "-" + server.ID + "-01"; tp != want {
		t.Errorf("the app got traceparent %q, want %q", tp, want)
	}
	if client.Service != "productpage.default" || server.Service != "reviews.default" ||
		client.Tags["upstream_cluster"] != "outbound|9080||reviews.default.svc.cluster.local" ||
		server.Tags["upstream_cluster"] != "inbound|9080||" || client.Tags["istio.canonical_service"] != "productpage" ||
		client.Tags["guid:x-request-id"] == "" || client.Tags["guid:x-request-id"] != server.Tags["guid:x-request-id"] {
		t.Errorf("client %+v\nserver %+v", client, server)
	}

	// An incoming sampled trace is continued by both hops.
	const incoming = "00-5e1f0e2ab3c44d55a66b77c88d99e0f1-1a2b3c4d5e6f7081-01"
	m.send(t, reviewsURL, map[string]string{"traceparent": incoming})
	spans = otlp.WaitSpans(t, 15*time.Second, "the continued trace", func(s []tracetest.Span) bool {
		return len(byTrace(s, "5e1f0e2ab3c44d55a66b77c88d99e0f1")) == 2
	})
	if c := kindOf(byTrace(spans, "5e1f0e2ab3c44d55a66b77c88d99e0f1"), "CLIENT"); c == nil || c.ParentID != "1a2b3c4d5e6f7081" {
		t.Errorf("client span %+v: want the incoming span as parent", c)
	}

	// The access log (MeshConfig accessLogFile, JSON) has the request and a failure's flags.
	if code := m.send(t, "http://nope.default.svc.cluster.local:9080/", nil); code != http.StatusNotFound {
		t.Fatalf("unknown host answered %d, want 404", code)
	}
	waitLogLine(t, logPath, func(l map[string]any) bool {
		return l["response_code"] == float64(200) && l["upstream_cluster"] == "outbound|9080||reviews.default.svc.cluster.local" && l["response_flags"] == "-"
	})
	waitLogLine(t, logPath, func(l map[string]any) bool {
		return l["response_code"] == float64(404) && l["response_flags"] == "NR" && l["response_code_details"] == "route_not_found"
	})

	// Sampling 0: new traces are not sampled, and nothing is exported for them. The marker
	// request's spans come after any span queued before them, so their arrival proves none was.
	writeFile(t, filepath.Join(m.dir, "mesh-services.yaml"), strings.Replace(mustRead(t, filepath.Join(m.dir, "mesh-services.yaml")), "randomSamplingPercentage: 100", "randomSamplingPercentage: 0", 1))
	deadline = time.Now().Add(10 * time.Second)
	for !strings.HasSuffix(m.last().Get("Traceparent"), "-00") {
		if time.Now().After(deadline) {
			t.Fatalf("sampling 0 never applied; traceparent %q", m.last().Get("Traceparent"))
		}
		m.send(t, reviewsURL, nil)
	}
	// Flush what was sampled before the change: once a first marker's spans are in, every span
	// queued before them is too (each proxy exports in order).
	markerSpans := func(trace string) []tracetest.Span {
		m.send(t, reviewsURL, map[string]string{"traceparent": "00-" + trace + "-00000000000000ef-01"})
		return otlp.WaitSpans(t, 15*time.Second, "the marker trace "+trace, func(s []tracetest.Span) bool {
			return len(byTrace(s, trace)) == 2
		})
	}
	before := len(markerSpans("0000000000000000000000000000beef"))
	for range 20 {
		m.send(t, reviewsURL, nil)
	}
	spans = markerSpans("0000000000000000000000000000cafe")
	var unsampled int
	for _, s := range spans[before:] {
		if s.TraceID != "0000000000000000000000000000cafe" {
			unsampled++
		}
	}
	if unsampled != 0 {
		t.Errorf("%d spans exported at sampling 0", unsampled)
	}
}

func TestB3PropagatesAcrossTwoHopsToAZipkinCollector(t *testing.T) {
	zipkin := tracetest.Zipkin(t, "")
	_, port, _ := net.SplitHostPort(zipkin.Addr)
	var p int
	fmt.Sscan(port, &p)
	mesh := `extensionProviders:
- name: zipkin
  zipkin: {service: zipkin.observability.svc.cluster.local, port: 4317}
defaultProviders: {tracing: [zipkin]}
`
	m := startTwoHopMesh(t, mesh, collectorEntry("zipkin.observability.svc.cluster.local", p, "http-zipkin", "HTTP")+fmt.Sprintf(sampleAll, 100))
	deadline := time.Now().Add(10 * time.Second)
	for m.last().Get("X-B3-Sampled") != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("reviews never got sampled B3 headers: %v", m.last())
		}
		m.send(t, reviewsURL, nil)
	}
	h := m.last()
	trace := h.Get("X-B3-Traceid")
	if len(trace) != 32 {
		t.Errorf("trace ID %q: Istio's Zipkin provider makes 128-bit IDs", trace)
	}
	spans := zipkin.WaitSpans(t, 15*time.Second, "client and server spans", func(s []tracetest.Span) bool { return len(byTrace(s, trace)) == 2 })
	client, server := kindOf(byTrace(spans, trace), "CLIENT"), kindOf(byTrace(spans, trace), "SERVER")
	if client == nil || server == nil || server.ParentID != client.ID || h.Get("X-B3-Spanid") != server.ID || h.Get("X-B3-Parentspanid") != client.ID {
		t.Fatalf("client %+v server %+v app headers %v: want server child of client, app seeing the server span", client, server, h)
	}

	// An incoming sampled B3 context is continued; an incoming "not sampled" is respected.
	m.send(t, reviewsURL, map[string]string{"x-b3-traceid": "463ac35c9f6413ad48485a3953bb6124", "x-b3-spanid": "0020000000000001", "x-b3-sampled": "1"})
	zipkin.WaitSpans(t, 15*time.Second, "the continued trace", func(s []tracetest.Span) bool {
		return len(byTrace(s, "463ac35c9f6413ad48485a3953bb6124")) == 2
	})
	m.send(t, reviewsURL, map[string]string{"b3": "0"})
	if got := m.last().Get("X-B3-Sampled"); got != "0" {
		t.Errorf("b3: 0 reached the app as x-b3-sampled %q", got)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitLogLine polls a JSON access log until a line satisfies pred.
func waitLogLine(t *testing.T, path string, pred func(map[string]any) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				var l map[string]any
				if json.Unmarshal(sc.Bytes(), &l) == nil && pred(l) {
					f.Close()
					return
				}
			}
			f.Close()
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(path)
			t.Fatalf("no matching line in %s after 10s:\n%s", path, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

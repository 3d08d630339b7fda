package hcm

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// testProxy is a connection manager built from Envoy YAML, served on a real loopback socket
// (HTTP/1.1 and h2c), in front of real upstream servers.
type testProxy struct {
	url   string
	addr  string
	store *stats.Store

	mu    sync.Mutex
	infos []streaminfo.Info
}

// hcmYAML is the part of an HttpConnectionManager after stat_prefix: route_config and http_filters,
// indented by six spaces.
func newTestProxy(t *testing.T, hcmYAML string, clusters map[string][]string, edits ...func(*xdsconfig.HTTPConnectionManager)) *testProxy {
	t.Helper()
	src := `
name: test
address: {socket_address: {address: 127.0.0.1, port_value: 1}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: test
` + hcmYAML
	js, err := yaml.YAMLToJSON([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var l listenerv3.Listener
	if err := protojson.Unmarshal(js, &l); err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	cfg, err := xdsconfig.ParseListener(&l)
	if err != nil {
		t.Fatal(err)
	}
	for _, edit := range edits {
		edit(cfg.FilterChains[0].HTTP)
	}
	p := &testProxy{store: stats.NewStore()}
	cfg.FilterChains[0].HTTP.OnComplete = func(i *streaminfo.Info) {
		c := *i
		c.RequestHeaders, c.ResponseHeaders = nil, nil
		p.mu.Lock()
		p.infos = append(p.infos, c)
		p.mu.Unlock()
	}
	snap := &Snapshot{Clusters: map[string]*upstream.Cluster{}}
	for name, addrs := range clusters {
		var eps []upstream.Endpoint
		for _, a := range addrs {
			eps = append(eps, upstream.Endpoint{Address: a, Healthy: true})
		}
		cl := upstream.New(upstream.Config{Name: name, Endpoints: eps, Protocol: upstream.UseDownstream, ConnectTimeout: 5 * time.Second}, p.store)
		t.Cleanup(cl.Close)
		snap.Clusters[name] = cl
	}
	var ptr atomic.Pointer[Snapshot]
	ptr.Store(snap)
	h := New(cfg.FilterChains[0].HTTP, &ptr, p.store, slog.New(slog.DiscardHandler))
	srv := httptest.NewUnstartedServer(h)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protos
	srv.Start()
	t.Cleanup(srv.Close)
	p.url, p.addr = srv.URL, strings.TrimPrefix(srv.URL, "http://")
	return p
}

// lastInfo waits for the record of the n-th request (1-based) to be handed to OnComplete.
func (p *testProxy) info(t *testing.T, n int) streaminfo.Info {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		if len(p.infos) >= n {
			i := p.infos[n-1]
			p.mu.Unlock()
			return i
		}
		p.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no record for request %d", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *testProxy) counter(name string) uint64 { return p.store.Counter(name).Value() }

// upstreamServer starts a real upstream; it answers with h, or with its name.
func upstreamServer(t *testing.T, name string, h http.HandlerFunc) string {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, name)
		}
	}
	srv := httptest.NewUnstartedServer(h)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protos
	srv.Start()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// send makes one request through the proxy and returns the status, body and headers.
func send(t *testing.T, method, url string, body io.Reader, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(c.CloseIdleConnections)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// routeTo is an inline route_config with one virtual host for "*" and the given routes (YAML list
// items indented for it), and the router as the only filter unless filters come first.
func routeConfig(routes string) string {
	return `
      route_config:
        virtual_hosts:
        - name: vh
          domains: ["*"]
          routes:
` + routes
}

const routerOnly = `
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`

func withFilters(filters string) string {
	return `
      http_filters:
` + filters + `
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`
}

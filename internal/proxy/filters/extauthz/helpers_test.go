package extauthz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/proxy/server"
)

// app is the upstream application: it answers with the headers and body it received, as JSON.
type app struct {
	addr string
	mu   sync.Mutex
	hits int
}

type appSaw struct {
	Headers http.Header `json:"headers"`
	Body    string      `json:"body"`
}

func newApp(t *testing.T) *app {
	t.Helper()
	a := &app{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.hits++
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(appSaw{Headers: r.Header, Body: string(b)})
	}))
	t.Cleanup(srv.Close)
	a.addr = srv.Listener.Addr().String()
	return a
}

func (a *app) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hits
}

// proxyConfig is what the test proxy runs: one listener whose HCM has ext_authz (Filter, the
// typed_config's YAML body at its indent) then the router, a route for /public with PublicRoute
// as its ext_authz per-route config (if any), and clusters app and authz.
type proxyConfig struct {
	Filter      string
	PublicRoute string
	RouteExtra  string
	App, Authz  string
	AuthzH2     bool
}

const listenerTmpl = `
name: main
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: main
      route_config:
        virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
{{- if .PublicRoute }}
          - match: {prefix: /public}
            route: {cluster: app}
            typed_per_filter_config:
              envoy.filters.http.ext_authz:
                "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
{{ .PublicRoute }}
{{- end }}
          - match: {prefix: /}
            route: {cluster: app}
{{ .RouteExtra }}
      http_filters:
      - name: envoy.filters.http.ext_authz
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
{{ .Filter }}
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`

const clusterTmpl = `
name: {{ .Name }}
type: STATIC
connect_timeout: 1s
{{- if .H2 }}
http2_protocol_options: {}
{{- end }}
load_assignment:
  cluster_name: {{ .Name }}
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: {{ .Host }}, port_value: {{ .Port }}}}}}]}]
`

func fromYAML[T proto.Message](t testing.TB, m T, src string, data any) T {
	t.Helper()
	var buf bytes.Buffer
	if err := template.Must(template.New("").Parse(src)).Execute(&buf, data); err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(buf.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	return m
}

func cluster(t *testing.T, name, addr string, h2 bool) *clusterv3.Cluster {
	host, port, _ := net.SplitHostPort(addr)
	return fromYAML(t, &clusterv3.Cluster{}, clusterTmpl, map[string]any{"Name": name, "Host": host, "Port": port, "H2": h2})
}

// startProxy runs a proxy with cfg and returns it and its listener's URL.
func startProxy(t *testing.T, cfg proxyConfig) (*server.Proxy, string) {
	t.Helper()
	p := server.New(server.Options{Logger: slog.New(slog.DiscardHandler), DrainTimeout: time.Second})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	if err := p.OnResources(server.ClusterType, []proto.Message{cluster(t, "app", cfg.App, false), cluster(t, "authz", cfg.Authz, cfg.AuthzH2)}); err != nil {
		t.Fatal(err)
	}
	l := fromYAML(t, &listenerv3.Listener{}, listenerTmpl, cfg)
	if err := p.OnResources(server.ListenerType, []proto.Message{l}); err != nil {
		t.Fatal(err)
	}
	for _, li := range p.Listeners() {
		if li.Name == "main" {
			return p, "http://" + li.Address
		}
	}
	t.Fatal("listener main is not running")
	return nil, ""
}

// indent puts YAML at the typed_config body's indent.
func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = pad + l
	}
	return strings.Join(lines, "\n")
}

func filterYAML(s string) string { return indent(10, s) }

type result struct {
	status int
	header http.Header
	body   string
	saw    appSaw // what the app received, when it answered
}

func send(t *testing.T, method, url string, hdr map[string]string, body string) result {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(b, &r.saw)
	}
	return r
}

// counter reads one stat of the proxy.
func counter(t *testing.T, p *server.Proxy, name string) uint64 {
	t.Helper()
	for _, s := range p.Stats().Snapshot(nil) {
		if s.Name == name {
			return uint64(s.Value)
		}
	}
	return 0
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func itoa(n int) string { return strconv.Itoa(n) }

package rbac_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/proxy/server"
)

// yamlTo fills m from a YAML template (Envoy's JSON mapping), with {{q .X}} quoting.
func yamlTo[T proto.Message](t testing.TB, m T, src string, data any) T {
	t.Helper()
	tmpl := template.Must(template.New("").Funcs(template.FuncMap{"q": strconv.Quote}).Parse(src))
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, data); err != nil {
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

// rbacHTTP is an http_filters entry for an RBAC filter with the given config body (YAML at the
// config's indent of 8 spaces).
func rbacHTTP(body string) string {
	return `
      - name: envoy.filters.http.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
` + indent(body, "          ")
}

func indent(s, prefix string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(strings.Trim(s, "\n"), "\n") {
		b.WriteString(prefix + line + "\n")
	}
	return b.String()
}

// backend is the upstream: it answers 200 "ok" and counts requests.
type backend struct {
	addr string
	hits atomic.Int64
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	b := &backend{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	b.addr = srv.Listener.Addr().String()
	return b
}

func newProxy(t *testing.T) *server.Proxy {
	t.Helper()
	p := server.New(server.Options{Logger: slog.New(slog.DiscardHandler), DrainTimeout: 2 * time.Second})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	return p
}

func apply(t *testing.T, p *server.Proxy, typeURL string, m proto.Message) {
	t.Helper()
	if err := p.OnResources(typeURL, []proto.Message{m}); err != nil {
		t.Fatal(err)
	}
}

func staticCluster(t *testing.T, name, addr string) *clusterv3.Cluster {
	host, port, _ := net.SplitHostPort(addr)
	return yamlTo(t, &clusterv3.Cluster{}, `
name: `+name+`
type: STATIC
connect_timeout: 1s
load_assignment:
  cluster_name: `+name+`
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: `+host+`, port_value: `+port+`}}}}]}]
`, nil)
}

func listenerAddr(t *testing.T, p *server.Proxy, name string) string {
	t.Helper()
	for _, l := range p.Listeners() {
		if l.Name == name {
			return l.Address
		}
	}
	t.Fatalf("listener %q not running", name)
	return ""
}

// freePort is a loopback port nothing listens on now, for configs that must name their own port.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// httpProxy is a proxy with an HTTP listener "in" on 127.0.0.1:port (0: any) whose HCM runs
// filters (http_filters entries before the router) with hcmExtra fields and routes (YAML list at
// 10 spaces; "" routes everything to the backend), and logs %RESPONSE_CODE_DETAILS% to a file.
type httpProxy struct {
	p       *server.Proxy
	addr    string
	backend *backend
	log     string
	client  *http.Client
	sent    int // requests sent: the access log has a line for each, in order
}

func newHTTPProxy(t *testing.T, port, hcmExtra, filters, routes string, tlsContext string, data any) *httpProxy {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "access.log") // made first: removed after the proxy stops
	hp := &httpProxy{p: newProxy(t), backend: newBackend(t), log: logPath}
	apply(t, hp.p, server.ClusterType, staticCluster(t, "backend", hp.backend.addr))
	if port == "" {
		port = "0"
	}
	if routes == "" {
		routes = "          - {match: {prefix: /}, route: {cluster: backend}}"
	}
	if tlsContext != "" {
		tlsContext = `
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
` + indent(tlsContext, "      ")
	}
	src := `
name: in
address: {socket_address: {address: 127.0.0.1, port_value: ` + port + `}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: in
` + indent(hcmExtra, "      ") + `
      access_log:
      - name: envoy.access_loggers.file
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
          path: ` + strconv.Quote(hp.log) + `
          log_format: {text_format_source: {inline_string: "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"}}
      route_config:
        virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
` + routes + `
      http_filters:` + filters + `
      - {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
` + tlsContext
	apply(t, hp.p, server.ListenerType, yamlTo(t, &listenerv3.Listener{}, src, data))
	hp.addr = listenerAddr(t, hp.p, "in")
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hp.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return hp
}

// request is one request a test sends, and what it expects.
type request struct {
	method, path, host string
	headers            map[string]string
	status             int
	details            string // the access log's %RESPONSE_CODE_DETAILS%, when set
}

func (r request) String() string {
	return fmt.Sprintf("%s %s host=%q %v", r.method, r.path, r.host, r.headers)
}

// send sends r and checks the status, the body of a denial and, when r.details is set, the
// access log line the request left.
func (hp *httpProxy) send(t *testing.T, r request) {
	t.Helper()
	hp.sendWith(t, hp.client, "http", r)
}

func (hp *httpProxy) sendWith(t *testing.T, c *http.Client, scheme string, r request) {
	t.Helper()
	method := r.method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, scheme+"://"+hp.addr+r.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.host != "" {
		req.Host = r.host
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	hp.sent++
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%v: %v", r, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != r.status {
		t.Errorf("%v: status %d %q, want %d", r, resp.StatusCode, body, r.status)
		return
	}
	if r.status == http.StatusForbidden && string(body) != "RBAC: access denied" {
		t.Errorf("%v: denial body %q", r, body)
	}
	if r.details == "" {
		return
	}
	want := fmt.Sprintf("%d - %s", r.status, r.details)
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines := hp.logLines(t)
		if len(lines) >= hp.sent {
			if got := lines[hp.sent-1]; got != want {
				t.Errorf("%v: access log %q, want %q", r, got, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%v: no access log line", r)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (hp *httpProxy) logLines(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(hp.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// mtlsClient presents cert (none when nil) and trusts roots.
func mtlsClient(t *testing.T, roots *x509.CertPool, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{ServerName: "proxy.example.com", RootCAs: roots}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func msgs(ms ...proto.Message) []proto.Message { return ms }

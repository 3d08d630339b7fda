package server

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// frontProxyBootstrap is Envoy's examples/front-proxy shape: listener → inline route_config → cluster
// → endpoint.
const frontProxyBootstrap = `
node: {id: front-proxy, cluster: front}
static_resources:
  listeners:
  - name: listener_0
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          codec_type: AUTO
          stat_prefix: ingress_http
          route_config:
            name: local_route
            response_headers_to_add: [{header: {key: x-front, value: "yes"}}]
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: {prefix: "/service/1"}
                route: {cluster: service1}
              - match: {prefix: "/slow"}
                route: {cluster: service1, timeout: 0.2s}
              - match: {prefix: "/missing"}
                route: {cluster: nosuchcluster}
              - match: {prefix: "/empty"}
                route: {cluster: empty}
              - match: {prefix: "/down"}
                route: {cluster: down}
              - match: {prefix: "/api/"}
                route: {cluster: service1, prefix_rewrite: "/v2/", host_rewrite_literal: api.internal}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: service1
    type: STATIC
    lb_policy: ROUND_ROBIN
    connect_timeout: 0.25s
    load_assignment:
      cluster_name: service1
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
  - name: empty
    type: STATIC
    load_assignment: {cluster_name: empty}
  - name: down
    type: STATIC
    connect_timeout: 0.25s
    load_assignment:
      cluster_name: down
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]
`

func parseBootstrap(t *testing.T, src string) *bootstrapv3.Bootstrap {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

func startFrontProxy(t *testing.T, h http.HandlerFunc) (*Proxy, *backend, string) {
	t.Helper()
	be := newBackend(t, "service1", h)
	_, port, _ := net.SplitHostPort(be.addr)
	px := newProxy(t, Options{})
	if err := px.ApplyBootstrap(parseBootstrap(t, fmt.Sprintf(frontProxyBootstrap, mustAtoi(t, port)))); err != nil {
		t.Fatal(err)
	}
	if state, ok := px.Ready(); !ok || state != "LIVE" {
		t.Fatalf("static config loaded but state %s", state)
	}
	return px, be, "http://" + listenerAddr(t, px, "listener_0")
}

func TestFrontProxyBootstrapForwardsToBackendWithEnvoyHeaders(t *testing.T) {
	px, be, base := startFrontProxy(t, nil)
	c := keepAliveClient(t)
	code, body, hdr := do(t, c, "GET", base+"/service/1?q=1", "front.example:8080", map[string]string{
		"Connection": "keep-alive, X-Hop", "X-Hop": "must not pass", "X-Keep": "passes",
	})
	if code != 200 || body != "service1" {
		t.Fatalf("got %d %q", code, body)
	}
	if hdr.Get("X-Envoy-Upstream-Service-Time") == "" || hdr.Get("Server") != "envoy" || hdr.Get("X-Front") != "yes" {
		t.Fatalf("response headers %v", hdr)
	}
	up := be.lastRequest()
	if up.Host != "front.example:8080" || up.RequestURI != "/service/1?q=1" {
		t.Fatalf("upstream saw Host %q URI %q", up.Host, up.RequestURI)
	}
	if up.Header.Get("X-Forwarded-Proto") != "http" || len(up.Header.Get("X-Request-Id")) != 36 ||
		up.Header.Get("X-Hop") != "" || up.Header.Get("X-Keep") != "passes" || up.Header.Get("X-Envoy-Expected-Rq-Timeout-Ms") != "15000" {
		t.Fatalf("upstream headers %v", up.Header)
	}
	if got := px.Stats().Counter("cluster.service1.upstream_rq_2xx").Value(); got != 1 {
		t.Fatalf("upstream_rq_2xx = %d", got)
	}
	if got := px.Stats().Counter("http.ingress_http.downstream_rq_2xx").Value(); got != 1 {
		t.Fatalf("downstream_rq_2xx = %d", got)
	}
}

func TestPrefixAndHostRewrite(t *testing.T) {
	_, be, base := startFrontProxy(t, nil)
	do(t, keepAliveClient(t), "GET", base+"/api/items?x", "", nil)
	up := be.lastRequest()
	if up.RequestURI != "/v2/items?x" || up.Host != "api.internal" || up.Header.Get("X-Envoy-Original-Path") != "/api/items?x" {
		t.Fatalf("upstream saw %q host %q headers %v", up.RequestURI, up.Host, up.Header)
	}
}

func TestKeepAliveReusesUpstreamConnections(t *testing.T) {
	px, be, base := startFrontProxy(t, nil)
	c := keepAliveClient(t)
	for range 50 {
		if code, _, _ := do(t, c, "POST", base+"/service/1", "", nil); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if n := be.conns.Load(); n != 1 {
		t.Fatalf("backend saw %d connections for 50 sequential requests, want 1", n)
	}
	if n := px.Stats().Counter("cluster.service1.upstream_cx_total").Value(); n != 1 {
		t.Fatalf("upstream_cx_total = %d", n)
	}
	if n := px.Stats().Counter("http.ingress_http.downstream_cx_total").Value(); n != 1 {
		t.Fatalf("downstream_cx_total = %d", n)
	}
}

func TestRequestAndResponseBodiesStreamThrough(t *testing.T) {
	_, _, base := startFrontProxy(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		_, _ = w.Write([]byte(strings.ToUpper(string(b))))
		w.(http.Flusher).Flush()
		w.Header().Set("X-Sum", fmt.Sprint(len(b)))
	})
	payload := strings.Repeat("abc", 100000)
	resp, err := keepAliveClient(t).Post(base+"/service/1", "text/plain", io.NopCloser(strings.NewReader(payload)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if string(got) != strings.ToUpper(payload) {
		t.Fatalf("body of %d bytes differs", len(got))
	}
	if resp.Trailer.Get("X-Sum") != "300000" {
		t.Fatalf("trailer %v", resp.Trailer)
	}
}

func TestLocalRepliesFollowEnvoy(t *testing.T) {
	px, _, base := startFrontProxy(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/slow") {
			// Never answer: only the route's 0.2 s timeout can end this
			// request, however slowly the machine schedules timers.
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
		}
	})
	c := keepAliveClient(t)
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/missing", 503, "cluster not found"},
		{"/empty", 503, "no healthy upstream"},
		{"/down", 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure"},
		{"/slow", 504, "upstream request timeout"},
	} {
		code, body, hdr := do(t, c, "GET", base+tc.path, "", nil)
		if code != tc.code || body != tc.body || hdr.Get("Content-Type") != "text/plain" {
			t.Errorf("%s: got %d %q, want %d %q", tc.path, code, body, tc.code, tc.body)
		}
	}
	if got := px.Stats().Counter("cluster.service1.upstream_rq_timeout").Value(); got != 1 {
		t.Errorf("upstream_rq_timeout = %d", got)
	}
	if got := px.Stats().Counter("http.ingress_http.no_cluster").Value(); got != 1 {
		t.Errorf("no_cluster = %d", got)
	}
	if got := px.Stats().Counter("http.ingress_http.downstream_rq_5xx").Value(); got != 4 {
		t.Errorf("downstream_rq_5xx = %d", got)
	}
}

func TestNoRouteIs404(t *testing.T) {
	p := newProxy(t, Options{})
	be := newBackend(t, "a", nil)
	rc := routeConfig("r", []string{"known:80"}, routeTo("/", toCluster("a")))
	if err := p.ApplyBootstrap(&bootstrapv3.Bootstrap{StaticResources: &bootstrapv3.Bootstrap_StaticResources{
		Listeners: nil,
	}}); err != nil {
		t.Fatal(err)
	}
	mustApply(t, p, ClusterType, msgs(staticCluster("a", be.addr)))
	mustApply(t, p, ListenerType, msgs(hcmListener(t, "l", "127.0.0.1:0", "", rc)))
	base := "http://" + listenerAddr(t, p, "l")
	if code, body, _ := do(t, keepAliveClient(t), "GET", base+"/", "unknown:80", nil); code != 404 || body != "route not found" {
		t.Fatalf("got %d %q", code, body)
	}
	if code, _, _ := do(t, keepAliveClient(t), "GET", base+"/", "known:80", nil); code != 200 {
		t.Fatalf("known host: %d", code)
	}
}

func TestExplicitProxyRequestsRouteByAuthorityAndGoUpstreamInOriginForm(t *testing.T) {
	p := newProxy(t, Options{})
	reviews := newBackend(t, "reviews", nil)
	ratings := newBackend(t, "ratings", nil)
	mustApply(t, p, ClusterType, msgs(edsCluster("outbound|9080||reviews"), edsCluster("outbound|9080||ratings")))
	mustApply(t, p, EndpointType, msgs(cla("outbound|9080||reviews", reviews.addr), cla("outbound|9080||ratings", ratings.addr)))
	mustApply(t, p, ListenerType, msgs(hcmListener(t, "virtualOutbound", "127.0.0.1:0", "15001", nil)))
	mustApply(t, p, RouteType, msgs(outboundRoutes()))

	proxyURL, _ := url.Parse("http://" + listenerAddr(t, p, "virtualOutbound"))
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	for host, want := range map[string]string{"reviews:9080": "reviews", "ratings.default.svc.cluster.local:9080": "ratings"} {
		code, body, _ := do(t, c, "GET", "http://"+host+"/path?x=1", "", nil)
		if code != 200 || body != want {
			t.Fatalf("%s: got %d %q", host, code, body)
		}
	}
	up := reviews.lastRequest()
	if up.RequestURI != "/path?x=1" || up.Host != "reviews:9080" {
		t.Fatalf("upstream saw %q host %q", up.RequestURI, up.Host)
	}
}

package server

import (
	"crypto/tls"
	"net"
	"net/http"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/tlstest"
)

const upstreamTLSCluster = `
name: {{.Name}}
type: STATIC
connect_timeout: 2s
{{if .H2}}typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: {http2_protocol_options: {}}
{{end}}load_assignment:
  cluster_name: {{.Name}}
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Port}}}}}}]}]
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: backend.example.com
    common_tls_context:
      tls_certificates: [{certificate_chain: {inline_string: {{q .Cert}}}, private_key: {inline_string: {{q .Key}}}}]
      validation_context:
        trusted_ca: {inline_string: {{q .CA}}}
        match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: {{q .SAN}}}}]
`

func TestUpstreamTLSOriginatesMutualTLSWithALPNAndChecksSANs(t *testing.T) {
	upCA, proxyCA := tlstest.NewCA(t, "upstream-ca"), tlstest.NewCA(t, "proxy-ca")
	proxyCert := proxyCA.Issue(t, "spiffe://cluster.local/ns/default/sa/proxy")
	requireProxyCert := func(c *tls.Config) {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = proxyCA.Pool()
	}
	h2 := tlsBackend(t, "h2", upCA.Issue(t, "*.example.com").TLS, true, requireProxyCert)
	h1 := tlsBackend(t, "h1", upCA.Issue(t, "backend.example.com").TLS, false, requireProxyCert)
	p := newProxy(t, Options{})
	cluster := func(name string, port int, h2 bool, san string) any {
		return map[string]any{"Name": name, "Port": port, "H2": h2, "SAN": san,
			"Cert": proxyCert.CertPEM, "Key": proxyCert.KeyPEM, "CA": upCA.PEM}
	}
	mustApply(t, p, ClusterType, msgs(
		clusterYAML(t, upstreamTLSCluster, cluster("h2", h2.Listener.Addr().(*net.TCPAddr).Port, true, "api.example.com")),
		clusterYAML(t, upstreamTLSCluster, cluster("h1", h1.Listener.Addr().(*net.TCPAddr).Port, false, "backend.example.com")),
		clusterYAML(t, upstreamTLSCluster, cluster("wrongsan", h1.Listener.Addr().(*net.TCPAddr).Port, false, "other.example.com")),
	))
	l := listenerYAML(t, `
name: out
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: out
      route_config:
        virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
          - {match: {prefix: /h2}, route: {cluster: h2}}
          - {match: {prefix: /h1}, route: {cluster: h1}}
          - {match: {prefix: /wrong}, route: {cluster: wrongsan}}
      http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
`, nil)
	mustApply(t, p, ListenerType, msgs(l))
	base := "http://" + listenerAddr(t, p, "out")
	c := keepAliveClient(t)

	// A wildcard certificate satisfies an exact DNS SAN matcher, as in Envoy.
	code, body, hdr := do(t, c, "GET", base+"/h2", "", nil)
	if code != 200 || body != "h2" || hdr.Get("X-Proto") != "HTTP/2.0" || hdr.Get("X-Sni") != "backend.example.com" {
		t.Fatalf("h2 cluster: %d %q proto=%q sni=%q", code, body, hdr.Get("X-Proto"), hdr.Get("X-Sni"))
	}
	code, body, hdr = do(t, c, "GET", base+"/h1", "", nil)
	if code != 200 || body != "h1" || hdr.Get("X-Proto") != "HTTP/1.1" {
		t.Fatalf("h1 cluster: %d %q proto=%q", code, body, hdr.Get("X-Proto"))
	}
	if code, _, _ := do(t, c, "GET", base+"/wrong", "", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("upstream whose certificate matches no SAN: %d, want 503", code)
	}
	if p.Stats().Counter("cluster.wrongsan.upstream_cx_connect_fail").Value() == 0 {
		t.Fatal("a failed upstream TLS handshake is not counted as a connect failure")
	}
}

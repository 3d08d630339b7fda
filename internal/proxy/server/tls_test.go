package server

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/proxy/tlstest"
)

func tlsGet(t *testing.T, addr, serverName string, roots *x509.CertPool, certs []tls.Certificate, h2 bool) (*http.Response, string, error) {
	t.Helper()
	cfg := &tls.Config{ServerName: serverName, RootCAs: roots, Certificates: certs}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get("https://" + addr + "/")
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), nil
}

func TestTLSPassthroughRoutesBySNIToDifferentClusters(t *testing.T) {
	caA, caB := tlstest.NewCA(t, "a-ca"), tlstest.NewCA(t, "b-ca")
	a := tlsBackend(t, "a", caA.Issue(t, "a.example.com").TLS, false, nil)
	b := tlsBackend(t, "b", caB.Issue(t, "b.example.com").TLS, false, nil)
	p := newProxy(t, Options{})
	mustApply(t, p, ClusterType, msgs(staticCluster("a", a.Listener.Addr().String()), staticCluster("b", b.Listener.Addr().String())))
	l := listenerYAML(t, `
name: passthrough
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
listener_filters:
- name: envoy.filters.listener.tls_inspector
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
filter_chains:
- filter_chain_match: {server_names: [a.example.com], transport_protocol: tls}
  filters:`+tcpProxyFilter("pass_a", "a")+`
- filter_chain_match: {server_names: ["*.b.example.com", b.example.com]}
  filters:`+tcpProxyFilter("pass_b", "b"), nil)
	mustApply(t, p, ListenerType, msgs(l))
	addr := listenerAddr(t, p, "passthrough")

	for _, tc := range []struct {
		sni  string
		ca   *tlstest.CA
		want string
	}{{"a.example.com", caA, "a"}, {"b.example.com", caB, "b"}} {
		_, body, err := tlsGet(t, addr, tc.sni, tc.ca.Pool(), nil, false)
		if err != nil || body != tc.want {
			t.Fatalf("SNI %s: %q, %v; want the %s backend", tc.sni, body, err, tc.want)
		}
	}
	// No chain for this name and no default chain: the connection is closed.
	if _, _, err := tlsGet(t, addr, "c.example.com", caA.Pool(), nil, false); err == nil {
		t.Fatal("a connection with an unknown SNI was served")
	}
	st := p.Stats()
	if st.Counter("tcp.pass_a.downstream_cx_total").Value() != 1 || st.Counter("tcp.pass_b.downstream_cx_total").Value() != 1 {
		t.Fatal("tcp.<stat_prefix>.downstream_cx_total not counted per chain")
	}
	if st.Counter("tcp.pass_a.downstream_cx_rx_bytes_total").Value() == 0 || st.Counter("tcp.pass_a.downstream_cx_tx_bytes_total").Value() == 0 {
		t.Fatal("tcp proxy bytes not counted")
	}
	if st.Counter("tls_inspector.sni_found").Value() != 3 {
		t.Fatalf("tls_inspector.sni_found = %d", st.Counter("tls_inspector.sni_found").Value())
	}
	if st.Counter("cluster.a.upstream_cx_total").Value() != 1 {
		t.Fatal("cluster upstream_cx_total not counted for the TCP proxy")
	}
}

func downstreamTLSListener(t *testing.T, name, tlsContext, filters string, data any) *listenerv3.Listener {
	t.Helper()
	return listenerYAML(t, `
name: `+name+`
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
`+tlsContext+`
  filters:`+filters, data)
}

func TestTLSTerminationServesHTTP2WhenALPNNegotiatesIt(t *testing.T) {
	ca := tlstest.NewCA(t, "proxy-ca")
	leaf := ca.Issue(t, "proxy.example.com")
	up := protoBackend(t)
	p := newProxy(t, Options{})
	mustApply(t, p, ClusterType, msgs(staticCluster("up", up.Listener.Addr().String())))
	l := downstreamTLSListener(t, "tls", `
      common_tls_context:
        alpn_protocols: [h2, http/1.1]
        tls_params: {tls_minimum_protocol_version: TLSv1_2}
        tls_certificates: [{certificate_chain: {inline_string: {{q .Cert}}}, private_key: {inline_string: {{q .Key}}}}]
`, hcmFilter("https", "up", ""), map[string]string{"Cert": leaf.CertPEM, "Key": leaf.KeyPEM})
	mustApply(t, p, ListenerType, msgs(l))
	addr := listenerAddr(t, p, "tls")

	resp, body, err := tlsGet(t, addr, "proxy.example.com", ca.Pool(), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 || body != "HTTP/1.1" {
		t.Fatalf("downstream %s, upstream saw %q; want HTTP/2 over TLS down, HTTP/1.1 up", resp.Proto, body)
	}
	resp, _, err = tlsGet(t, addr, "proxy.example.com", ca.Pool(), nil, false)
	if err != nil || resp.ProtoMajor != 1 {
		t.Fatalf("an HTTP/1.1-only client: %v %v", resp, err)
	}
}

func TestMutualTLSNeedsAClientCertificateWithAnAllowedSAN(t *testing.T) {
	serverCA, clientCA := tlstest.NewCA(t, "server-ca"), tlstest.NewCA(t, "client-ca")
	leaf := serverCA.Issue(t, "proxy.example.com")
	good := clientCA.Issue(t, "spiffe://cluster.local/ns/default/sa/good")
	bad := clientCA.Issue(t, "spiffe://cluster.local/ns/default/sa/bad")
	stranger := tlstest.NewCA(t, "other").Issue(t, "spiffe://cluster.local/ns/default/sa/good")
	up := newBackend(t, "up", nil)
	p := newProxy(t, Options{})
	mustApply(t, p, ClusterType, msgs(staticCluster("up", up.addr)))
	l := downstreamTLSListener(t, "mtls", `
      require_client_certificate: true
      common_tls_context:
        tls_certificates: [{certificate_chain: {inline_string: {{q .Cert}}}, private_key: {inline_bytes: {{q .KeyB64}}}}]
        validation_context:
          trusted_ca: {inline_string: {{q .CA}}}
          match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "spiffe://cluster.local/ns/default/sa/good"}}]
`, hcmFilter("mtls", "up", ""), map[string]string{"Cert": leaf.CertPEM, "KeyB64": b64(leaf.KeyPEM), "CA": clientCA.PEM})
	mustApply(t, p, ListenerType, msgs(l))
	addr := listenerAddr(t, p, "mtls")

	if _, body, err := tlsGet(t, addr, "proxy.example.com", serverCA.Pool(), []tls.Certificate{good.TLS}, false); err != nil || body != "up" {
		t.Fatalf("allowed client: %q %v", body, err)
	}
	for name, certs := range map[string][]tls.Certificate{
		"no certificate": nil, "SAN not allowed": {bad.TLS}, "untrusted CA": {stranger.TLS},
	} {
		if _, _, err := tlsGet(t, addr, "proxy.example.com", serverCA.Pool(), certs, false); err == nil {
			t.Errorf("%s: served", name)
		}
	}
}

func TestTCPProxyPassesHalfCloseAndCountsBytes(t *testing.T) {
	echo := echoUpstream(t)
	p := newProxy(t, Options{})
	mustApply(t, p, ClusterType, msgs(staticCluster("echo", echo)))
	l := listenerYAML(t, `
name: tcp
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- filters:`+tcpProxyFilter("echo", "echo"), nil)
	mustApply(t, p, ListenerType, msgs(l))
	c, err := net.Dial("tcp", listenerAddr(t, p, "tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "hello upstream"); err != nil {
		t.Fatal(err)
	}
	// The upstream answers only once it has seen our FIN, so this proves the half-close crossed.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "14:hello upstream" {
		t.Fatalf("got %q %v", b, err)
	}
	st := p.Stats()
	waitFor(t, func() bool { return st.Counter("tcp.echo.downstream_cx_rx_bytes_total").Value() == 14 })
	if got := st.Counter("tcp.echo.downstream_cx_tx_bytes_total").Value(); got != 17 {
		t.Fatalf("tx bytes %d", got)
	}
}

func TestTCPProxyToAMissingClusterClosesTheConnection(t *testing.T) {
	p := newProxy(t, Options{})
	l := listenerYAML(t, `
name: tcp
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- filters:`+tcpProxyFilter("nowhere", "missing"), nil)
	mustApply(t, p, ListenerType, msgs(l))
	c, err := net.Dial("tcp", listenerAddr(t, p, "tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("got %q %v, want a closed connection", b, err)
	}
	if p.Stats().Counter("tcp.nowhere.downstream_cx_no_route").Value() != 1 {
		t.Fatal("downstream_cx_no_route not counted")
	}
}

func TestUnsupportedTLSConfigIsRejectedWithItsReason(t *testing.T) {
	p := newProxy(t, Options{})
	for _, tc := range []struct{ ctx, want string }{
		{`
      common_tls_context:
        tls_certificate_sds_secret_configs: [{name: default}]
`, "common_tls_context.tls_certificate_sds_secret_configs[0].sds_config: static secrets (bootstrap static_resources.secrets) are not supported"},
		{`
      common_tls_context:
        tls_params: {cipher_suites: [ECDHE-ECDSA-AES128-CCM]}
`, `tls_params.cipher_suites[0] "ECDHE-ECDSA-AES128-CCM": not supported`},
		{`
      session_ticket_keys: {keys: [{inline_string: x}]}
      common_tls_context: {}
`, "session_ticket_keys: not supported"},
	} {
		l := downstreamTLSListener(t, "bad", tc.ctx, hcmFilter("x", "up", ""), nil)
		err := p.OnResources(ListenerType, []proto.Message{l})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want …%s…", err, tc.want)
		}
	}
}

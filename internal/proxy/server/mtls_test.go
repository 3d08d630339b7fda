package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/identity/catest"
	"github.com/trellis-mesh/trellis/internal/proxy/istiometrics"
)

// The mesh mTLS wire format of the security contract, as the translation sends it.
const (
	sdsSource = `{api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}, resource_api_version: V3}`

	// meshInbound is a sidecar's inbound listener: an mTLS chain (Istio's DownstreamTlsContext) and,
	// PERMISSIVE, a plaintext one, told apart by the TLS inspector.
	meshInbound = `
name: {{.Name}}
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
traffic_direction: INBOUND
listener_filters:
- name: envoy.filters.listener.tls_inspector
  typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
filter_chains:
- name: mtls
  filter_chain_match: {transport_protocol: tls}
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      require_client_certificate: true
      common_tls_context:
        tls_certificate_sds_secret_configs: [{name: default, sds_config: ` + sdsSource + `}]
        combined_validation_context:
          default_validation_context: {match_typed_subject_alt_names: [{san_type: URI, matcher: {prefix: "spiffe://"}}]}
          validation_context_sds_secret_config: {name: ROOTCA, sds_config: ` + sdsSource + `}
        alpn_protocols: [h2, http/1.1]
  filters: {{.Filters}}
{{if .Permissive}}- name: plaintext
  filter_chain_match: {transport_protocol: raw_buffer}
  filters: {{.Filters}}
{{end}}`

	// meshCluster is an outbound cluster with auto-mTLS: tlsMode-istio endpoints get Istio's
	// UpstreamTlsContext, the others plaintext.
	meshCluster = `
name: {{.Name}}
type: STATIC
connect_timeout: 2s
load_assignment:
  cluster_name: {{.Name}}
  endpoints:
  - lb_endpoints:
{{range .Endpoints}}    - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Port}}}}}
{{if .Istio}}      metadata: {filter_metadata: {envoy.transport_socket_match: {tlsMode: istio}}}
{{end}}{{end}}transport_socket_matches:
- name: tlsMode-istio
  match: {tlsMode: istio}
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
      sni: outbound_.8080_._.httpbin.default.svc.cluster.local
      common_tls_context:
        tls_certificate_sds_secret_configs: [{name: default, sds_config: ` + sdsSource + `}]
        combined_validation_context:
          default_validation_context: {match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: {{q .SAN}}}}]}
          validation_context_sds_secret_config: {name: ROOTCA, sds_config: ` + sdsSource + `}
        alpn_protocols: [istio-peer-exchange, istio]
- name: tlsMode-disabled
  match: {}
  transport_socket:
    name: envoy.transport_sockets.raw_buffer
    typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}
`
)

// istioStatsHCM is an HCM routing everything to cluster, with istio.stats.
func istioStatsHCM(statPrefix, cluster string) string {
	return fmt.Sprintf(`
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: %s
      route_config:
        virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: %q}}]}]
      http_filters:
      - name: istio.stats
        typed_config: {"@type": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/stats.PluginConfig, value: {}}
      - {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
`, statPrefix, cluster)
}

// meshProxy is a proxy with its identity agent and Istio telemetry.
type meshProxy struct {
	*Proxy
	agent *identity.Agent
	tel   *istiometrics.Telemetry
}

func startMeshProxy(t *testing.T, ca *catest.CA, ns, sa string) *meshProxy {
	t.Helper()
	a, err := identity.New(identity.Config{CAAddress: ca.Addr, RootCert: ca.RootPEM, Namespace: ns, ServiceAccount: sa,
		MinRetry: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	tel := istiometrics.New(&istiometrics.Identity{Name: sa + "-1", Namespace: ns, Workload: sa, ServiceAccount: sa, App: sa,
		CanonicalService: sa, Revision: "latest", NodeID: "sidecar~127.0.0.1~" + sa + "-1." + ns + "~" + ns + ".svc.cluster.local"})
	p := newProxy(t, Options{Secrets: a.Store(), SecretsReady: a.Store().Ready, Telemetry: tel})
	if _, ok := p.Ready(); ok {
		t.Fatal("ready before the bootstrap and the certificate")
	}
	if err := p.ApplyBootstrap(&bootstrapv3.Bootstrap{}); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "the proxy to be ready with its certificate", func() bool { _, ok := p.Ready(); return ok })
	return &meshProxy{Proxy: p, agent: a, tel: tel}
}

func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *meshProxy) metrics(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	if err := m.tel.Registry.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

type endpointSpec struct {
	Port  int
	Istio bool
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return mustAtoi(t, p)
}

// mtlsClient is a Go client presenting cert, trusting pool, that does not check names (mesh peers
// are checked by SAN, which the test asserts itself).
func mtlsClient(t *testing.T, cert tls.Certificate, pool *x509.CertPool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "ignored",
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		},
	}, MaxConnsPerHost: 1, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// meshPair is a client sidecar (sleep) with an outbound listener, a server sidecar (httpbin) with
// a PERMISSIVE and a STRICT inbound listener, and the app behind it.
type meshPair struct {
	ca                       *catest.CA
	client, server           *meshProxy
	app                      *backend
	outbound                 string // the client proxy's listener, http://
	permissive, strict, mtcp string // the server proxy's listeners
}

const (
	sleepSAN   = "spiffe://cluster.local/ns/default/sa/sleep"
	httpbinSAN = "spiffe://cluster.local/ns/default/sa/httpbin"
	meshCl     = "outbound|8080||httpbin.default.svc.cluster.local"
)

func startMeshPair(t *testing.T) *meshPair {
	t.Helper()
	m := &meshPair{ca: catest.Start(t, time.Hour)}
	m.client = startMeshProxy(t, m.ca, "default", "sleep")
	m.server = startMeshProxy(t, m.ca, "default", "httpbin")
	m.app = newBackend(t, "httpbin", nil)

	mustApply(t, m.server.Proxy, ClusterType, msgs(staticCluster("inbound|8080||", m.app.addr)))
	mustApply(t, m.server.Proxy, ListenerType, msgs(
		listenerYAML(t, meshInbound, map[string]any{"Name": "permissive", "Permissive": true, "Filters": istioStatsHCM("inbound_0.0.0.0_8080", "inbound|8080||")}),
		listenerYAML(t, meshInbound, map[string]any{"Name": "strict", "Permissive": false, "Filters": istioStatsHCM("inbound_0.0.0.0_8080", "inbound|8080||")}),
		listenerYAML(t, meshInbound, map[string]any{"Name": "mtcp", "Permissive": false, "Filters": `
  - name: istio.stats
    typed_config: {"@type": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/stats.PluginConfig, value: {}}
  - name: envoy.filters.network.tcp_proxy
    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: inbound_tcp, cluster: "inbound|8080||"}
`}),
	))
	m.permissive = listenerAddr(t, m.server.Proxy, "permissive")
	m.strict = listenerAddr(t, m.server.Proxy, "strict")
	m.mtcp = listenerAddr(t, m.server.Proxy, "mtcp")

	m.setClientCluster(t, httpbinSAN, endpointSpec{Port: port(t, m.permissive), Istio: true})
	l := listenerYAML(t, `
name: outbound
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
traffic_direction: OUTBOUND
filter_chains:
- filters: `+istioStatsHCM("outbound_0.0.0.0_8080", meshCl), nil)
	mustApply(t, m.client.Proxy, ListenerType, msgs(l))
	m.outbound = "http://" + listenerAddr(t, m.client.Proxy, "outbound")
	return m
}

func (m *meshPair) setClientCluster(t *testing.T, san string, eps ...endpointSpec) {
	t.Helper()
	mustApply(t, m.client.Proxy, ClusterType, msgs(clusterYAML(t, meshCluster, map[string]any{"Name": meshCl, "SAN": san, "Endpoints": eps})))
}

// A request between two sidecars goes over mTLS with certificates from the CA: the server side
// sees the client's SPIFFE ID, and istio.stats on both sides report it as Istio does.
func TestMeshMTLSBetweenSidecarsCarriesTheClientsSPIFFEIdentity(t *testing.T) {
	m := startMeshPair(t)
	c := keepAliveClient(t)
	for range 3 {
		if code, body, _ := do(t, c, "GET", m.outbound+"/get", "httpbin:8080", nil); code != 200 || body != "httpbin" {
			t.Fatalf("mTLS request: %d %q", code, body)
		}
	}
	srv := m.server.metrics(t)
	for _, want := range []string{
		`reporter="destination"`, `connection_security_policy="mutual_tls"`,
		`source_principal="` + sleepSAN + `"`, `destination_principal="` + httpbinSAN + `"`,
	} {
		if !strings.Contains(srv, want) {
			t.Errorf("the server side's istio_requests_total lacks %s:\n%s", want, grepLines(srv, "istio_requests_total"))
		}
	}
	if !strings.Contains(grepLines(srv, "istio_requests_total"), `} 3`) {
		t.Errorf("want 3 requests counted:\n%s", grepLines(srv, "istio_requests_total"))
	}

	// The TCP chain sees the identity too.
	conn, err := tls.Dial("tcp", m.mtcp, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{
		m.ca.IssueLeaf(t, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), sleepSAN)}})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(conn)
	conn.Close()
	if !strings.HasSuffix(string(b), "httpbin") {
		t.Fatalf("mTLS TCP: %q", b)
	}
	pollUntil(t, "the TCP connection's metrics", func() bool {
		tcp := grepLines(m.server.metrics(t), "istio_tcp_connections_closed_total")
		return strings.Contains(tcp, `connection_security_policy="mutual_tls"`) && strings.Contains(tcp, `source_principal="`+sleepSAN+`"`)
	})
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The STRICT chain refuses every client that cannot prove a mesh identity.
func TestMeshMTLSRefusesUntrustedExpiredWrongSANAndPlaintextClients(t *testing.T) {
	m := startMeshPair(t)
	now := time.Now()
	good := m.ca.IssueLeaf(t, now.Add(-time.Minute), now.Add(time.Hour), sleepSAN)
	if code, body, _ := do(t, mtlsClient(t, good, m.ca.Pool()), "GET", "https://"+m.strict+"/", "", nil); code != 200 || body != "httpbin" {
		t.Fatalf("a good mesh client: %d %q", code, body)
	}
	other := catest.Start(t, time.Hour)
	for name, cert := range map[string]tls.Certificate{
		"another root":   other.IssueLeaf(t, now.Add(-time.Minute), now.Add(time.Hour), sleepSAN),
		"expired":        m.ca.IssueLeaf(t, now.Add(-2*time.Hour), now.Add(-time.Hour), sleepSAN),
		"no SPIFFE SAN":  m.ca.IssueLeaf(t, now.Add(-time.Minute), now.Add(time.Hour), "sleep.default.svc"),
		"no certificate": {},
	} {
		cl := mtlsClient(t, cert, m.ca.Pool())
		if cert.Certificate == nil {
			cl.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
		}
		resp, err := cl.Get("https://" + m.strict + "/")
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: served (%d)", name, resp.StatusCode)
		}
	}
	// Plaintext to a TLS-only listener: no chain matches, the connection is closed.
	if resp, err := http.Get("http://" + m.strict + "/"); err == nil {
		resp.Body.Close()
		t.Error("plaintext to a STRICT listener was served")
	}
	// PERMISSIVE serves both: plaintext (counted with security none) and mTLS.
	if code, body, _ := do(t, keepAliveClient(t), "GET", "http://"+m.permissive+"/", "", nil); code != 200 || body != "httpbin" {
		t.Fatalf("plaintext to PERMISSIVE: %d %q", code, body)
	}
	if code, _, _ := do(t, mtlsClient(t, good, m.ca.Pool()), "GET", "https://"+m.permissive+"/", "", nil); code != 200 {
		t.Fatalf("mTLS to PERMISSIVE: %d", code)
	}
	srv := grepLines(m.server.metrics(t), "istio_requests_total")
	if !strings.Contains(srv, `connection_security_policy="none"`) || !strings.Contains(srv, `connection_security_policy="mutual_tls"`) {
		t.Errorf("PERMISSIVE traffic not reported by its security:\n%s", srv)
	}

	// The client side checks the server's SAN: a server that is not the expected service account
	// is refused (503, a connect failure).
	m.setClientCluster(t, "spiffe://cluster.local/ns/default/sa/not-httpbin", endpointSpec{Port: port(t, m.strict), Istio: true})
	if code, _, _ := do(t, keepAliveClient(t), "GET", m.outbound+"/", "httpbin:8080", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("server with the wrong SAN: %d, want 503", code)
	}
}

// One cluster, two endpoints: the tlsMode-istio one is a STRICT sidecar (TLS only), the other the
// plain app (no TLS at all). Every request succeeds only if each host gets its own transport.
func TestTransportSocketMatchesPickMTLSPerEndpoint(t *testing.T) {
	m := startMeshPair(t)
	plain := newBackend(t, "plain", nil)
	m.setClientCluster(t, httpbinSAN, endpointSpec{Port: port(t, m.strict), Istio: true}, endpointSpec{Port: port(t, plain.addr)})
	c := keepAliveClient(t)
	seen := map[string]int{}
	for range 20 {
		code, body, _ := do(t, c, "GET", m.outbound+"/", "httpbin:8080", nil)
		if code != 200 {
			t.Fatalf("request failed: %d %q", code, body)
		}
		seen[body]++
	}
	if seen["httpbin"] == 0 || seen["plain"] == 0 {
		t.Fatalf("both endpoints should serve: %v", seen)
	}
	if n := m.client.Stats().Counter("cluster." + meshCl + ".upstream_cx_connect_fail").Value(); n != 0 {
		t.Fatalf("%d connect failures", n)
	}
}

// A certificate rotation reaches new connections only: a keep-alive connection and a streaming
// response opened before it go on, and a connection opened after sees the new serial.
func TestRotationKeepsOpenConnectionsAndServesTheNewCertificateToNewOnes(t *testing.T) {
	// Certificates live 3s (1s backdated): the agent renews every 2s.
	ca := catest.Start(t, 3*time.Second)
	server := startMeshProxy(t, ca, "default", "httpbin")
	release := make(chan struct{})
	app := newBackend(t, "httpbin", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stream" {
			_, _ = io.WriteString(w, "httpbin")
			return
		}
		f := w.(http.Flusher)
		for i := 0; ; i++ {
			fmt.Fprintf(w, "chunk %d\n", i)
			f.Flush()
			select {
			case <-release:
				_, _ = io.WriteString(w, "end\n")
				return
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	mustApply(t, server.Proxy, ClusterType, msgs(staticCluster("inbound|8080||", app.addr)))
	mustApply(t, server.Proxy, ListenerType, msgs(listenerYAML(t, meshInbound, map[string]any{"Name": "strict", "Filters": istioStatsHCM("in", "inbound|8080||")})))
	addr := "https://" + listenerAddr(t, server.Proxy, "strict")
	client := ca.IssueLeaf(t, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), sleepSAN)

	keep := mtlsClient(t, client, ca.Pool())
	resp, err := keep.Get(addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	oldSerial := resp.TLS.PeerCertificates[0].SerialNumber
	stream, err := mtlsClient(t, client, ca.Pool()).Get(addr + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	lines := bufio.NewReader(stream.Body)
	if _, err := lines.ReadString('\n'); err != nil {
		t.Fatal(err)
	}

	pollUntil(t, "a rotation", func() bool {
		return server.agent.Store().Workload().Cert.Leaf.SerialNumber.Cmp(oldSerial) != 0
	})
	rotated := server.agent.Store().Workload()
	pollUntil(t, "a second rotation", func() bool { return server.agent.Store().Workload() != rotated })

	// The keep-alive connection still serves, on the same connection (the old serial).
	resp, err = keep.Get(addr + "/")
	if err != nil {
		t.Fatalf("keep-alive connection after rotation: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.TLS.PeerCertificates[0].SerialNumber.Cmp(oldSerial) != 0 {
		t.Fatal("the keep-alive request went over a new connection: the old one was closed")
	}
	// The stream kept flowing through the rotations and ends cleanly.
	close(release)
	rest, err := io.ReadAll(lines)
	if err != nil || !strings.HasSuffix(string(rest), "end\n") {
		t.Fatalf("stream after rotation: %v, %q", err, rest)
	}
	// A new connection gets the newest certificate.
	resp, err = mtlsClient(t, client, ca.Pool()).Get(addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := resp.TLS.PeerCertificates[0]
	if got.SerialNumber.Cmp(oldSerial) == 0 || !catest.HasURI(got, httpbinSAN) {
		t.Fatalf("a new connection got serial %v (old %v), SANs %v", got.SerialNumber, oldSerial, got.URIs)
	}
}

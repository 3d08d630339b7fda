package xdsconfig

import (
	"crypto/tls"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/tlstest"
)

const tcpFilter = `
  - name: envoy.filters.network.tcp_proxy
    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c}
`

func TestListenerWithFilterChainsTLSAndTCPProxyConverts(t *testing.T) {
	leaf := tlstest.NewCA(t, "ca").Issue(t, "api.example.com")
	ca := tlstest.NewCA(t, "clients")
	l := fromYAML(t, &listenerv3.Listener{}, `
name: gateway
address: {socket_address: {address: 0.0.0.0, port_value: 8443}}
listener_filters_timeout: 5s
continue_on_listener_filters_timeout: true
use_original_dst: true
listener_filters:
- {name: envoy.filters.listener.tls_inspector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}
- {name: envoy.filters.listener.http_inspector, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}}
- {name: envoy.filters.listener.original_dst, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}
filter_chains:
- name: passthrough
  filter_chain_match:
    destination_port: 8443
    prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]
    server_names: [API.example.com, "*.example.org"]
    transport_protocol: tls
    application_protocols: [h2]
    direct_source_prefix_ranges: [{address_prefix: 192.168.0.0, prefix_len: 16}]
    source_type: EXTERNAL
    source_prefix_ranges: [{address_prefix: "::", prefix_len: 0}]
    source_ports: [5000]
  filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: pass
      weighted_clusters: {clusters: [{name: a, weight: 1}, {name: b, weight: 3}]}
      idle_timeout: 0s
      max_connect_attempts: 3
      access_log: [{name: envoy.access_loggers.stdout, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog}}]
- name: terminate
  transport_socket_connect_timeout: 3s
  filter_chain_match: {server_names: [api.example.com]}
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      require_client_certificate: true
      common_tls_context:
        alpn_protocols: [h2, http/1.1]
        tls_params: {tls_minimum_protocol_version: TLSv1_3, cipher_suites: ["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]"], ecdh_curves: [X25519]}
        tls_certificates: [{certificate_chain: {inline_string: `+strconv.Quote(leaf.CertPEM)+`}, private_key: {inline_string: `+strconv.Quote(leaf.KeyPEM)+`}}]
        validation_context:
          trusted_ca: {inline_string: `+strconv.Quote(ca.PEM)+`}
          match_typed_subject_alt_names: [{san_type: URI, matcher: {prefix: "spiffe://cluster.local/"}}]
  filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: https
      codec_type: HTTP2
      upgrade_configs: [{upgrade_type: WebSocket}, {upgrade_type: spdy/3, enabled: false}]
      rds: {route_config_name: r, config_source: {ads: {}}}
default_filter_chain:
  filters:`+tcpFilter)
	got, err := ParseListener(l)
	if err != nil {
		t.Fatal(err)
	}
	if f := got.ListenerFilters; !f.TLSInspector || !f.HTTPInspector || !f.OriginalDst || f.Timeout != 5*time.Second || !f.ContinueOnTimeout || !got.UseOriginalDst {
		t.Errorf("listener filters %+v", f)
	}
	if len(got.FilterChains) != 2 || got.DefaultChain == nil || got.DefaultChain.TCP.Cluster != "c" {
		t.Fatalf("chains %+v default %+v", got.FilterChains, got.DefaultChain)
	}
	pass, term := got.FilterChains[0], got.FilterChains[1]
	m := pass.Match
	if m.DestinationPort != 8443 || m.PrefixRanges[0] != netip.MustParsePrefix("10.0.0.0/8") ||
		!slices.Equal(m.ServerNames, []string{"api.example.com", "*.example.org"}) || m.TransportProtocol != "tls" ||
		!slices.Equal(m.ApplicationProtocols, []string{"h2"}) || m.DirectSourcePrefixRanges[0].Bits() != 16 ||
		m.SourceType != SourceExternal || m.SourcePrefixRanges[0] != netip.MustParsePrefix("::/0") || !slices.Equal(m.SourcePorts, []uint32{5000}) {
		t.Errorf("match %+v", m)
	}
	tp := pass.TCP
	if tp == nil || tp.StatPrefix != "pass" || tp.IdleTimeout != 0 || tp.MaxConnectAttempts != 3 || tp.TotalWeight != 4 || len(tp.AccessLogs) != 1 {
		t.Fatalf("tcp proxy %+v", tp)
	}
	if tp.PickCluster(0) != "a" || tp.PickCluster(1) != "b" || tp.PickCluster(3) != "b" {
		t.Error("weighted clusters do not follow their weights")
	}
	if pass.TLS != nil || term.TLS == nil || term.TLSHandshakeTimeout != 3*time.Second {
		t.Fatalf("TLS: pass %v term %v", pass.TLS, term.TLS)
	}
	c := term.TLS
	if c.ClientAuth != tls.RequireAnyClientCert || c.MinVersion != tls.VersionTLS13 || len(c.Certificates) != 1 ||
		!slices.Equal(c.NextProtos, []string{"h2", "http/1.1"}) || len(c.CipherSuites) != 2 || !slices.Equal(c.CurvePreferences, []tls.CurveID{tls.X25519}) {
		t.Errorf("server TLS config %+v", c)
	}
	h := term.HTTP
	ws, _ := h.Upgrade("websocket")
	spdy, _ := h.Upgrade("spdy/3")
	h2c, _ := h.Upgrade("h2c")
	if h.Codec != CodecHTTP2 || !ws || spdy || h2c {
		t.Errorf("HCM codec %v upgrades %+v", h.Codec, h.Upgrades)
	}
	if ms := got.HTTPManagers(); len(ms) != 1 || ms[0] != h {
		t.Errorf("HTTPManagers %v", ms)
	}
}

func TestUnsupportedListenerConfigIsRejectedNamingTheField(t *testing.T) {
	const tlsChain = `
name: l
address: {socket_address: {address: 127.0.0.1, port_value: 443}}
filter_chains:
- transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
`
	const plain = `
name: l
address: {socket_address: {address: 127.0.0.1, port_value: 80}}
`
	for _, tc := range []struct{ name, yaml, want string }{
		{"proxy_protocol listener filter", plain + `
listener_filters: [{name: envoy.filters.listener.proxy_protocol}]
filter_chains:
- filters:` + tcpFilter, `listener_filters[0] ("envoy.filters.listener.proxy_protocol"): listener filter "envoy.filters.listener.proxy_protocol": not supported`},
		{"duplicate match", plain + `
filter_chains:
- filter_chain_match: {server_names: [a]}
  filters:` + tcpFilter + `
- filter_chain_match: {server_names: [a]}
  filters:` + tcpFilter, `filter_chains[1].filter_chain_match: the same match as filter_chains[0]`},
		{"duplicate name", plain + `
filter_chains:
- name: x
  filter_chain_match: {server_names: [a]}
  filters:` + tcpFilter + `
- name: x
  filter_chain_match: {server_names: [b]}
  filters:` + tcpFilter, `filter_chains[1].name "x": also the name of filter_chains[0]`},
		{"bad wildcard", plain + `
filter_chains:
- filter_chain_match: {server_names: ["api.*.com"]}
  filters:` + tcpFilter, `filter_chains[0].filter_chain_match.server_names[0] "api.*.com": only a leading "*." wildcard is allowed`},
		{"two network filters", plain + `
filter_chains:
- filters:` + tcpFilter + strings.TrimPrefix(tcpFilter, "\n"), `filter_chains[0].filters[0] ("envoy.filters.network.tcp_proxy"): network filter "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" before the terminal filter: not supported`},
		{"rbac network filter", plain + `
filter_chains:
- filters: [{name: envoy.filters.network.rbac, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC, stat_prefix: r}}]
`, `filter_chains[0].filters[0] ("envoy.filters.network.rbac"): typed_config "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC": only the HTTP connection manager and the TCP proxy are not supported`},
		{"default chain with a match", plain + `
default_filter_chain:
  filter_chain_match: {server_names: [a]}
  filters:` + tcpFilter, `default_filter_chain.filter_chain_match: the default chain has no match`},
		{"no chain", plain, `a listener needs a filter chain or a default_filter_chain`},
		{"static SDS certificate", tlsChain + `
      common_tls_context: {tls_certificate_sds_secret_configs: [{name: default}]}
  filters:` + tcpFilter, `filter_chains[0].transport_socket.typed_config (DownstreamTlsContext).common_tls_context.tls_certificate_sds_secret_configs[0].sds_config: static secrets (bootstrap static_resources.secrets) are not supported`},
		{"SDS from another cluster", tlsChain + `
      common_tls_context: {tls_certificate_sds_secret_configs: [{name: default, sds_config: {api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: vault}}]}}}]}
  filters:` + tcpFilter, `tls_certificate_sds_secret_configs[0].sds_config.api_config_source.grpc_services[0].envoy_grpc.cluster_name "vault": only "sds-grpc" (the identity agent) is not supported`},
		{"SDS over ADS", tlsChain + `
      common_tls_context: {tls_certificate_sds_secret_configs: [{name: default, sds_config: {ads: {}}}]}
  filters:` + tcpFilter, `tls_certificate_sds_secret_configs[0].sds_config.ads: not supported`},
		{"SDS certificate the agent does not serve", tlsChain + `
      common_tls_context: {tls_certificate_sds_secret_configs: [{name: "kubernetes://gw-cert", sds_config: {api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}}}]}
  filters:` + tcpFilter, `tls_certificate_sds_secret_configs[0].name "kubernetes://gw-cert": the identity agent serves only "default" here`},
		{"SDS validation named default", tlsChain + `
      common_tls_context:
        tls_certificate_sds_secret_configs: [{name: default, sds_config: {api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}}}]
        validation_context_sds_secret_config: {name: default, sds_config: {api_config_source: {api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}}}
  filters:` + tcpFilter, `validation_context_sds_secret_config.name "default": the identity agent serves only "ROOTCA" here`},
		{"no certificate", tlsChain + `
      common_tls_context: {}
  filters:` + tcpFilter, `common_tls_context.tls_certificates: a server needs a certificate`},
		{"version order", tlsChain + `
      common_tls_context: {tls_params: {tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_2}}
  filters:` + tcpFilter, `tls_params.tls_maximum_protocol_version is below tls_minimum_protocol_version`},
		{"unknown curve", tlsChain + `
      common_tls_context: {tls_params: {ecdh_curves: [P-224]}}
  filters:` + tcpFilter, `tls_params.ecdh_curves[0] "P-224": not supported`},
		{"OCSP", tlsChain + `
      ocsp_staple_policy: MUST_STAPLE
      common_tls_context: {}
  filters:` + tcpFilter, `ocsp_staple_policy MUST_STAPLE: not supported`},
		{"certificate file", tlsChain + `
      common_tls_context: {tls_certificates: [{certificate_chain: {filename: /nonexistent/cert.pem}, private_key: {inline_string: x}}]}
  filters:` + tcpFilter, `tls_certificates[0].certificate_chain.filename: open /nonexistent/cert.pem`},
		{"SPKI pinning", tlsChain + `
      common_tls_context: {validation_context: {verify_certificate_spki: ["NvqYIYSbgK2vCJpQhObf77vv+bQWtc5ek5RIOwPiC9A="]}}
  filters:` + tcpFilter, `validation_context.verify_certificate_spki: not supported`},
		{"tcp proxy without cluster", plain + `
filter_chains:
- filters: [{name: t, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t}}]
`, `filter_chains[0].filters[0] (tcp_proxy).invalid TcpProxy.ClusterSpecifier: value is required`},
		{"tcp proxy hash policy", plain + `
filter_chains:
- filters: [{name: t, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c, hash_policy: [{source_ip: {}}]}}]
`, `(tcp_proxy).hash_policy: not supported`},
		{"CONNECT upgrade", plain + `
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: s
      rds: {route_config_name: r, config_source: {ads: {}}}
      upgrade_configs: [{upgrade_type: CONNECT}]
`, `upgrade_configs[0].upgrade_type CONNECT: not supported`},
	} {
		_, err := ParseListener(fromYAML(t, &listenerv3.Listener{}, tc.yaml))
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got  %v\n want …%s…", tc.name, err, tc.want)
		}
	}
}

func TestUpstreamTLSContextConverts(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	cluster := func(ctx string) string {
		return `
name: c
type: EDS
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
` + ctx
	}
	cfg, err := ParseCluster(fromYAML(t, &clusterv3.Cluster{}, cluster(`
    sni: reviews.default.svc.cluster.local
    max_session_keys: 4
    common_tls_context:
      alpn_protocols: [istio-peer-exchange, istio]
      validation_context:
        trusted_ca: {inline_string: `+strconv.Quote(ca.PEM)+`}
        match_subject_alt_names: [{exact: "spiffe://cluster.local/ns/default/sa/reviews"}]
`)))
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.TLS
	if u == nil || u.SNI != "reviews.default.svc.cluster.local" || !slices.Equal(u.ALPN, []string{"istio-peer-exchange", "istio"}) ||
		u.Sessions == nil || !u.Config.InsecureSkipVerify || u.Config.VerifyConnection == nil {
		t.Fatalf("upstream TLS %+v", u)
	}
	for _, tc := range []struct{ ctx, want string }{
		{"    allow_renegotiation: true\n", `transport_socket.typed_config (UpstreamTlsContext).allow_renegotiation: not supported`},
		{"    common_tls_context: {combined_validation_context: {default_validation_context: {}, validation_context_sds_secret_config: {name: ROOTCA}}}\n",
			`combined_validation_context.validation_context_sds_secret_config.sds_config: static secrets (bootstrap static_resources.secrets) are not supported`},
		{"    common_tls_context: {validation_context: {match_typed_subject_alt_names: [{san_type: OTHER_NAME, oid: 1.2.3, matcher: {exact: x}}]}}\n",
			`match_typed_subject_alt_names[0].san_type OTHER_NAME: not supported`},
	} {
		_, err := ParseCluster(fromYAML(t, &clusterv3.Cluster{}, cluster(tc.ctx)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want …%s…", err, tc.want)
		}
	}
}

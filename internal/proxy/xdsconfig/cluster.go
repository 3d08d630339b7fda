//lint:file-ignore SA1019 Envoy still honours these deprecated Cluster fields, so trellis-proxy must too.

package xdsconfig

import (
	"errors"
	"fmt"
	"net/netip"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// ParseCluster converts and validates an Envoy Cluster: load balancing (round robin, least request,
// random, ring hash, Maglev, with locality weights and the panic threshold), circuit breakers,
// outlier detection and active HTTP/TCP health checks (lbconfig.go, outlier.go, healthcheck.go).
// DNS settings are accepted and not enforced yet. TLS comes from transport_socket and
// transport_socket_matches (per endpoint, by its "envoy.transport_socket_match" metadata), with
// SDS secrets served by the SecretSource given WithSecrets. Subsets and custom cluster types are
// rejected.
func ParseCluster(c *clusterv3.Cluster, opts ...Option) (upstream.Config, error) {
	cfg, err := parseCluster(c, newOptions(opts))
	if err != nil {
		return upstream.Config{}, &ResourceError{Kind: "Cluster", Name: c.GetName(), Err: err}
	}
	return cfg, nil
}

func parseCluster(c *clusterv3.Cluster, o *options) (upstream.Config, error) {
	cfg := upstream.Config{Name: c.GetName()}
	if err := c.Validate(); err != nil {
		return cfg, err
	}
	if err := onlyFields(c, "name", "alt_stat_name", "type", "eds_cluster_config", "connect_timeout",
		"per_connection_buffer_limit_bytes", "lb_policy", "load_assignment", "health_checks",
		"max_requests_per_connection", "circuit_breakers", "upstream_http_protocol_options",
		"common_http_protocol_options", "http_protocol_options", "http2_protocol_options",
		"typed_extension_protocol_options", "dns_refresh_rate", "dns_failure_refresh_rate", "respect_dns_ttl",
		"dns_lookup_family", "dns_resolvers", "use_tcp_for_dns_lookups", "dns_resolution_config",
		"typed_dns_resolver_config", "wait_for_warm_on_init", "outlier_detection", "cleanup_interval",
		"ring_hash_lb_config", "maglev_lb_config", "original_dst_lb_config", "least_request_lb_config",
		"round_robin_lb_config", "common_lb_config", "metadata", "protocol_selection",
		"upstream_connection_options", "close_connections_on_host_health_failure",
		"ignore_health_on_host_removal", "track_timeout_budgets", "track_cluster_stats", "preconnect_policy",
		"dns_jitter", "transport_socket", "transport_socket_matches", "upstream_bind_config"); err != nil {
		return cfg, err
	}
	if b := c.GetUpstreamBindConfig(); b != nil {
		ip, err := bindSourceIP(b)
		if err != nil {
			return cfg, fmt.Errorf("upstream_bind_config.%w", err)
		}
		cfg.SourceIP = ip
	}
	cfg.StatName = c.GetAltStatName()
	tlsCfg, err := upstreamTransportSocket(c.GetTransportSocket(), o)
	if err != nil {
		return cfg, fmt.Errorf("transport_socket.%w", err)
	}
	cfg.TLS = tlsCfg
	for i, m := range c.GetTransportSocketMatches() {
		tm, err := transportSocketMatch(m, o)
		if err != nil {
			return cfg, fmt.Errorf("transport_socket_matches[%d].%w", i, err)
		}
		cfg.TransportMatches = append(cfg.TransportMatches, tm)
	}
	switch c.GetType() {
	case clusterv3.Cluster_STATIC:
		cfg.Type = upstream.Static
	case clusterv3.Cluster_STRICT_DNS:
		cfg.Type = upstream.StrictDNS
	case clusterv3.Cluster_LOGICAL_DNS:
		cfg.Type = upstream.LogicalDNS
	case clusterv3.Cluster_EDS:
		cfg.Type = upstream.EDS
		cfg.EDSServiceName = c.GetEdsClusterConfig().GetServiceName()
		if cfg.EDSServiceName == "" {
			cfg.EDSServiceName = c.GetName()
		}
	case clusterv3.Cluster_ORIGINAL_DST:
		cfg.Type = upstream.OriginalDst
		cfg.OriginalDstFromHeader = c.GetOriginalDstLbConfig().GetUseHttpHeader()
		if h := c.GetOriginalDstLbConfig().GetHttpHeaderName(); h != "" {
			return cfg, fmt.Errorf("original_dst_lb_config.http_header_name: %w", ErrUnsupported)
		}
	default:
		return cfg, fmt.Errorf("type %s: %w", c.GetType(), ErrUnsupported)
	}
	if err := parseLB(&cfg, c); err != nil {
		return cfg, err
	}
	if err := parseCircuitBreakers(&cfg, c.GetCircuitBreakers()); err != nil {
		return cfg, fmt.Errorf("circuit_breakers.%w", err)
	}
	if od := c.GetOutlierDetection(); od != nil {
		o, err := parseOutlier(od)
		if err != nil {
			return cfg, fmt.Errorf("outlier_detection.%w", err)
		}
		cfg.Outlier = &o
	}
	switch n := len(c.GetHealthChecks()); {
	case n > 1:
		return cfg, fmt.Errorf("health_checks: %d health checks, only one is %w", n, ErrUnsupported)
	case n == 1:
		hc, err := parseHealthCheck(c.GetHealthChecks()[0])
		if err != nil {
			return cfg, fmt.Errorf("health_checks[0].%w", err)
		}
		cfg.HealthCheck = &hc
	}
	cfg.IgnoreHealthOnHostRemoval = c.GetIgnoreHealthOnHostRemoval()
	if c.GetCloseConnectionsOnHostHealthFailure() {
		return cfg, fmt.Errorf("close_connections_on_host_health_failure: %w", ErrUnsupported)
	}
	cfg.ConnectTimeout = duration(c.GetConnectTimeout(), upstream.DefaultConnectTimeout)
	cfg.IdleTimeout = duration(c.GetCommonHttpProtocolOptions().GetIdleTimeout(), 0)
	if c.GetHttp2ProtocolOptions() != nil {
		cfg.Protocol = upstream.HTTP2
	}
	if c.GetProtocolSelection() == clusterv3.Cluster_USE_DOWNSTREAM_PROTOCOL {
		cfg.Protocol = upstream.UseDownstream
	}
	for key, opts := range c.GetTypedExtensionProtocolOptions() {
		if key != httpProtocolOptionsKey {
			return cfg, fmt.Errorf("typed_extension_protocol_options[%q]: %w", key, ErrUnsupported)
		}
		if err := httpProtocolOptions(&cfg, opts); err != nil {
			return cfg, fmt.Errorf("typed_extension_protocol_options[%q].%w", key, err)
		}
	}
	if la := c.GetLoadAssignment(); la != nil {
		if cfg.Type == upstream.EDS || cfg.Type == upstream.OriginalDst {
			return cfg, fmt.Errorf("load_assignment: not allowed for %s clusters", cfg.Type)
		}
		eps, err := parseLoadAssignment(la)
		if err != nil {
			return cfg, fmt.Errorf("load_assignment.%w", err)
		}
		cfg.Endpoints = eps
	}
	return cfg, nil
}

func httpProtocolOptions(cfg *upstream.Config, a *anypb.Any) error {
	var o httpv3.HttpProtocolOptions
	if err := anypb.UnmarshalTo(a, &o, protoUnmarshal); err != nil {
		return fmt.Errorf("typed_config: %w", err)
	}
	if err := onlyFields(&o, "common_http_protocol_options", "upstream_http_protocol_options",
		"explicit_http_config", "use_downstream_protocol_config", "auto_config"); err != nil {
		return err
	}
	if d := o.GetCommonHttpProtocolOptions().GetIdleTimeout(); d != nil {
		cfg.IdleTimeout = d.AsDuration()
	}
	switch p := o.GetUpstreamProtocolOptions().(type) {
	case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_:
		switch p.ExplicitHttpConfig.GetProtocolConfig().(type) {
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
			cfg.Protocol = upstream.HTTP1
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
			cfg.Protocol = upstream.HTTP2
		default:
			return fmt.Errorf("explicit_http_config: only HTTP/1.1 and HTTP/2 are %w", ErrUnsupported)
		}
	case *httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig:
		cfg.Protocol = upstream.UseDownstream
	case *httpv3.HttpProtocolOptions_AutoConfig:
		// ALPN needs TLS; over plaintext Envoy's auto config speaks HTTP/1.1.
		cfg.Protocol = upstream.HTTP1
	}
	return nil
}

// ParseLoadAssignment converts a ClusterLoadAssignment (EDS or a cluster's load_assignment), with
// localities, their weights and priorities, and the overprovisioning factor. Endpoints Envoy would
// not pick (UNHEALTHY, DRAINING, TIMEOUT) are kept but marked unhealthy, DEGRADED ones degraded.
// drop_overloads, endpoint_stale_after and weighted_priority_health are rejected.
func ParseLoadAssignment(cla *endpointv3.ClusterLoadAssignment) ([]upstream.Endpoint, error) {
	if err := cla.Validate(); err != nil {
		return nil, &ResourceError{Kind: "ClusterLoadAssignment", Name: cla.GetClusterName(), Err: err}
	}
	eps, err := parseLoadAssignment(cla)
	if err != nil {
		return nil, &ResourceError{Kind: "ClusterLoadAssignment", Name: cla.GetClusterName(), Err: err}
	}
	return eps, nil
}

func parseLoadAssignment(cla *endpointv3.ClusterLoadAssignment) ([]upstream.Endpoint, error) {
	if err := onlyFields(cla, "cluster_name", "endpoints", "named_endpoints", "policy"); err != nil {
		return nil, err
	}
	if len(cla.GetNamedEndpoints()) > 0 {
		return nil, fmt.Errorf("named_endpoints: %w", ErrUnsupported)
	}
	pol := cla.GetPolicy()
	if err := onlyFields(pol, "drop_overloads", "overprovisioning_factor"); err != nil {
		return nil, fmt.Errorf("policy.%w", err)
	}
	if len(pol.GetDropOverloads()) > 0 {
		return nil, fmt.Errorf("policy.drop_overloads: %w", ErrUnsupported)
	}
	over := uint32(upstream.DefaultOverprovisioningFactor)
	if f := pol.GetOverprovisioningFactor(); f != nil {
		if f.GetValue() == 0 {
			return nil, errors.New("policy.overprovisioning_factor: must be greater than 0")
		}
		over = f.GetValue()
	}
	var out []upstream.Endpoint
	for i, loc := range cla.GetEndpoints() {
		if err := onlyFields(loc, "locality", "lb_endpoints", "load_balancing_weight", "priority", "metadata", "proximity"); err != nil {
			return nil, fmt.Errorf("endpoints[%d].%w", i, err)
		}
		for j, lbe := range loc.GetLbEndpoints() {
			field := fmt.Sprintf("endpoints[%d].lb_endpoints[%d]", i, j)
			if err := onlyFields(lbe, "endpoint", "health_status", "metadata", "load_balancing_weight"); err != nil {
				return nil, fmt.Errorf("%s.%w", field, err)
			}
			ep := lbe.GetEndpoint()
			if ep == nil {
				return nil, fmt.Errorf("%s.endpoint is required", field)
			}
			if err := onlyFields(ep, "address", "health_check_config", "hostname", "additional_addresses"); err != nil {
				return nil, fmt.Errorf("%s.endpoint.%w", field, err)
			}
			hcc := ep.GetHealthCheckConfig()
			if err := onlyFields(hcc, "port_value"); err != nil {
				return nil, fmt.Errorf("%s.endpoint.health_check_config.%w", field, err)
			}
			addr, err := endpointAddress(ep.GetAddress())
			if err != nil {
				return nil, fmt.Errorf("%s.endpoint.address: %w", field, err)
			}
			l := loc.GetLocality()
			out = append(out, upstream.Endpoint{
				Address:        addr,
				Weight:         max(lbe.GetLoadBalancingWeight().GetValue(), 1),
				Priority:       loc.GetPriority(),
				Healthy:        pickable(lbe.GetHealthStatus()),
				Degraded:       lbe.GetHealthStatus() == corev3.HealthStatus_DEGRADED,
				Locality:       upstream.Locality{Region: l.GetRegion(), Zone: l.GetZone(), SubZone: l.GetSubZone()},
				LocalityWeight: loc.GetLoadBalancingWeight().GetValue(),
				Hostname:       ep.GetHostname(),
				IstioWorkload:  istioWorkload(lbe.GetMetadata()),
				TransportSocketMatch: metadataValues(
					lbe.GetMetadata().GetFilterMetadata()[transportSocketMatchKey]),
				HealthCheckPort:  hcc.GetPortValue(),
				Overprovisioning: over,
			})
		}
	}
	return out, nil
}

func pickable(s corev3.HealthStatus) bool {
	switch s {
	case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
		return false
	}
	return true
}

// endpointAddress is socketAddress, plus Unix domain sockets (Envoy's pipe), written "unix:PATH".
func endpointAddress(a *corev3.Address) (string, error) {
	if pipe := a.GetPipe(); pipe != nil {
		if err := onlyFields(pipe, "path"); err != nil {
			return "", fmt.Errorf("pipe.%w", err)
		}
		return upstream.UnixPrefix + pipe.GetPath(), nil
	}
	return socketAddress(a)
}

// istioWorkload is an endpoint's filter_metadata["istio"]["workload"], the string Istio's telemetry
// reads the destination workload from when the peer does not say. Other metadata is accepted and
// ignored, as before.
func istioWorkload(md *corev3.Metadata) string {
	return md.GetFilterMetadata()["istio"].GetFields()["workload"].GetStringValue()
}

// transportSocketMatchKey is the endpoint metadata namespace transport_socket_matches look at.
const transportSocketMatchKey = "envoy.transport_socket_match"

func transportSocketMatch(m *clusterv3.Cluster_TransportSocketMatch, o *options) (upstream.TransportMatch, error) {
	if err := onlyFields(m, "name", "match", "transport_socket"); err != nil {
		return upstream.TransportMatch{}, err
	}
	t, err := upstreamTransportSocket(m.GetTransportSocket(), o)
	if err != nil {
		return upstream.TransportMatch{}, fmt.Errorf("transport_socket.%w", err)
	}
	return upstream.TransportMatch{Name: m.GetName(), Match: metadataValues(m.GetMatch()), TLS: t}, nil
}

// metadataValues flattens a metadata Struct for equality matching: strings as they are, other
// values in a form that cannot equal a string's (Envoy compares the protobuf Values).
func metadataValues(s *structpb.Struct) map[string]string {
	if len(s.GetFields()) == 0 {
		return nil
	}
	out := make(map[string]string, len(s.GetFields()))
	for k, v := range s.GetFields() {
		if sv, ok := v.GetKind().(*structpb.Value_StringValue); ok {
			out[k] = sv.StringValue
			continue
		}
		b, _ := protojson.Marshal(v)
		out[k] = "\x00" + string(b)
	}
	return out
}

// bindSourceIP reads the source address of an upstream_bind_config; only the address is honoured,
// so the rest (a fixed port, socket options, extra addresses) is refused.
func bindSourceIP(b *corev3.BindConfig) (netip.Addr, error) {
	if err := onlyFields(b, "source_address"); err != nil {
		return netip.Addr{}, err
	}
	sa := b.GetSourceAddress()
	if err := onlyFields(sa, "address", "port_value", "protocol"); err != nil {
		return netip.Addr{}, fmt.Errorf("source_address.%w", err)
	}
	if sa.GetPortValue() != 0 {
		return netip.Addr{}, fmt.Errorf("source_address.port_value %d: only 0 (any port): %w", sa.GetPortValue(), ErrUnsupported)
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return netip.Addr{}, fmt.Errorf("source_address.protocol %s: %w", sa.GetProtocol(), ErrUnsupported)
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("source_address.address: %w", err)
	}
	return ip, nil
}

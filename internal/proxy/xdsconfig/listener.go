package xdsconfig

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// Listener is a converted Envoy Listener: a socket serving one HTTP connection manager.
type Listener struct {
	Name    string
	Address string // host:port
	// BindToPort false means the listener owns no socket (Envoy's virtual listeners).
	BindToPort bool
	HTTP       *HTTPConnectionManager
}

// Codec is the downstream HTTP protocol a connection manager accepts.
type Codec int

// HCM codec types. Auto accepts HTTP/1.1 and cleartext HTTP/2 (prior knowledge).
const (
	CodecAuto Codec = iota
	CodecHTTP1
	CodecHTTP2
)

// ServerHeader is Envoy's server_header_transformation.
type ServerHeader int

// The transformations, in Envoy's order.
const (
	ServerHeaderOverwrite ServerHeader = iota
	ServerHeaderAppendIfAbsent
	ServerHeaderPassThrough
)

// HTTPConnectionManager is the converted envoy.filters.network.http_connection_manager.
type HTTPConnectionManager struct {
	StatPrefix string
	// RDSName names the RouteConfiguration to fetch over RDS; empty when Routes is inline.
	RDSName string
	Routes  *route.Table
	Codec   Codec

	ServerName   string
	ServerHeader ServerHeader
	// StripPort removes the port from Host before routing: any port, or only the listener's own
	// (StripPortIfMatches non-zero).
	StripAnyPort       bool
	StripPortIfMatches uint32

	GenerateRequestID            bool
	AlwaysSetRequestIDInResponse bool
	// SuppressEnvoyHeaders is the router filter's suppress_envoy_headers.
	SuppressEnvoyHeaders bool
	// IdleTimeout closes downstream connections idle this long (Envoy's default: 1h).
	IdleTimeout time.Duration

	// HTTPFilters are the http_filters before the router, in order.
	HTTPFilters []filters.Spec
	// OnComplete, when set, is called at the end of every request with its record (access logs).
	// The record is only valid during the call.
	OnComplete func(*streaminfo.Info)
}

const (
	hcmType    = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	routerType = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
	routerName = "envoy.filters.http.router"

	defaultServerName  = "envoy"
	defaultIdleTimeout = time.Hour
)

// Listener filters that only inspect a connection and never change how a single plaintext filter
// chain behaves.
var harmlessListenerFilters = map[string]bool{
	"envoy.filters.listener.tls_inspector":  true,
	"envoy.filters.listener.http_inspector": true,
}

// ParseListener converts and validates an Envoy Listener. It must have exactly one filter chain,
// without match conditions or TLS, holding only an HTTP connection manager. Access logs, socket
// options, use_original_dst and connection balancing are accepted and ignored.
func ParseListener(l *listenerv3.Listener) (*Listener, error) {
	out, err := parseListener(l)
	if err != nil {
		return nil, &ResourceError{Kind: "Listener", Name: l.GetName(), Err: err}
	}
	return out, nil
}

func parseListener(l *listenerv3.Listener) (*Listener, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	if err := onlyFields(l, "name", "address", "filter_chains", "default_filter_chain", "listener_filters",
		"listener_filters_timeout", "continue_on_listener_filters_timeout", "traffic_direction", "bind_to_port",
		"use_original_dst", "per_connection_buffer_limit_bytes", "metadata", "drain_type", "stat_prefix",
		"access_log", "tcp_backlog_size", "enable_reuse_port", "reuse_port", "connection_balance_config",
		"ignore_global_conn_limit", "max_connections_to_accept_per_socket_event", "socket_options",
		"tcp_fast_open_queue_length"); err != nil {
		return nil, err
	}
	out := &Listener{Name: l.GetName(), BindToPort: l.GetBindToPort() == nil || l.GetBindToPort().GetValue()}
	addr, err := socketAddress(l.GetAddress())
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	out.Address = addr
	for i, lf := range l.GetListenerFilters() {
		if !harmlessListenerFilters[lf.GetName()] {
			return nil, fmt.Errorf("listener_filters[%d] (%q): %w", i, lf.GetName(), ErrUnsupported)
		}
	}
	chains := l.GetFilterChains()
	field := "filter_chains[0]"
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains[:len(chains):len(chains)], dc)
		field = "default_filter_chain"
	}
	if len(chains) != 1 {
		return nil, fmt.Errorf("filter_chains: %d filter chains: only a single filter chain is %w", len(chains), ErrUnsupported)
	}
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.ParseUint(portStr, 10, 32)
	fc := chains[0]
	if err := checkFilterChain(fc, uint32(port)); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	hcm, err := parseHCM(fc.GetFilters(), uint32(port))
	if err != nil {
		return nil, fmt.Errorf("%s.%w", field, err)
	}
	out.HTTP = hcm
	return out, nil
}

func checkFilterChain(fc *listenerv3.FilterChain, port uint32) error {
	if err := onlyFields(fc, "filter_chain_match", "filters", "name", "metadata", "transport_socket_connect_timeout"); err != nil {
		return err
	}
	m := fc.GetFilterChainMatch()
	if m == nil {
		return nil
	}
	// A match that every plaintext connection to this listener satisfies changes nothing.
	if err := onlyFields(m, "transport_protocol", "destination_port"); err != nil {
		return fmt.Errorf("filter_chain_match.%w", err)
	}
	if tp := m.GetTransportProtocol(); tp != "" && tp != "raw_buffer" {
		return fmt.Errorf("filter_chain_match.transport_protocol %q: %w", tp, ErrUnsupported)
	}
	if dp := m.GetDestinationPort(); dp != nil && dp.GetValue() != port {
		return fmt.Errorf("filter_chain_match.destination_port %d differs from the listener port: %w", dp.GetValue(), ErrUnsupported)
	}
	return nil
}

func parseHCM(filters []*listenerv3.Filter, port uint32) (*HTTPConnectionManager, error) {
	if len(filters) != 1 {
		return nil, fmt.Errorf("filters: %d network filters: exactly one, %s, is supported: %w", len(filters), hcmType, ErrUnsupported)
	}
	f := filters[0]
	tc := f.GetTypedConfig()
	if tc.GetTypeUrl() != hcmType {
		return nil, fmt.Errorf("filters[0] (%q): typed_config %q: only the HTTP connection manager is %w", f.GetName(), tc.GetTypeUrl(), ErrUnsupported)
	}
	var h hcmv3.HttpConnectionManager
	if err := anypb.UnmarshalTo(tc, &h, protoUnmarshal); err != nil {
		return nil, fmt.Errorf("filters[0].typed_config: %w", err)
	}
	out, err := convertHCM(&h, port)
	if err != nil {
		return nil, fmt.Errorf("filters[0] (http_connection_manager).%w", err)
	}
	return out, nil
}

func convertHCM(h *hcmv3.HttpConnectionManager, port uint32) (*HTTPConnectionManager, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	if err := onlyFields(h, "codec_type", "stat_prefix", "rds", "route_config", "http_filters", "server_name",
		"server_header_transformation", "strip_any_host_port", "strip_matching_host_port",
		"common_http_protocol_options", "http_protocol_options", "http2_protocol_options", "use_remote_address",
		"xff_num_trusted_hops", "skip_xff_append", "generate_request_id", "preserve_external_request_id",
		"always_set_request_id_in_response", "forward_client_cert_details", "set_current_client_cert_details",
		"normalize_path", "merge_slashes", "path_with_escaped_slashes_action", "stream_idle_timeout",
		"request_timeout", "request_headers_timeout", "drain_timeout", "delayed_close_timeout",
		"max_request_headers_kb", "access_log", "access_log_options", "tracing", "upgrade_configs",
		"internal_address_config", "add_user_agent", "request_id_extension", "stream_error_on_invalid_http_message",
		"proxy_100_continue", "represent_ipv4_remote_address_as_ipv4_mapped_ipv6", "append_x_forwarded_port",
		"typed_header_validation_config"); err != nil {
		return nil, err
	}
	out := &HTTPConnectionManager{
		StatPrefix:                   h.GetStatPrefix(),
		ServerName:                   h.GetServerName(),
		GenerateRequestID:            h.GetGenerateRequestId() == nil || h.GetGenerateRequestId().GetValue(),
		AlwaysSetRequestIDInResponse: h.GetAlwaysSetRequestIdInResponse(),
		StripAnyPort:                 h.GetStripAnyHostPort(),
		IdleTimeout:                  duration(h.GetCommonHttpProtocolOptions().GetIdleTimeout(), defaultIdleTimeout),
	}
	if out.ServerName == "" {
		out.ServerName = defaultServerName
	}
	if h.GetStripMatchingHostPort() {
		out.StripPortIfMatches = port
	}
	switch h.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO:
		out.Codec = CodecAuto
	case hcmv3.HttpConnectionManager_HTTP1:
		out.Codec = CodecHTTP1
	case hcmv3.HttpConnectionManager_HTTP2:
		out.Codec = CodecHTTP2
	default:
		return nil, fmt.Errorf("codec_type %s: %w", h.GetCodecType(), ErrUnsupported)
	}
	switch h.GetServerHeaderTransformation() {
	case hcmv3.HttpConnectionManager_OVERWRITE:
		out.ServerHeader = ServerHeaderOverwrite
	case hcmv3.HttpConnectionManager_APPEND_IF_ABSENT:
		out.ServerHeader = ServerHeaderAppendIfAbsent
	case hcmv3.HttpConnectionManager_PASS_THROUGH:
		out.ServerHeader = ServerHeaderPassThrough
	}
	switch rs := h.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		if err := onlyFields(rs.Rds, "config_source", "route_config_name"); err != nil {
			return nil, fmt.Errorf("rds.%w", err)
		}
		out.RDSName = rs.Rds.GetRouteConfigName()
		if out.RDSName == "" {
			return nil, errors.New("rds.route_config_name is required")
		}
	case *hcmv3.HttpConnectionManager_RouteConfig:
		t, err := convertRouteConfiguration(rs.RouteConfig)
		if err != nil {
			return nil, fmt.Errorf("route_config: %w", err)
		}
		out.Routes = t
	default:
		return nil, fmt.Errorf("route_specifier %T: only rds and route_config are %w", rs, ErrUnsupported)
	}
	if err := httpFilters(h.GetHttpFilters(), out); err != nil {
		return nil, err
	}
	return out, nil
}

package xdsconfig

import (
	"errors"
	"fmt"
	"strings"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/accesslog"
	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/tracing"
)

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
	// MaxRequestHeadersBytes bounds a request's headers (max_request_headers_kb, default 60 KiB);
	// larger ones are answered 431.
	MaxRequestHeadersBytes int

	// NormalizePath resolves dot segments (RFC 3986) before routing and forwarding; MergeSlashes
	// collapses runs of slashes; EscapedSlashes is path_with_escaped_slashes_action.
	NormalizePath  bool
	MergeSlashes   bool
	EscapedSlashes EscapedSlashes
	// UseRemoteAddress appends the downstream connection's address to X-Forwarded-For (unless
	// SkipXFFAppend) and lets it decide X-Forwarded-Proto, as Envoy's use_remote_address.
	UseRemoteAddress, SkipXFFAppend bool
	// XFFNumTrustedHops is xff_num_trusted_hops: how many proxies in front of this one appended to
	// X-Forwarded-For and are trusted (the client's address for RBAC remote_ip).
	XFFNumTrustedHops uint32
	// ForwardClientCert and SetCurrentClientCert are forward_client_cert_details and
	// set_current_client_cert_details: what becomes of x-forwarded-client-cert (XFCC).
	ForwardClientCert    ForwardClientCert
	SetCurrentClientCert ClientCertDetails
	// AccessLogs are the HCM's access_log entries, each called when a request ends.
	AccessLogs []accesslog.Logger
	// Tracing is the HCM's tracing (provider, sampling, custom tags); nil traces nothing.
	Tracing *tracing.Config
	// Upgrades are upgrade_configs: the Upgrade types (lower case) forwarded, and whether each is
	// enabled. An Upgrade request of a type not listed, or disabled, is refused with 403.
	Upgrades []UpgradeConfig

	// Inbound is the listener's traffic_direction INBOUND: filters that report a side (Istio's
	// stats) take it from here.
	Inbound bool
	// HTTPFilters are the http_filters before the router, in order.
	HTTPFilters []filters.Spec
	// OnComplete, when set, is called at the end of every request with its record (access logs).
	// The record is only valid during the call.
	OnComplete func(*streaminfo.Info)
}

// EscapedSlashes is what the connection manager does with %2F and %5C in a request path.
type EscapedSlashes int

// Envoy's path_with_escaped_slashes_action values that trellis-proxy implements.
const (
	EscapedSlashesKeep EscapedSlashes = iota
	EscapedSlashesReject
	EscapedSlashesUnescape
)

// UpgradeConfig is one of HttpConnectionManager.upgrade_configs.
type UpgradeConfig struct {
	Type    string // lower case, e.g. "websocket"
	Enabled bool
}

// Upgrade reports whether typ is enabled and whether upgrade_configs lists it at all (a route can
// only switch upgrades on or off that the connection manager lists, as in Envoy).
func (h *HTTPConnectionManager) Upgrade(typ string) (enabled, listed bool) {
	for _, u := range h.Upgrades {
		if strings.EqualFold(u.Type, typ) {
			return u.Enabled, true
		}
	}
	return false, false
}

const (
	hcmType    = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	routerType = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
	routerName = "envoy.filters.http.router"

	defaultServerName = "envoy"
	// Envoy's max_request_headers_kb default.
	defaultMaxRequestHeadersKB = 60
	defaultIdleTimeout         = time.Hour
)

// ForwardClientCert is forward_client_cert_details.
type ForwardClientCert int

// Envoy's modes; all but AlwaysForwardOnly drop the header on connections without a client
// certificate.
const (
	XFCCSanitize          ForwardClientCert = iota // remove it (Envoy's default)
	XFCCForwardOnly                                // forward it as it came
	XFCCAppendForward                              // add this hop's element
	XFCCSanitizeSet                                // replace it with this hop's element
	XFCCAlwaysForwardOnly                          // forward it as it came, even in plaintext
)

// ClientCertDetails are the client certificate fields a hop's XFCC element carries besides By and
// Hash (set_current_client_cert_details).
type ClientCertDetails struct {
	Subject, Cert, Chain, DNS, URI bool
}

// convertHCM converts and validates an HTTP connection manager of a filter chain on port.
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
		NormalizePath:                h.GetNormalizePath().GetValue(),
		MergeSlashes:                 h.GetMergeSlashes(),
		UseRemoteAddress:             h.GetUseRemoteAddress().GetValue(),
		SkipXFFAppend:                h.GetSkipXffAppend(),
		XFFNumTrustedHops:            h.GetXffNumTrustedHops(),
		MaxRequestHeadersBytes:       defaultMaxRequestHeadersKB << 10,
	}
	if kb := h.GetMaxRequestHeadersKb(); kb != nil {
		out.MaxRequestHeadersBytes = int(kb.GetValue()) << 10
	}
	switch h.GetPathWithEscapedSlashesAction() {
	case hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, hcmv3.HttpConnectionManager_KEEP_UNCHANGED:
		out.EscapedSlashes = EscapedSlashesKeep
	case hcmv3.HttpConnectionManager_REJECT_REQUEST:
		out.EscapedSlashes = EscapedSlashesReject
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		out.EscapedSlashes = EscapedSlashesUnescape
	default:
		return nil, fmt.Errorf("path_with_escaped_slashes_action %s: %w", h.GetPathWithEscapedSlashesAction(), ErrUnsupported)
	}
	switch h.GetForwardClientCertDetails() {
	case hcmv3.HttpConnectionManager_SANITIZE:
		out.ForwardClientCert = XFCCSanitize
	case hcmv3.HttpConnectionManager_FORWARD_ONLY:
		out.ForwardClientCert = XFCCForwardOnly
	case hcmv3.HttpConnectionManager_APPEND_FORWARD:
		out.ForwardClientCert = XFCCAppendForward
	case hcmv3.HttpConnectionManager_SANITIZE_SET:
		out.ForwardClientCert = XFCCSanitizeSet
	case hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY:
		out.ForwardClientCert = XFCCAlwaysForwardOnly
	default:
		return nil, fmt.Errorf("forward_client_cert_details %s: %w", h.GetForwardClientCertDetails(), ErrUnsupported)
	}
	if d := h.GetSetCurrentClientCertDetails(); d != nil {
		out.SetCurrentClientCert = ClientCertDetails{Subject: d.GetSubject().GetValue(), Cert: d.GetCert(),
			Chain: d.GetChain(), DNS: d.GetDns(), URI: d.GetUri()}
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
	for i, u := range h.GetUpgradeConfigs() {
		if err := onlyFields(u, "upgrade_type", "enabled"); err != nil {
			return nil, fmt.Errorf("upgrade_configs[%d].%w", i, err)
		}
		if strings.EqualFold(u.GetUpgradeType(), "CONNECT") {
			return nil, fmt.Errorf("upgrade_configs[%d].upgrade_type CONNECT: %w", i, ErrUnsupported)
		}
		out.Upgrades = append(out.Upgrades, UpgradeConfig{
			Type:    strings.ToLower(u.GetUpgradeType()),
			Enabled: u.GetEnabled() == nil || u.GetEnabled().GetValue(),
		})
	}
	if err := httpFilters(h.GetHttpFilters(), out); err != nil {
		return nil, err
	}
	var err error
	if out.AccessLogs, err = parseAccessLogs(h.GetAccessLog()); err != nil {
		return nil, err
	}
	if out.Tracing, err = parseTracing(h.GetTracing(), false); err != nil {
		return nil, fmt.Errorf("tracing.%w", err)
	}
	if logs := out.AccessLogs; len(logs) > 0 {
		out.OnComplete = func(i *streaminfo.Info) {
			for _, l := range logs {
				l.Log(i)
			}
		}
	}
	return out, nil
}

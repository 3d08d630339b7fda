package extauthz

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// Name is the filter's canonical name; its dynamic metadata goes under it too.
const Name = "envoy.filters.http.ext_authz"

const (
	typeURL         = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
	perRouteTypeURL = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
)

// Factory registers the filter.
var Factory = &filters.Factory{
	Name:          Name,
	ConfigType:    typeURL,
	PerRouteTypes: []string{perRouteTypeURL},
	Parse: func(tc *anypb.Any, conv filters.Converters) (filters.Config, error) {
		if tc == nil {
			return nil, errors.New("typed_config is required (grpc_service or http_service)")
		}
		return parse(tc, conv)
	},
	ParsePerRoute: func(tc *anypb.Any, _ filters.Converters) (any, error) { return parsePerRoute(tc) },
}

// defaultTimeout is Envoy's for both services when none is given.
const defaultTimeout = 200 * time.Millisecond

// Config is one ExtAuthz, parsed.
type Config struct {
	// Exactly one of HTTP and GRPC is set.
	HTTP *HTTPService
	GRPC *GRPCService

	FailureModeAllow          bool
	FailureModeAllowHeaderAdd bool
	// StatusOnError is the status of the reply when the service fails and failure_mode_allow is
	// off (Envoy's default 403).
	StatusOnError int

	Body *BufferSettings // with_request_body; nil sends no body

	FilterEnabled   filters.Fraction
	EnabledMetadata *filters.MetadataMatcher // nil: every request
	DenyAtDisable   bool

	IncludePeerCertificate bool
	// StatPrefix is stat_prefix with a trailing dot, or "".
	StatPrefix string
	// MetadataContextNamespaces are the dynamic metadata namespaces sent to a gRPC service.
	MetadataContextNamespaces []string

	// allowed filters the headers sent to the service (nil: all, for gRPC without
	// allowed_headers); disallowed removes some.
	allowed, disallowed *headerMatcher
}

// HTTPService is http_service.
type HTTPService struct {
	Cluster    string
	Timeout    time.Duration
	PathPrefix string
	// HeadersToAdd are set on every check request (authorization_request.headers_to_add).
	HeadersToAdd [][2]string

	upstream, upstreamAppend, client, clientOnSuccess, toMetadata *headerMatcher
}

// GRPCService is grpc_service with envoy_grpc.
type GRPCService struct {
	Cluster   string
	Authority string
	Timeout   time.Duration
	// Metadata is initial_metadata, sent as request headers.
	Metadata [][2]string
}

// BufferSettings is with_request_body.
type BufferSettings struct {
	MaxBytes     int64
	AllowPartial bool
	PackAsBytes  bool
}

// PerRoute is an ExtAuthzPerRoute.
type PerRoute struct {
	Disabled          bool
	ContextExtensions map[string]string
	// DisableBody turns with_request_body off on the route; Body, when set, replaces it.
	DisableBody bool
	Body        *BufferSettings
}

func parse(tc *anypb.Any, conv filters.Converters) (*Config, error) {
	var p extauthzv3.ExtAuthz
	if err := filters.Unmarshal(tc, &p); err != nil {
		return nil, err
	}
	if err := filters.OnlyFields(&p, "grpc_service", "http_service", "transport_api_version", "failure_mode_allow",
		"failure_mode_allow_header_add", "with_request_body", "status_on_error", "metadata_context_namespaces",
		"filter_enabled", "filter_enabled_metadata", "deny_at_disable", "include_peer_certificate", "stat_prefix",
		"allowed_headers", "disallowed_headers"); err != nil {
		// clear_route_cache among them: filters run after routing here, so a changed request
		// cannot be routed again; refusing it beats authorizing one route and serving another.
		return nil, err
	}
	if v := p.GetTransportApiVersion(); v != corev3.ApiVersion_AUTO && v != corev3.ApiVersion_V3 {
		return nil, fmt.Errorf("transport_api_version: %s: only V3: %w", v, filters.ErrUnsupported)
	}
	c := &Config{
		FailureModeAllow:          p.GetFailureModeAllow(),
		FailureModeAllowHeaderAdd: p.GetFailureModeAllowHeaderAdd(),
		StatusOnError:             http.StatusForbidden,
		FilterEnabled:             filters.RuntimeFraction(p.GetFilterEnabled(), filters.Always),
		DenyAtDisable:             p.GetDenyAtDisable().GetDefaultValue().GetValue(),
		IncludePeerCertificate:    p.GetIncludePeerCertificate(),
		MetadataContextNamespaces: p.GetMetadataContextNamespaces(),
	}
	if s := p.GetStatPrefix(); s != "" {
		c.StatPrefix = s + "."
	}
	if s := p.GetStatusOnError(); s != nil {
		c.StatusOnError = int(s.GetCode())
	}
	if b := p.GetWithRequestBody(); b != nil {
		bs, err := bufferSettings(b)
		if err != nil {
			return nil, fmt.Errorf("with_request_body.%w", err)
		}
		c.Body = bs
	}
	if m := p.GetFilterEnabledMetadata(); m != nil {
		mm, err := filters.NewMetadataMatcher(m, conv)
		if err != nil {
			return nil, fmt.Errorf("filter_enabled_metadata.%w", err)
		}
		c.EnabledMetadata = mm
	}
	var err error
	if c.disallowed, err = listMatcher(p.GetDisallowedHeaders(), conv); err != nil {
		return nil, fmt.Errorf("disallowed_headers.%w", err)
	}
	switch {
	case p.GetGrpcService() != nil:
		if c.GRPC, err = grpcService(p.GetGrpcService()); err != nil {
			return nil, fmt.Errorf("grpc_service.%w", err)
		}
		if p.GetAllowedHeaders() != nil {
			if c.allowed, err = listMatcher(p.GetAllowedHeaders(), conv); err != nil {
				return nil, fmt.Errorf("allowed_headers.%w", err)
			}
		}
	case p.GetHttpService() != nil:
		hs := p.GetHttpService()
		//lint:ignore SA1019 Istio's envoyExtAuthzHttp still sends the deprecated list; Envoy honours it.
		legacy := hs.GetAuthorizationRequest().GetAllowedHeaders()
		if p.GetAllowedHeaders() != nil && legacy != nil {
			return nil, errors.New("allowed_headers: set both here and in http_service.authorization_request")
		}
		allowed := p.GetAllowedHeaders()
		if legacy != nil {
			allowed = legacy
		}
		// An HTTP service always gets these, whatever the list says (Envoy's toRequestMatchers).
		if c.allowed, err = listMatcher(allowed, conv, "authorization", ":method", ":path", ":authority"); err != nil {
			return nil, fmt.Errorf("allowed_headers.%w", err)
		}
		if c.HTTP, err = httpService(hs, conv); err != nil {
			return nil, fmt.Errorf("http_service.%w", err)
		}
	default:
		return nil, errors.New("one of grpc_service or http_service is required")
	}
	return c, nil
}

func bufferSettings(b *extauthzv3.BufferSettings) (*BufferSettings, error) {
	if err := filters.OnlyFields(b, "max_request_bytes", "allow_partial_message", "pack_as_bytes"); err != nil {
		return nil, err
	}
	if b.GetMaxRequestBytes() == 0 {
		return nil, errors.New("max_request_bytes: must be positive")
	}
	return &BufferSettings{MaxBytes: int64(b.GetMaxRequestBytes()), AllowPartial: b.GetAllowPartialMessage(), PackAsBytes: b.GetPackAsBytes()}, nil
}

func grpcService(g *corev3.GrpcService) (*GRPCService, error) {
	if err := filters.OnlyFields(g, "envoy_grpc", "timeout", "initial_metadata"); err != nil {
		return nil, err // google_grpc among them: the call goes through the proxy's clusters
	}
	eg := g.GetEnvoyGrpc()
	if eg == nil {
		return nil, errors.New("envoy_grpc is required")
	}
	if err := filters.OnlyFields(eg, "cluster_name", "authority"); err != nil {
		return nil, fmt.Errorf("envoy_grpc.%w", err)
	}
	s := &GRPCService{Cluster: eg.GetClusterName(), Authority: eg.GetAuthority(), Timeout: defaultTimeout}
	if s.Authority == "" {
		s.Authority = s.Cluster // Envoy's default :authority for envoy_grpc
	}
	if t := g.GetTimeout(); t != nil {
		s.Timeout = t.AsDuration()
	}
	for i, h := range g.GetInitialMetadata() {
		if h.GetRawValue() != nil {
			return nil, fmt.Errorf("initial_metadata[%d].raw_value: %w", i, filters.ErrUnsupported)
		}
		s.Metadata = append(s.Metadata, [2]string{h.GetKey(), h.GetValue()})
	}
	return s, nil
}

func httpService(h *extauthzv3.HttpService, conv filters.Converters) (*HTTPService, error) {
	if err := filters.OnlyFields(h, "server_uri", "path_prefix", "authorization_request", "authorization_response"); err != nil {
		return nil, err
	}
	u := h.GetServerUri()
	if err := filters.OnlyFields(u, "uri", "cluster", "timeout"); err != nil {
		return nil, fmt.Errorf("server_uri.%w", err)
	}
	if u.GetCluster() == "" {
		return nil, errors.New("server_uri.cluster is required")
	}
	s := &HTTPService{Cluster: u.GetCluster(), Timeout: defaultTimeout, PathPrefix: h.GetPathPrefix()}
	if t := u.GetTimeout(); t != nil {
		s.Timeout = t.AsDuration()
	}
	if s.PathPrefix != "" && !strings.HasPrefix(s.PathPrefix, "/") {
		return nil, fmt.Errorf("path_prefix: %q must start with /", s.PathPrefix)
	}
	if r := h.GetAuthorizationRequest(); r != nil {
		if err := filters.OnlyFields(r, "allowed_headers", "headers_to_add"); err != nil {
			return nil, fmt.Errorf("authorization_request.%w", err)
		}
		for i, hv := range r.GetHeadersToAdd() {
			if hv.GetRawValue() != nil || strings.Contains(hv.GetValue(), "%") {
				// Envoy reads %...% as substitution commands; trellis-proxy sends values as they are.
				return nil, fmt.Errorf("authorization_request.headers_to_add[%d] (%q): raw_value or %%COMMAND%% values: %w", i, hv.GetKey(), filters.ErrUnsupported)
			}
			s.HeadersToAdd = append(s.HeadersToAdd, [2]string{http.CanonicalHeaderKey(hv.GetKey()), hv.GetValue()})
		}
	}
	r := h.GetAuthorizationResponse()
	if r != nil {
		if err := filters.OnlyFields(r, "allowed_upstream_headers", "allowed_upstream_headers_to_append",
			"allowed_client_headers", "allowed_client_headers_on_success", "dynamic_metadata_from_headers"); err != nil {
			return nil, fmt.Errorf("authorization_response.%w", err)
		}
	}
	var err error
	for _, m := range []struct {
		field string
		list  *matcherv3.ListStringMatcher
		out   **headerMatcher
	}{
		{"allowed_upstream_headers", r.GetAllowedUpstreamHeaders(), &s.upstream},
		{"allowed_upstream_headers_to_append", r.GetAllowedUpstreamHeadersToAppend(), &s.upstreamAppend},
		{"allowed_client_headers", r.GetAllowedClientHeaders(), &s.client},
		{"allowed_client_headers_on_success", r.GetAllowedClientHeadersOnSuccess(), &s.clientOnSuccess},
		{"dynamic_metadata_from_headers", r.GetDynamicMetadataFromHeaders(), &s.toMetadata},
	} {
		var extra []string
		if m.field == "allowed_client_headers" && len(m.list.GetPatterns()) > 0 {
			// With a list, these always go to the client too (Envoy's toClientMatchers).
			extra = []string{"content-length", "www-authenticate", "location"}
		}
		if *m.out, err = listMatcher(m.list, conv, extra...); err != nil {
			return nil, fmt.Errorf("authorization_response.%s.%w", m.field, err)
		}
	}
	if len(r.GetAllowedClientHeaders().GetPatterns()) == 0 {
		// Without a list, every header of a denial but Host goes to the client.
		s.client = &headerMatcher{all: true, except: "host"}
	}
	return s, nil
}

func parsePerRoute(tc *anypb.Any) (*PerRoute, error) {
	var p extauthzv3.ExtAuthzPerRoute
	if err := filters.Unmarshal(tc, &p); err != nil {
		return nil, err
	}
	if err := filters.OnlyFields(&p, "disabled", "check_settings"); err != nil {
		return nil, err
	}
	pr := &PerRoute{Disabled: p.GetDisabled()}
	if cs := p.GetCheckSettings(); cs != nil {
		if err := filters.OnlyFields(cs, "context_extensions", "disable_request_body_buffering", "with_request_body"); err != nil {
			return nil, fmt.Errorf("check_settings.%w", err)
		}
		pr.ContextExtensions = cs.GetContextExtensions()
		pr.DisableBody = cs.GetDisableRequestBodyBuffering()
		if b := cs.GetWithRequestBody(); b != nil {
			bs, err := bufferSettings(b)
			if err != nil {
				return nil, fmt.Errorf("check_settings.with_request_body.%w", err)
			}
			pr.Body = bs
		}
	}
	return pr, nil
}

// headerMatcher matches lower-case header names against a ListStringMatcher.
type headerMatcher struct {
	patterns []route.StringMatcher
	// all matches every name but except (Envoy's NotHeaderKeyMatcher).
	all    bool
	except string
}

func listMatcher(l *matcherv3.ListStringMatcher, conv filters.Converters, always ...string) (*headerMatcher, error) {
	m := &headerMatcher{}
	for i, p := range l.GetPatterns() {
		sm, err := conv.StringMatcher(p)
		if err != nil {
			return nil, fmt.Errorf("patterns[%d]: %w", i, err)
		}
		m.patterns = append(m.patterns, sm)
	}
	for _, name := range always {
		m.patterns = append(m.patterns, route.StringMatcher{Kind: route.StringExact, Value: name})
	}
	return m, nil
}

// match reports whether the lower-case name is in the list; a nil matcher matches nothing.
func (m *headerMatcher) match(name string) bool {
	if m == nil {
		return false
	}
	if m.all {
		return name != m.except
	}
	for i := range m.patterns {
		if m.patterns[i].Match(name) {
			return true
		}
	}
	return false
}

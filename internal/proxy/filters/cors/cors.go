// Package cors is Envoy's CORS HTTP filter (envoy.filters.http.cors): it answers CORS preflight
// requests itself and adds the Access-Control-* headers to the responses of allowed origins.
//
// Policies come from typed_per_filter_config (envoy.extensions.filters.http.cors.v3.CorsPolicy, the
// most specific level wins whole) or, for older control planes such as Istio before 1.19, from the
// deprecated cors field of the route action, then of the virtual host. Implemented: every
// CorsPolicy field but allow_private_network_access (rejected when true); filter_enabled and
// shadow_enabled use their default values (there is no runtime), and a shadow policy only records
// in Envoy, so it changes nothing here.
package cors

import (
	"context"
	"fmt"
	"net/http"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

const (
	typeURL       = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
	policyTypeURL = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
)

// Factory registers the filter.
var Factory = &filters.Factory{
	Name:          "envoy.filters.http.cors",
	ConfigType:    typeURL,
	PerRouteTypes: []string{policyTypeURL},
	Parse: func(tc *anypb.Any, _ filters.Converters) (filters.Config, error) {
		if tc != nil {
			var c corsv3.Cors
			if err := filters.Unmarshal(tc, &c); err != nil {
				return nil, err
			}
			if err := filters.OnlyFields(&c); err != nil {
				return nil, err
			}
		}
		return config{}, nil
	},
	ParsePerRoute: func(tc *anypb.Any, conv filters.Converters) (any, error) {
		var p corsv3.CorsPolicy
		if err := filters.Unmarshal(tc, &p); err != nil {
			return nil, err
		}
		if err := filters.OnlyFields(&p, "allow_origin_string_match", "allow_methods", "allow_headers",
			"expose_headers", "max_age", "allow_credentials", "filter_enabled", "shadow_enabled",
			"allow_private_network_access", "forward_not_matching_preflights"); err != nil {
			return nil, err
		}
		return newPolicy(p.GetAllowOriginStringMatch(), p.GetAllowMethods(), p.GetAllowHeaders(), p.GetExposeHeaders(),
			p.GetMaxAge(), p.GetAllowCredentials(), p.GetFilterEnabled(), p.GetAllowPrivateNetworkAccess(),
			p.GetForwardNotMatchingPreflights(), conv)
	},
}

// ParseRoutePolicy converts the deprecated route.v3.CorsPolicy of a virtual host or route action.
func ParseRoutePolicy(p *routev3.CorsPolicy, conv filters.Converters) (*Policy, error) {
	if err := filters.OnlyFields(p, "allow_origin_string_match", "allow_methods", "allow_headers",
		"expose_headers", "max_age", "allow_credentials", "filter_enabled", "shadow_enabled",
		"allow_private_network_access", "forward_not_matching_preflights"); err != nil {
		return nil, err
	}
	return newPolicy(p.GetAllowOriginStringMatch(), p.GetAllowMethods(), p.GetAllowHeaders(), p.GetExposeHeaders(),
		p.GetMaxAge(), p.GetAllowCredentials(), p.GetFilterEnabled(), p.GetAllowPrivateNetworkAccess(),
		p.GetForwardNotMatchingPreflights(), conv)
}

// Policy is one CORS policy.
type Policy struct {
	Origins                                 []route.StringMatcher
	AllowMethods, AllowHeaders, ExposeHeads string
	MaxAge                                  string
	AllowCredentials                        bool
	Enabled                                 filters.Fraction
	// ForwardNotMatchingPreflights sends preflights from origins the policy does not allow on to
	// the upstream (Envoy's default) instead of answering them without CORS headers.
	ForwardNotMatchingPreflights bool
}

func newPolicy(origins []*matcherv3.StringMatcher, methods, headers, expose, maxAge string, creds *wrapperspb.BoolValue,
	enabled *corev3.RuntimeFractionalPercent, pna, forward *wrapperspb.BoolValue, conv filters.Converters) (*Policy, error) {
	if pna.GetValue() {
		return nil, fmt.Errorf("allow_private_network_access: %w", filters.ErrUnsupported)
	}
	p := &Policy{
		AllowMethods: methods, AllowHeaders: headers, ExposeHeads: expose, MaxAge: maxAge,
		AllowCredentials:             creds.GetValue(),
		Enabled:                      filters.RuntimeFraction(enabled, filters.Always),
		ForwardNotMatchingPreflights: forward == nil || forward.GetValue(),
	}
	for i, m := range origins {
		sm, err := conv.StringMatcher(m)
		if err != nil {
			return nil, fmt.Errorf("allow_origin_string_match[%d].%w", i, err)
		}
		p.Origins = append(p.Origins, sm)
	}
	return p, nil
}

// allows is Envoy's CorsFilter::isOriginAllowed: a matcher that matches "*" allows every origin.
func (p *Policy) allows(origin string) bool {
	for i := range p.Origins {
		if p.Origins[i].Match("*") || p.Origins[i].Match(origin) {
			return true
		}
	}
	return false
}

type config struct{}

func (config) Build(filters.Env) filters.Filter { return Filter{} }

// Filter applies the request's CORS policy.
type Filter struct{}

// OnRequest implements filters.Filter.
func (Filter) OnRequest(_ context.Context, x *filters.Exchange, perRoute any) filters.Status {
	p, _ := perRoute.(*Policy)
	if p == nil && x.Route != nil {
		p, _ = x.Route.Action.CORS.(*Policy)
	}
	if p == nil && x.VirtualHost != nil {
		p, _ = x.VirtualHost.CORS.(*Policy)
	}
	if p == nil {
		return filters.Continue
	}
	origins := x.Headers["Origin"]
	if len(origins) == 0 || origins[0] == "" || !p.Enabled.Sample() {
		return filters.Continue
	}
	origin := origins[0]
	preflight := x.Method == http.MethodOptions && len(x.Headers["Access-Control-Request-Method"]) > 0 &&
		x.Headers["Access-Control-Request-Method"][0] != ""
	if !p.allows(origin) {
		if preflight && !p.ForwardNotMatchingPreflights {
			return x.SendLocalReply(filters.LocalReply{Status: http.StatusOK, Details: "cors_response"}, 0)
		}
		return filters.Continue
	}
	x.AddResponseHeader("Access-Control-Allow-Origin", origin)
	if p.AllowCredentials {
		x.AddResponseHeader("Access-Control-Allow-Credentials", "true")
	}
	if !preflight {
		if p.ExposeHeads != "" {
			x.AddResponseHeader("Access-Control-Expose-Headers", p.ExposeHeads)
		}
		return filters.Continue
	}
	if p.AllowMethods != "" {
		x.AddResponseHeader("Access-Control-Allow-Methods", p.AllowMethods)
	}
	if p.AllowHeaders != "" {
		x.AddResponseHeader("Access-Control-Allow-Headers", p.AllowHeaders)
	}
	if p.MaxAge != "" {
		x.AddResponseHeader("Access-Control-Max-Age", p.MaxAge)
	}
	return x.SendLocalReply(filters.LocalReply{Status: http.StatusOK, Details: "cors_response"}, 0)
}

package proxyadmin

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Kinds of authorization filter, by what they do.
const (
	KindJWT      = "jwt_authn" // envoy.filters.http.jwt_authn
	KindExtAuthz = "ext_authz" // envoy.filters.http.ext_authz
	KindRBAC     = "rbac"      // envoy.filters.http.rbac
	KindRBACTCP  = "rbac (tcp)"
)

// Transports of a filter chain.
const (
	TransportMTLS      = "mTLS"      // TLS requiring a client certificate
	TransportTLS       = "TLS"       // TLS without a client certificate
	TransportPlaintext = "plaintext" // no TLS
)

// ListenerAuthz is the authorization in force on one listener, per group of
// filter chains that share it.
type ListenerAuthz struct {
	Listener string `json:"listener"`
	// Direction is Envoy's traffic_direction (INBOUND, OUTBOUND or
	// UNSPECIFIED): a sidecar's inbound listeners and a gateway's listeners
	// are where AuthorizationPolicy applies.
	Direction string       `json:"direction"`
	Chains    []ChainAuthz `json:"chains"`
}

// ChainAuthz is one set of filter chains with the same authorization.
type ChainAuthz struct {
	// Chains names the chains (a chain without a name is "#<index>").
	Chains []Chain `json:"filter_chains"`
	// Filters are the authorization filters in the order requests meet them;
	// empty means every request this chain accepts is allowed.
	Filters []Filter `json:"filters"`
}

// Chain is a filter chain and how clients reach it.
type Chain struct {
	Name      string `json:"name"`
	Transport string `json:"transport"` // TransportMTLS, TransportTLS or TransportPlaintext
}

// Filter is one authorization filter.
type Filter struct {
	Kind string `json:"kind"`
	// Action is RBAC's (ALLOW, DENY, LOG: Istio's AUDIT), "SHADOW <action>"
	// for rules that are evaluated and never enforced, CUSTOM for ext_authz,
	// AUTHENTICATE for jwt_authn.
	Action string `json:"action"`
	// Policies are RBAC's policy names, Istio's ns[<ns>]-policy[<name>]-rule[<i>],
	// sorted as Envoy tries them. Empty with an ALLOW action: nothing is allowed.
	Policies []string `json:"policies,omitempty"`
	// StatPrefix is the RBAC rules' (or shadow rules') stat prefix.
	StatPrefix string `json:"stat_prefix,omitempty"`
	// Providers are jwt_authn's, by name.
	Providers []JWTProvider `json:"providers,omitempty"`
	// Requirements summarise jwt_authn's rules, e.g. "prefix /: any of [p] or missing".
	Requirements []string `json:"requirements,omitempty"`
	// ExtAuthz is ext_authz's authorization service.
	ExtAuthz *ExtAuthz `json:"ext_authz,omitempty"`
}

// JWTProvider is a jwt_authn provider.
type JWTProvider struct {
	Name      string   `json:"name"`
	Issuer    string   `json:"issuer"`
	Audiences []string `json:"audiences,omitempty"`
	// JWKS says where the keys come from: a URL (with its cluster) or inline.
	JWKS string `json:"jwks"`
	// From lists where the token is read: "header authorization (Bearer )", "param token".
	From []string `json:"from,omitempty"`
}

// ExtAuthz is an ext_authz filter's authorization service.
type ExtAuthz struct {
	Protocol string `json:"protocol"` // "http" or "grpc"
	URI      string `json:"uri,omitempty"`
	Cluster  string `json:"cluster"`
	// PathPrefix is prepended to the checked request's path (HTTP).
	PathPrefix  string `json:"path_prefix,omitempty"`
	FailureOpen bool   `json:"failure_mode_allow"`
	// EnabledBy says which requests are checked ("" for all), e.g. Istio's
	// "envoy.filters.http.rbac istio_ext_authz_shadow_effective_policy_id prefix istio-ext-authz".
	EnabledBy string `json:"enabled_by,omitempty"`
}

// Authz reads the authorization filters of every listener in d. Listeners
// without any are listed when inbound (so "nothing applies" is visible) and
// skipped otherwise; skipped counts them.
func Authz(d *adminv3.ConfigDump) (out []ListenerAuthz, skipped int, err error) {
	for _, l := range listeners(d) {
		la := ListenerAuthz{Listener: l.GetName(), Direction: l.GetTrafficDirection().String()}
		chains := slices.Clone(l.GetFilterChains())
		if dc := l.GetDefaultFilterChain(); dc != nil {
			chains = append(chains, dc)
		}
		hasAuthz := false
		for i, fc := range chains {
			filters, err := chainFilters(fc)
			if err != nil {
				return nil, 0, fmt.Errorf("listener %s: filter chain %s: %w", l.GetName(), chainName(fc, i), err)
			}
			hasAuthz = hasAuthz || len(filters) > 0
			ch := Chain{Name: chainName(fc, i), Transport: transport(fc)}
			if j := slices.IndexFunc(la.Chains, func(c ChainAuthz) bool { return sameFilters(c.Filters, filters) }); j >= 0 {
				la.Chains[j].Chains = append(la.Chains[j].Chains, ch)
				continue
			}
			la.Chains = append(la.Chains, ChainAuthz{Chains: []Chain{ch}, Filters: filters})
		}
		if !hasAuthz && l.GetTrafficDirection() != corev3.TrafficDirection_INBOUND {
			skipped++
			continue
		}
		out = append(out, la)
	}
	return out, skipped, nil
}

// listeners are the dump's static and active dynamic listeners, in its order.
func listeners(d *adminv3.ConfigDump) []*listenerv3.Listener {
	var out []*listenerv3.Listener
	add := func(a *anypb.Any) {
		l := &listenerv3.Listener{}
		if a != nil && a.UnmarshalTo(l) == nil {
			out = append(out, l)
		}
	}
	for _, a := range d.GetConfigs() {
		ld := &adminv3.ListenersConfigDump{}
		if !a.MessageIs(ld) || a.UnmarshalTo(ld) != nil {
			continue
		}
		for _, s := range ld.GetStaticListeners() {
			add(s.GetListener())
		}
		for _, dl := range ld.GetDynamicListeners() {
			add(dl.GetActiveState().GetListener())
		}
	}
	return out
}

func chainName(fc *listenerv3.FilterChain, i int) string {
	if fc.GetName() != "" {
		return fc.GetName()
	}
	return fmt.Sprintf("#%d", i)
}

func transport(fc *listenerv3.FilterChain) string {
	ts := fc.GetTransportSocket()
	dtc := &tlsv3.DownstreamTlsContext{}
	if ts == nil || !ts.GetTypedConfig().MessageIs(dtc) || ts.GetTypedConfig().UnmarshalTo(dtc) != nil {
		return TransportPlaintext
	}
	if dtc.GetRequireClientCertificate().GetValue() {
		return TransportMTLS
	}
	return TransportTLS
}

// chainFilters are a chain's authorization filters: network RBAC, then the
// HTTP filters of its connection manager, in order.
func chainFilters(fc *listenerv3.FilterChain) ([]Filter, error) {
	var out []Filter
	for _, nf := range fc.GetFilters() {
		tc := nf.GetTypedConfig()
		switch {
		case tc.MessageIs(&rbacnetv3.RBAC{}):
			r := &rbacnetv3.RBAC{}
			if err := tc.UnmarshalTo(r); err != nil {
				return nil, fmt.Errorf("%s: %w", nf.GetName(), err)
			}
			out = append(out, rbacFilters(KindRBACTCP, r.GetRules(), r.GetStatPrefix(), r.GetShadowRules(), r.GetShadowRulesStatPrefix())...)
		case tc.MessageIs(&hcmv3.HttpConnectionManager{}):
			h := &hcmv3.HttpConnectionManager{}
			if err := tc.UnmarshalTo(h); err != nil {
				return nil, fmt.Errorf("%s: %w", nf.GetName(), err)
			}
			for _, hf := range h.GetHttpFilters() {
				f, err := httpFilter(hf)
				if err != nil {
					return nil, fmt.Errorf("http_filters %s: %w", hf.GetName(), err)
				}
				out = append(out, f...)
			}
		}
	}
	return out, nil
}

func httpFilter(hf *hcmv3.HttpFilter) ([]Filter, error) {
	tc := hf.GetTypedConfig()
	if hf.GetDisabled() {
		return nil, nil // only routes that enable it run it; Istio does not do that for authz
	}
	switch {
	case tc.MessageIs(&rbachttpv3.RBAC{}):
		r := &rbachttpv3.RBAC{}
		if err := tc.UnmarshalTo(r); err != nil {
			return nil, err
		}
		return rbacFilters(KindRBAC, r.GetRules(), r.GetRulesStatPrefix(), r.GetShadowRules(), r.GetShadowRulesStatPrefix()), nil
	case tc.MessageIs(&jwtv3.JwtAuthentication{}):
		j := &jwtv3.JwtAuthentication{}
		if err := tc.UnmarshalTo(j); err != nil {
			return nil, err
		}
		return []Filter{jwtFilter(j)}, nil
	case tc.MessageIs(&extauthzv3.ExtAuthz{}):
		e := &extauthzv3.ExtAuthz{}
		if err := tc.UnmarshalTo(e); err != nil {
			return nil, err
		}
		return []Filter{extAuthzFilter(e)}, nil
	}
	return nil, nil
}

// rbacFilters describes an RBAC filter: its enforced rules (if any) and its
// shadow rules (if any), each as one Filter.
func rbacFilters(kind string, rules *rbacv3.RBAC, prefix string, shadow *rbacv3.RBAC, shadowPrefix string) []Filter {
	var out []Filter
	if rules != nil {
		out = append(out, Filter{Kind: kind, Action: rules.GetAction().String(), Policies: slices.Sorted(maps.Keys(rules.GetPolicies())), StatPrefix: prefix})
	}
	if shadow != nil {
		out = append(out, Filter{Kind: kind, Action: "SHADOW " + shadow.GetAction().String(), Policies: slices.Sorted(maps.Keys(shadow.GetPolicies())), StatPrefix: shadowPrefix})
	}
	return out
}

func jwtFilter(j *jwtv3.JwtAuthentication) Filter {
	f := Filter{Kind: KindJWT, Action: "AUTHENTICATE"}
	for _, name := range slices.Sorted(maps.Keys(j.GetProviders())) {
		p := j.GetProviders()[name]
		jp := JWTProvider{Name: name, Issuer: p.GetIssuer(), Audiences: p.GetAudiences()}
		switch {
		case p.GetRemoteJwks() != nil:
			u := p.GetRemoteJwks().GetHttpUri()
			jp.JWKS = fmt.Sprintf("%s (cluster %s)", u.GetUri(), u.GetCluster())
		case p.GetLocalJwks() != nil:
			jp.JWKS = "inline"
			if fn := p.GetLocalJwks().GetFilename(); fn != "" {
				jp.JWKS = "file " + fn
			}
		}
		for _, h := range p.GetFromHeaders() {
			jp.From = append(jp.From, fmt.Sprintf("header %s %q", h.GetName(), h.GetValuePrefix()))
		}
		for _, q := range p.GetFromParams() {
			jp.From = append(jp.From, "param "+q)
		}
		for _, c := range p.GetFromCookies() {
			jp.From = append(jp.From, "cookie "+c)
		}
		if len(jp.From) == 0 {
			jp.From = []string{`header authorization "Bearer "`, "param access_token"}
		}
		f.Providers = append(f.Providers, jp)
	}
	for _, r := range j.GetRules() {
		var req string
		switch t := r.GetRequirementType().(type) {
		case *jwtv3.RequirementRule_Requires:
			req = requirement(t.Requires)
		case *jwtv3.RequirementRule_RequirementName:
			req = requirement(j.GetRequirementMap()[t.RequirementName])
		default:
			req = "none"
		}
		f.Requirements = append(f.Requirements, routeMatch(r)+": "+req)
	}
	return f
}

func routeMatch(r *jwtv3.RequirementRule) string {
	m := r.GetMatch()
	switch {
	case m.GetPrefix() != "":
		return "prefix " + m.GetPrefix()
	case m.GetPath() != "":
		return "path " + m.GetPath()
	case m.GetPathSeparatedPrefix() != "":
		return "path_separated_prefix " + m.GetPathSeparatedPrefix()
	case m.GetSafeRegex() != nil:
		return "regex " + m.GetSafeRegex().GetRegex()
	}
	return "any"
}

// requirement writes a JwtRequirement as "any of [a, b, missing]" and the like.
func requirement(r *jwtv3.JwtRequirement) string {
	switch t := r.GetRequiresType().(type) {
	case *jwtv3.JwtRequirement_ProviderName:
		return t.ProviderName
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		return fmt.Sprintf("%s (audiences %s)", t.ProviderAndAudiences.GetProviderName(), strings.Join(t.ProviderAndAudiences.GetAudiences(), ", "))
	case *jwtv3.JwtRequirement_RequiresAny:
		return "any of [" + requirements(t.RequiresAny.GetRequirements()) + "]"
	case *jwtv3.JwtRequirement_RequiresAll:
		return "all of [" + requirements(t.RequiresAll.GetRequirements()) + "]"
	case *jwtv3.JwtRequirement_AllowMissing:
		return "missing"
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return "missing or failed"
	case *jwtv3.JwtRequirement_ExtractOnlyWithoutValidation:
		return "extract only"
	}
	return "none"
}

func requirements(rs []*jwtv3.JwtRequirement) string {
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		parts = append(parts, requirement(r))
	}
	return strings.Join(parts, ", ")
}

func extAuthzFilter(e *extauthzv3.ExtAuthz) Filter {
	x := &ExtAuthz{FailureOpen: e.GetFailureModeAllow()}
	switch s := e.GetServices().(type) {
	case *extauthzv3.ExtAuthz_HttpService:
		x.Protocol = "http"
		x.URI = s.HttpService.GetServerUri().GetUri()
		x.Cluster = s.HttpService.GetServerUri().GetCluster()
		x.PathPrefix = s.HttpService.GetPathPrefix()
	case *extauthzv3.ExtAuthz_GrpcService:
		x.Protocol = "grpc"
		x.Cluster = s.GrpcService.GetEnvoyGrpc().GetClusterName()
	}
	if m := e.GetFilterEnabledMetadata(); m != nil {
		var path []string
		for _, p := range m.GetPath() {
			path = append(path, p.GetKey())
		}
		x.EnabledBy = fmt.Sprintf("metadata %s %s", m.GetFilter(), strings.Join(path, "."))
		if sm := m.GetValue().GetStringMatch(); sm != nil {
			switch {
			case sm.GetPrefix() != "":
				x.EnabledBy += " prefix " + sm.GetPrefix()
			case sm.GetExact() != "":
				x.EnabledBy += " exact " + sm.GetExact()
			}
		}
	}
	return Filter{Kind: KindExtAuthz, Action: "CUSTOM", ExtAuthz: x}
}

// sameFilters: chains told apart only by transport (PERMISSIVE's mTLS and
// plaintext chains) are shown once.
func sameFilters(a, b []Filter) bool { return reflect.DeepEqual(a, b) }

package xdsconfig

import (
	"errors"
	"fmt"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/hashpolicy"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// parseHashPolicy converts RouteAction.hash_policy (nil when empty). filter_state is rejected:
// trellis-proxy has no filter state to read.
func parseHashPolicy(ps []*routev3.RouteAction_HashPolicy) (*hashpolicy.Policy, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	out := &hashpolicy.Policy{Methods: make([]hashpolicy.Method, 0, len(ps))}
	for i, p := range ps {
		m, err := hashMethod(p)
		if err != nil {
			return nil, fmt.Errorf("hash_policy[%d].%w", i, err)
		}
		out.Methods = append(out.Methods, m)
	}
	return out, nil
}

func hashMethod(p *routev3.RouteAction_HashPolicy) (hashpolicy.Method, error) {
	m := hashpolicy.Method{Terminal: p.GetTerminal()}
	if err := onlyFields(p, "header", "cookie", "connection_properties", "query_parameter", "filter_state", "terminal"); err != nil {
		return m, err
	}
	switch s := p.GetPolicySpecifier().(type) {
	case *routev3.RouteAction_HashPolicy_Header_:
		h := s.Header
		if err := onlyFields(h, "header_name", "regex_rewrite"); err != nil {
			return m, fmt.Errorf("header.%w", err)
		}
		key, err := headerKey(h.GetHeaderName())
		if err != nil {
			return m, fmt.Errorf("header.header_name: %w", err)
		}
		m.Kind, m.Name = hashpolicy.Header, key
		if rr := h.GetRegexRewrite(); rr != nil {
			re, err := regexpCompile(rr.GetPattern().GetRegex())
			if err != nil {
				return m, fmt.Errorf("header.regex_rewrite.pattern: %w", err)
			}
			m.Regex, m.Substitution = re, route.EnvoySubstitution(rr.GetSubstitution())
		}
	case *routev3.RouteAction_HashPolicy_Cookie_:
		c := s.Cookie
		if err := onlyFields(c, "name", "ttl", "path", "attributes"); err != nil {
			return m, fmt.Errorf("cookie.%w", err)
		}
		if len(c.GetAttributes()) > 0 {
			return m, fmt.Errorf("cookie.attributes: %w", ErrUnsupported)
		}
		if c.GetName() == "" || strings.ContainsAny(c.GetName(), "=;, \t\"") {
			return m, fmt.Errorf("cookie.name: %q is not a cookie name", c.GetName())
		}
		if strings.ContainsAny(c.GetPath(), ";\r\n") {
			return m, fmt.Errorf("cookie.path: %q cannot appear in a Set-Cookie header", c.GetPath())
		}
		m.Kind, m.Name, m.CookiePath = hashpolicy.Cookie, c.GetName(), c.GetPath()
		if c.GetTtl() != nil {
			m.HasTTL, m.CookieTTL = true, c.GetTtl().AsDuration()
		}
	case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
		if err := onlyFields(s.ConnectionProperties, "source_ip"); err != nil {
			return m, fmt.Errorf("connection_properties.%w", err)
		}
		if !s.ConnectionProperties.GetSourceIp() {
			return m, errors.New("connection_properties.source_ip: must be true")
		}
		m.Kind = hashpolicy.SourceIP
	case *routev3.RouteAction_HashPolicy_QueryParameter_:
		if err := onlyFields(s.QueryParameter, "name"); err != nil {
			return m, fmt.Errorf("query_parameter.%w", err)
		}
		if s.QueryParameter.GetName() == "" {
			return m, errors.New("query_parameter.name is required")
		}
		m.Kind, m.Name = hashpolicy.QueryParameter, s.QueryParameter.GetName()
	case *routev3.RouteAction_HashPolicy_FilterState_:
		return m, fmt.Errorf("filter_state: %w", ErrUnsupported)
	default:
		return m, errors.New("policy_specifier is required")
	}
	return m, nil
}

package rbac

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
)

// compile turns an RBAC config into an engine; nil config gives a nil engine (no rules: the filter
// lets everything through, as Envoy's does without an engine).
func compile(r *rbacv3.RBAC, conv filters.Converters) (*Engine, error) {
	if r == nil {
		return nil, nil
	}
	if err := filters.OnlyFields(r, "action", "policies"); err != nil {
		return nil, err
	}
	e := &Engine{}
	switch r.GetAction() {
	case rbacv3.RBAC_ALLOW:
		e.action = Allow
	case rbacv3.RBAC_DENY:
		e.action = Deny
	case rbacv3.RBAC_LOG:
		e.action = Log
	default:
		return nil, fmt.Errorf("action %s: %w", r.GetAction(), filters.ErrUnsupported)
	}
	names := make([]string, 0, len(r.GetPolicies()))
	for name := range r.GetPolicies() {
		names = append(names, name)
	}
	slices.Sort(names) // Envoy keeps policies in a std::map: the first match in name order wins
	c := compiler{conv: conv}
	for _, name := range names {
		p, err := c.policy(name, r.GetPolicies()[name])
		if err != nil {
			return nil, fmt.Errorf("policies[%q].%w", name, err)
		}
		e.policies = append(e.policies, p)
	}
	e.needs = c.needs
	return e, nil
}

type compiler struct {
	conv  filters.Converters
	needs needs
}

func (c *compiler) policy(name string, p *rbacv3.Policy) (policy, error) {
	out := policy{name: name, details: deniedDetails(name), nameValue: structpb.NewStringValue(name)}
	if err := filters.OnlyFields(p, "permissions", "principals"); err != nil {
		return out, err
	}
	if len(p.GetPermissions()) == 0 || len(p.GetPrincipals()) == 0 {
		return out, errors.New("a policy needs at least one permission and one principal")
	}
	for i, perm := range p.GetPermissions() {
		m, err := c.permission(perm)
		if err != nil {
			return out, fmt.Errorf("permissions[%d].%w", i, err)
		}
		out.permissions = append(out.permissions, m)
	}
	for i, id := range p.GetPrincipals() {
		m, err := c.principal(id)
		if err != nil {
			return out, fmt.Errorf("principals[%d].%w", i, err)
		}
		out.principals = append(out.principals, m)
	}
	return out, nil
}

func (c *compiler) permission(p *rbacv3.Permission) (matcher, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_AndRules:
		m, err := c.permissionSet(r.AndRules.GetRules())
		return andMatcher(m), prefixErr("and_rules", err)
	case *rbacv3.Permission_OrRules:
		m, err := c.permissionSet(r.OrRules.GetRules())
		return orMatcher(m), prefixErr("or_rules", err)
	case *rbacv3.Permission_NotRule:
		m, err := c.permission(r.NotRule)
		return notMatcher{m}, prefixErr("not_rule.", err)
	case *rbacv3.Permission_Any:
		if !r.Any {
			return nil, errors.New("any: must be true")
		}
		return anyMatcher{}, nil
	case *rbacv3.Permission_Header:
		m, err := c.header(r.Header)
		return m, prefixErr("header.", err)
	case *rbacv3.Permission_UrlPath:
		m, err := c.path(r.UrlPath)
		return m, prefixErr("url_path.", err)
	case *rbacv3.Permission_DestinationIp:
		c.needs |= needLocal
		m, err := cidr(r.DestinationIp, localAddr)
		return m, prefixErr("destination_ip.", err)
	case *rbacv3.Permission_DestinationPort:
		if r.DestinationPort > 65535 {
			return nil, fmt.Errorf("destination_port: %d is not a port", r.DestinationPort)
		}
		c.needs |= needLocal
		return portMatcher{uint16(r.DestinationPort)}, nil
	case *rbacv3.Permission_DestinationPortRange:
		start, end := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		if start < 0 || start > 65536 || end < 0 || end > 65536 || start >= end {
			return nil, fmt.Errorf("destination_port_range: [%d, %d) is not a port range", start, end)
		}
		c.needs |= needLocal
		return portRangeMatcher{start, end}, nil
	case *rbacv3.Permission_RequestedServerName:
		s, err := c.conv.StringMatcher(r.RequestedServerName)
		if err != nil {
			return nil, fmt.Errorf("requested_server_name.%w", err)
		}
		return &serverNameMatcher{s}, nil
	case *rbacv3.Permission_Metadata:
		//lint:ignore SA1019 deprecated for sourced_metadata, but what Istio emits
		m, err := c.metadata(r.Metadata)
		return m, prefixErr("metadata.", err)
	case *rbacv3.Permission_SourcedMetadata:
		m, err := c.sourcedMetadata(r.SourcedMetadata)
		return m, prefixErr("sourced_metadata.", err)
	case *rbacv3.Permission_UriTemplate:
		return nil, fmt.Errorf("uri_template: %w", filters.ErrUnsupported)
	case *rbacv3.Permission_Matcher:
		return nil, fmt.Errorf("matcher: %w", filters.ErrUnsupported)
	case nil:
		return nil, errors.New("rule: required")
	default:
		return nil, fmt.Errorf("rule %T: %w", r, filters.ErrUnsupported)
	}
}

func (c *compiler) permissionSet(rules []*rbacv3.Permission) ([]matcher, error) {
	if len(rules) == 0 {
		return nil, errors.New(".rules: at least one rule is required")
	}
	out := make([]matcher, 0, len(rules))
	for i, r := range rules {
		m, err := c.permission(r)
		if err != nil {
			return nil, fmt.Errorf(".rules[%d].%w", i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func (c *compiler) principal(p *rbacv3.Principal) (matcher, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_AndIds:
		m, err := c.principalSet(id.AndIds.GetIds())
		return andMatcher(m), prefixErr("and_ids", err)
	case *rbacv3.Principal_OrIds:
		m, err := c.principalSet(id.OrIds.GetIds())
		return orMatcher(m), prefixErr("or_ids", err)
	case *rbacv3.Principal_NotId:
		m, err := c.principal(id.NotId)
		return notMatcher{m}, prefixErr("not_id.", err)
	case *rbacv3.Principal_Any:
		if !id.Any {
			return nil, errors.New("any: must be true")
		}
		return anyMatcher{}, nil
	case *rbacv3.Principal_Authenticated_:
		if err := filters.OnlyFields(id.Authenticated, "principal_name"); err != nil {
			return nil, fmt.Errorf("authenticated.%w", err)
		}
		m := &authenticatedMatcher{}
		if pn := id.Authenticated.GetPrincipalName(); pn != nil {
			s, err := c.conv.StringMatcher(pn)
			if err != nil {
				return nil, fmt.Errorf("authenticated.principal_name.%w", err)
			}
			m.name = &s
		}
		return m, nil
	case *rbacv3.Principal_SourceIp:
		c.needs |= needDirect
		//lint:ignore SA1019 deprecated for direct_remote_ip, but still valid config
		m, err := cidr(id.SourceIp, directRemoteAddr)
		return m, prefixErr("source_ip.", err)
	case *rbacv3.Principal_DirectRemoteIp:
		c.needs |= needDirect
		m, err := cidr(id.DirectRemoteIp, directRemoteAddr)
		return m, prefixErr("direct_remote_ip.", err)
	case *rbacv3.Principal_RemoteIp:
		c.needs |= needRemote
		m, err := cidr(id.RemoteIp, remoteAddr)
		return m, prefixErr("remote_ip.", err)
	case *rbacv3.Principal_Header:
		m, err := c.header(id.Header)
		return m, prefixErr("header.", err)
	case *rbacv3.Principal_UrlPath:
		m, err := c.path(id.UrlPath)
		return m, prefixErr("url_path.", err)
	case *rbacv3.Principal_Metadata:
		//lint:ignore SA1019 deprecated for sourced_metadata, but what Istio emits
		m, err := c.metadata(id.Metadata)
		return m, prefixErr("metadata.", err)
	case *rbacv3.Principal_SourcedMetadata:
		m, err := c.sourcedMetadata(id.SourcedMetadata)
		return m, prefixErr("sourced_metadata.", err)
	case *rbacv3.Principal_FilterState:
		return nil, fmt.Errorf("filter_state: %w", filters.ErrUnsupported)
	case *rbacv3.Principal_Custom:
		return nil, fmt.Errorf("custom: %w", filters.ErrUnsupported)
	case nil:
		return nil, errors.New("identifier: required")
	default:
		return nil, fmt.Errorf("identifier %T: %w", id, filters.ErrUnsupported)
	}
}

func (c *compiler) principalSet(ids []*rbacv3.Principal) ([]matcher, error) {
	if len(ids) == 0 {
		return nil, errors.New(".ids: at least one principal is required")
	}
	out := make([]matcher, 0, len(ids))
	for i, id := range ids {
		m, err := c.principal(id)
		if err != nil {
			return nil, fmt.Errorf(".ids[%d].%w", i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func (c *compiler) header(h *routev3.HeaderMatcher) (matcher, error) {
	m, err := c.conv.HeaderMatcher(h)
	if err != nil {
		return nil, err
	}
	return &headerMatcher{m}, nil
}

func (c *compiler) path(p *matcherv3.PathMatcher) (matcher, error) {
	s := p.GetPath()
	if s == nil {
		return nil, errors.New("path: required")
	}
	m, err := c.conv.StringMatcher(s)
	if err != nil {
		return nil, fmt.Errorf("path.%w", err)
	}
	return &pathMatcher{m}, nil
}

func (c *compiler) sourcedMetadata(s *rbacv3.SourcedMetadata) (matcher, error) {
	if s.GetMetadataSource() != rbacv3.MetadataSource_DYNAMIC {
		return nil, fmt.Errorf("metadata_source %s: %w", s.GetMetadataSource(), filters.ErrUnsupported)
	}
	m, err := c.metadata(s.GetMetadataMatcher())
	return m, prefixErr("metadata_matcher.", err)
}

func (c *compiler) metadata(m *matcherv3.MetadataMatcher) (matcher, error) {
	mm, err := filters.NewMetadataMatcher(m, c.conv)
	if err != nil {
		return nil, err
	}
	return metadataMatcher{mm}, nil
}

// cidr converts a CidrRange (prefix_len defaults to 0, as Envoy's).
func cidr(r *corev3.CidrRange, source addrSource) (matcher, error) {
	a, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil {
		return nil, fmt.Errorf("address_prefix: %w", err)
	}
	a = a.Unmap()
	p, err := a.Prefix(int(r.GetPrefixLen().GetValue()))
	if err != nil {
		return nil, fmt.Errorf("prefix_len: %w", err)
	}
	return &ipMatcher{prefix: p, source: source}, nil
}

// deniedDetails is Envoy's response code detail for a denial by policy name: whitespace becomes
// "_" so access log fields stay one token.
func deniedDetails(name string) string {
	return "rbac_access_denied_matched_policy[" + strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\f', '\v', '\n', '\r':
			return '_'
		}
		return r
	}, name) + "]"
}

// prefixErr puts a field path before err; nil stays nil.
func prefixErr(field string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s%w", field, err)
}

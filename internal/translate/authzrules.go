package translate

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	security "istio.io/api/security/v1beta1"
)

// One AuthorizationPolicy rule becomes one Envoy RBAC policy the way Istio's authz model
// (pilot/pkg/security/authz/model) builds it: one permission per `to` and one principal per
// `from` (Envoy ORs each list), each an and_rules/and_ids of the rule's fields in Istio's order,
// each field an or_rules/or_ids of its values, a not* field a not_rule/not_id of that OR. The
// `when` conditions join every permission (destination.*, connection.sni) or every principal
// (the rest). Config validation has already refused what cannot be translated.

// spiffePrefix turns an Istio principal ("cluster.local/ns/foo/sa/sleep") into the URI SAN the
// peer certificate carries.
const spiffePrefix = "spiffe://"

// rbacRuleBuilder translates rules for one workload. issuers are the JWT issuers of the
// RequestAuthentications that apply to it: jwt_authn keeps each verified payload under its
// issuer (payload_in_metadata), so a claim condition must look under each of them.
type rbacRuleBuilder struct {
	issuers []string
}

func (b rbacRuleBuilder) policy(r *security.Rule) *rbacv3.Policy {
	p := &rbacv3.Policy{}
	tos := r.GetTo()
	if len(tos) == 0 {
		tos = []*security.Rule_To{nil}
	}
	for _, to := range tos {
		p.Permissions = append(p.Permissions, b.permission(to.GetOperation(), r.GetWhen()))
	}
	froms := r.GetFrom()
	if len(froms) == 0 {
		froms = []*security.Rule_From{nil}
	}
	for _, from := range froms {
		p.Principals = append(p.Principals, b.principal(from.GetSource(), r.GetWhen()))
	}
	return p
}

func (b rbacRuleBuilder) permission(o *security.Operation, when []*security.Condition) *rbacv3.Permission {
	var and []*rbacv3.Permission
	and = appendPermissions(and, o.GetHosts(), o.GetNotHosts(), hostPermission)
	and = appendPermissions(and, o.GetMethods(), o.GetNotMethods(), func(v string) *rbacv3.Permission {
		return headerPermission(headerMatcher(":method", v))
	})
	and = appendPermissions(and, o.GetPaths(), o.GetNotPaths(), pathPermission)
	and = appendPermissions(and, o.GetPorts(), o.GetNotPorts(), portPermission)
	for _, w := range when {
		switch w.GetKey() {
		case "destination.ip":
			and = appendPermissions(and, w.GetValues(), w.GetNotValues(), func(v string) *rbacv3.Permission {
				return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidrRange(v)}}
			})
		case "destination.port":
			and = appendPermissions(and, w.GetValues(), w.GetNotValues(), portPermission)
		case "connection.sni":
			and = appendPermissions(and, w.GetValues(), w.GetNotValues(), func(v string) *rbacv3.Permission {
				return &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: stringMatcher(v, "")}}
			})
		}
	}
	if len(and) == 0 {
		and = append(and, &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}})
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: and}}}
}

func (b rbacRuleBuilder) principal(s *security.Source, when []*security.Condition) *rbacv3.Principal {
	var and []*rbacv3.Principal
	and = appendPrincipals(and, s.GetPrincipals(), s.GetNotPrincipals(), peerPrincipal)
	and = appendPrincipals(and, s.GetRequestPrincipals(), s.GetNotRequestPrincipals(), b.requestPrincipal)
	and = appendPrincipals(and, s.GetNamespaces(), s.GetNotNamespaces(), namespacePrincipal)
	and = appendPrincipals(and, s.GetRemoteIpBlocks(), s.GetNotRemoteIpBlocks(), remoteIPPrincipal)
	and = appendPrincipals(and, s.GetIpBlocks(), s.GetNotIpBlocks(), directRemoteIPPrincipal)
	for _, w := range when {
		var gen func(string) *rbacv3.Principal
		switch key := w.GetKey(); {
		case key == "source.ip":
			gen = directRemoteIPPrincipal
		case key == "remote.ip":
			gen = remoteIPPrincipal
		case key == "source.namespace":
			gen = namespacePrincipal
		case key == "source.principal":
			gen = peerPrincipal
		case key == "request.auth.principal":
			gen = b.requestPrincipal
		case key == "request.auth.audiences":
			gen = func(v string) *rbacv3.Principal { return b.claim([]string{"aud"}, v, true) }
		case key == "request.auth.presenter":
			gen = func(v string) *rbacv3.Principal { return b.claim([]string{"azp"}, v, false) }
		case strings.HasPrefix(key, "request.headers["):
			name := strings.TrimSuffix(strings.TrimPrefix(key, "request.headers["), "]")
			gen = func(v string) *rbacv3.Principal {
				return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: headerMatcher(name, v)}}
			}
		case strings.HasPrefix(key, "request.auth.claims["):
			path := claimPath(strings.TrimPrefix(key, "request.auth.claims"))
			gen = func(v string) *rbacv3.Principal { return b.claim(path, v, true) }
		default:
			continue // a permission-side condition
		}
		and = appendPrincipals(and, w.GetValues(), w.GetNotValues(), gen)
	}
	if len(and) == 0 {
		and = append(and, principalAny())
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: and}}}
}

// appendPermissions adds the OR of values and the NOT of the OR of notValues.
func appendPermissions(and []*rbacv3.Permission, values, notValues []string, gen func(string) *rbacv3.Permission) []*rbacv3.Permission {
	or := func(vs []string) *rbacv3.Permission {
		rules := make([]*rbacv3.Permission, 0, len(vs))
		for _, v := range vs {
			rules = append(rules, gen(v))
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: rules}}}
	}
	if len(values) > 0 {
		and = append(and, or(values))
	}
	if len(notValues) > 0 {
		and = append(and, &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: or(notValues)}})
	}
	return and
}

// appendPrincipals adds the OR of values and the NOT of the OR of notValues.
func appendPrincipals(and []*rbacv3.Principal, values, notValues []string, gen func(string) *rbacv3.Principal) []*rbacv3.Principal {
	if len(values) > 0 {
		and = append(and, principalOr(mapPrincipals(values, gen)))
	}
	if len(notValues) > 0 {
		and = append(and, &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: principalOr(mapPrincipals(notValues, gen))}})
	}
	return and
}

func mapPrincipals(values []string, gen func(string) *rbacv3.Principal) []*rbacv3.Principal {
	out := make([]*rbacv3.Principal, 0, len(values))
	for _, v := range values {
		out = append(out, gen(v))
	}
	return out
}

func principalOr(ids []*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
}

func principalAnd(ids []*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
}

func principalAny() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

// principalNever matches no request: what a JWT condition becomes when no RequestAuthentication
// could have produced the token it names.
func principalNever() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: principalAny()}}
}

// peerPrincipal matches the peer certificate's URI SAN: Istio's principals are the SPIFFE ID
// without its scheme.
func peerPrincipal(v string) *rbacv3.Principal {
	return authenticatedPrincipal(stringMatcher(v, spiffePrefix))
}

// namespacePrincipal is Istio's namespace match on the SPIFFE ID: ".*/ns/<ns>/.*".
func namespacePrincipal(v string) *rbacv3.Principal {
	ns := strings.ReplaceAll(regexp.QuoteMeta(v), `\*`, ".*")
	return authenticatedPrincipal(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
		SafeRegex: regexMatcher(".*/ns/" + ns + "/.*"),
	}})
}

func authenticatedPrincipal(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{
		Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m},
	}}
}

func directRemoteIPPrincipal(v string) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidrRange(v)}}
}

func remoteIPPrincipal(v string) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidrRange(v)}}
}

// requestPrincipal matches a verified JWT's "iss/sub" with Istio's wildcard rules (the issuer
// may itself contain "/", so the last one splits). It reads the payload jwt_authn keeps under the
// issuer; a wildcard issuer is expanded over the workload's issuers it matches.
func (b rbacRuleBuilder) requestPrincipal(v string) *rbacv3.Principal {
	iss, sub := v, ""
	i := strings.LastIndex(v, "/")
	found := i >= 0
	if found {
		iss, sub = v[:i], v[i+1:]
	}
	var issM, subM *matcherv3.StringMatcher
	switch {
	case v == "*":
		issM, subM = matchAnyString(), matchAnyString()
	case strings.HasPrefix(v, "*") && found:
		issM = stringMatcher(iss, "")
		subM = exactString(sub)
	case strings.HasPrefix(v, "*"):
		issM, subM = matchAnyString(), stringMatcher(v, "")
	case strings.HasSuffix(v, "*") && found:
		issM = exactString(iss)
		subM = stringMatcher(sub, "")
	case strings.HasSuffix(v, "*"):
		issM, subM = stringMatcher(v, ""), matchAnyString()
	default:
		issM, subM = exactString(iss), exactString(sub)
	}
	var or []*rbacv3.Principal
	for _, issuer := range b.issuersMatching(issM) {
		or = append(or, principalAnd([]*rbacv3.Principal{
			jwtPayloadPrincipal(issuer, []string{"iss"}, stringValue(issM)),
			jwtPayloadPrincipal(issuer, []string{"sub"}, stringValue(subM)),
		}))
	}
	return oneOrOr(or)
}

// claim matches a claim of any verified JWT. A claim may be a string or a list (groups, aud),
// which the payload keeps as it came, so a list-capable claim matches either form.
func (b rbacRuleBuilder) claim(path []string, v string, maybeList bool) *rbacv3.Principal {
	m := stringMatcher(v, "")
	var or []*rbacv3.Principal
	for _, issuer := range b.issuers {
		or = append(or, jwtPayloadPrincipal(issuer, path, stringValue(m)))
		if maybeList {
			or = append(or, jwtPayloadPrincipal(issuer, path, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{
				ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: stringValue(m)}},
			}}))
		}
	}
	return oneOrOr(or)
}

func oneOrOr(or []*rbacv3.Principal) *rbacv3.Principal {
	switch len(or) {
	case 0:
		return principalNever()
	case 1:
		return or[0]
	}
	return principalOr(or)
}

// issuersMatching lists the workload's issuers a request principal's issuer part can name. An
// exact issuer is kept even when no RequestAuthentication declares it: the principal then never
// matches, which is what Istio does too.
func (b rbacRuleBuilder) issuersMatching(m *matcherv3.StringMatcher) []string {
	if exact := m.GetExact(); exact != "" {
		return []string{exact}
	}
	var out []string
	for _, iss := range b.issuers {
		switch {
		case m.GetPrefix() != "" && strings.HasPrefix(iss, m.GetPrefix()),
			m.GetSuffix() != "" && strings.HasSuffix(iss, m.GetSuffix()),
			m.GetSafeRegex() != nil:
			out = append(out, iss)
		}
	}
	return out
}

// jwtPayloadPrincipal matches a value in the payload jwt_authn stored for issuer (the contract's
// form; Istio reads its own istio_authn filter's metadata instead).
func jwtPayloadPrincipal(issuer string, path []string, v *matcherv3.ValueMatcher) *rbacv3.Principal {
	segs := []*matcherv3.MetadataMatcher_PathSegment{metadataKey(issuer)}
	for _, p := range path {
		segs = append(segs, metadataKey(p))
	}
	//lint:ignore SA1019 the security contract (and Istio) use metadata; sourced_metadata is its newer spelling.
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{
		Filter: jwtAuthnFilterName,
		Path:   segs,
		Value:  v,
	}}}
}

func metadataKey(k string) *matcherv3.MetadataMatcher_PathSegment {
	return &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}}
}

func stringValue(m *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: m}}
}

// claimPath splits "[a][b]" (validated) into the nested claim names.
func claimPath(s string) []string {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	return strings.Split(s, "][")
}

// stringMatcher is Istio's matcher for a policy value: "*" any non-empty value, "*suffix",
// "prefix*", else exact; prefix is prepended to what the value names.
func stringMatcher(v, prefix string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return matchAnyString()
	case strings.HasPrefix(v, "*"):
		if prefix == "" {
			return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v[1:]}}
		}
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
			SafeRegex: regexMatcher(regexp.QuoteMeta(prefix) + ".*" + regexp.QuoteMeta(v[1:])),
		}}
	case strings.HasSuffix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix + strings.TrimSuffix(v, "*")}}
	}
	return exactString(prefix + v)
}

func exactString(v string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

func matchAnyString() *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regexMatcher(".+")}}
}

// headerMatcher is Istio's: "*" presence, "*suffix", "prefix*", else exact.
func headerMatcher(name, v string) *routev3.HeaderMatcher {
	if v == "*" {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	}
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatcher(v, "")}}
}

func headerPermission(h *routev3.HeaderMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
}

// hostPermission matches :authority case-insensitively, as Istio's HostMatcher.
func hostPermission(v string) *rbacv3.Permission {
	h := headerMatcher(":authority", v)
	if sm := h.GetStringMatch(); sm != nil {
		sm.IgnoreCase = true
	}
	return headerPermission(h)
}

// pathPermission matches the path without its query (url_path), as Istio does.
func pathPermission(v string) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
		Rule: &matcherv3.PathMatcher_Path{Path: stringMatcher(v, "")},
	}}}
}

func portPermission(v string) *rbacv3.Permission {
	n, _ := strconv.ParseUint(v, 10, 32) // validated
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(n)}}
}

// cidrRange reads a validated IP or CIDR; a bare IP is a /32 (or /128).
func cidrRange(v string) *corev3.CidrRange {
	if p, err := netip.ParsePrefix(v); err == nil {
		return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
	}
	a, _ := netip.ParseAddr(v)
	return &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))}
}

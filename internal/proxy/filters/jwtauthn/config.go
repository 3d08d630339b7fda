package jwtauthn

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

const (
	typeURL         = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
	perRouteTypeURL = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig"
	// FilterName is the filter's canonical name and its dynamic metadata namespace.
	FilterName = "envoy.filters.http.jwt_authn"
)

// Envoy's defaults.
const (
	defaultClockSkew    = 60
	defaultCacheSize    = 100
	defaultMaxTokenSize = 4096
	// defaultFetchTimeout bounds a JWKS fetch whose http_uri.timeout is 0 (Envoy: no timeout), so
	// that every fetch ends on its own.
	defaultFetchTimeout = 10 * time.Second
)

// Factory registers the filter.
var Factory = &filters.Factory{
	Name:          FilterName,
	ConfigType:    typeURL,
	PerRouteTypes: []string{perRouteTypeURL},
	Parse: func(tc *anypb.Any, conv filters.Converters) (filters.Config, error) {
		if tc == nil {
			return &Config{}, nil
		}
		var m jwtv3.JwtAuthentication
		if err := filters.Unmarshal(tc, &m); err != nil {
			return nil, err
		}
		return parse(&m, conv)
	},
	ParsePerRoute: func(tc *anypb.Any, _ filters.Converters) (any, error) {
		var m jwtv3.PerRouteConfig
		if err := filters.Unmarshal(tc, &m); err != nil {
			return nil, err
		}
		return &PerRoute{Disabled: m.GetDisabled(), RequirementName: m.GetRequirementName()}, nil
	},
}

// PerRoute is a route's PerRouteConfig: the filter is off, or the route requires the named entry of
// requirement_map (the filter's rules are then not consulted).
type PerRoute struct {
	Disabled        bool
	RequirementName string
}

// Config is one JwtAuthentication, parsed. The JWKS and verified-token caches of its providers live
// here, shared by every connection manager built from it, until the next config push replaces it.
type Config struct {
	providers    []*provider // by name
	rules        []rule
	requirements map[string]requirement
	// requirementNames lists requirement_map's keys for the error on an unknown per-route name.
	requirementNames string
	bypassCORS       bool
	stripFailure     bool
	statPrefix       string
}

// provider is one JwtProvider.
type provider struct {
	name      string
	issuer    string
	audiences audiences
	forward   bool
	// headers, params and cookies are where tokens are looked for.
	headers              []headerLocation
	params, cookies      []string
	forwardPayloadHeader string // canonical form; "" for none
	padPayload           bool
	payloadInMetadata    string
	headerInMetadata     string
	claimHeaders         []claimHeader
	skew                 uint64
	// Exactly one of local and remote is set; localStatus is local's parse status.
	local       *keySet
	localStatus Status
	remote      *remoteJWKS
	cache       *tokenCache
}

type headerLocation struct {
	name   string // canonical MIME form
	prefix string
}

type claimHeader struct {
	header, claim string
}

type rule struct {
	match routeMatch
	req   requirement // nil: the request needs no token
}

func parse(m *jwtv3.JwtAuthentication, conv filters.Converters) (*Config, error) {
	if err := filters.OnlyFields(m, "providers", "rules", "requirement_map", "bypass_cors_preflight",
		"strip_failure_response", "stat_prefix"); err != nil {
		return nil, err
	}
	c := &Config{bypassCORS: m.GetBypassCorsPreflight(), stripFailure: m.GetStripFailureResponse(), statPrefix: m.GetStatPrefix()}
	names := make([]string, 0, len(m.GetProviders()))
	for name := range m.GetProviders() {
		names = append(names, name)
	}
	sort.Strings(names)
	byName := make(map[string]*provider, len(names))
	for _, name := range names {
		p, err := parseProvider(name, m.GetProviders()[name])
		if err != nil {
			return nil, fmt.Errorf("providers[%q].%w", name, err)
		}
		c.providers = append(c.providers, p)
		byName[name] = p
	}
	b := builder{all: c.providers, byName: byName}
	reqNames := make([]string, 0, len(m.GetRequirementMap()))
	for name := range m.GetRequirementMap() {
		reqNames = append(reqNames, name)
	}
	sort.Strings(reqNames)
	c.requirementNames = strings.Join(reqNames, ",")
	c.requirements = make(map[string]requirement, len(reqNames))
	for _, name := range reqNames {
		r, err := b.build(m.GetRequirementMap()[name])
		if err != nil {
			return nil, fmt.Errorf("requirement_map[%q].%w", name, err)
		}
		c.requirements[name] = r
	}
	for i, r := range m.GetRules() {
		field := fmt.Sprintf("rules[%d]", i)
		if err := filters.OnlyFields(r, "match", "requires", "requirement_name"); err != nil {
			return nil, fmt.Errorf("%s.%w", field, err)
		}
		rm, err := parseRouteMatch(r.GetMatch(), conv)
		if err != nil {
			return nil, fmt.Errorf("%s.match.%w", field, err)
		}
		ru := rule{match: rm}
		switch t := r.GetRequirementType().(type) {
		case *jwtv3.RequirementRule_Requires:
			if ru.req, err = b.build(t.Requires); err != nil {
				return nil, fmt.Errorf("%s.requires.%w", field, err)
			}
		case *jwtv3.RequirementRule_RequirementName:
			req, ok := c.requirements[t.RequirementName]
			if !ok {
				return nil, fmt.Errorf("%s.requirement_name: Wrong requirement_name: %s. It should be one of [%s]", field, t.RequirementName, c.requirementNames)
			}
			ru.req = req
		}
		c.rules = append(c.rules, ru)
	}
	return c, nil
}

func parseProvider(name string, p *jwtv3.JwtProvider) (*provider, error) {
	if err := filters.OnlyFields(p, "issuer", "audiences", "remote_jwks", "local_jwks", "forward", "from_headers",
		"from_params", "from_cookies", "forward_payload_header", "pad_forward_payload_header", "payload_in_metadata",
		"header_in_metadata", "clock_skew_seconds", "jwt_cache_config", "claim_to_headers"); err != nil {
		return nil, err
	}
	out := &provider{
		name: name, issuer: p.GetIssuer(), audiences: newAudiences(p.GetAudiences()), forward: p.GetForward(),
		params: p.GetFromParams(), cookies: p.GetFromCookies(), padPayload: p.GetPadForwardPayloadHeader(),
		payloadInMetadata: p.GetPayloadInMetadata(), headerInMetadata: p.GetHeaderInMetadata(),
		skew: uint64(p.GetClockSkewSeconds()),
	}
	if out.skew == 0 {
		out.skew = defaultClockSkew // Envoy: 0 means the default
	}
	for _, h := range p.GetFromHeaders() {
		out.headers = append(out.headers, headerLocation{name: http.CanonicalHeaderKey(h.GetName()), prefix: h.GetValuePrefix()})
	}
	if len(out.headers) == 0 && len(out.params) == 0 && len(out.cookies) == 0 {
		out.headers = []headerLocation{{name: "Authorization", prefix: "Bearer "}}
		out.params = []string{"access_token"}
	}
	if h := p.GetForwardPayloadHeader(); h != "" {
		out.forwardPayloadHeader = http.CanonicalHeaderKey(h)
	}
	for i, ch := range p.GetClaimToHeaders() {
		if err := filters.OnlyFields(ch, "header_name", "claim_name"); err != nil {
			return nil, fmt.Errorf("claim_to_headers[%d].%w", i, err)
		}
		if ch.GetClaimName() == "" {
			return nil, fmt.Errorf("claim_to_headers[%d].claim_name: required", i)
		}
		out.claimHeaders = append(out.claimHeaders, claimHeader{header: http.CanonicalHeaderKey(ch.GetHeaderName()), claim: ch.GetClaimName()})
	}
	size, maxSize := defaultCacheSize, defaultMaxTokenSize
	if cc := p.GetJwtCacheConfig(); cc != nil {
		if cc.GetJwtCacheSize() > 0 {
			size = int(cc.GetJwtCacheSize())
		}
		if cc.GetJwtMaxTokenSize() > 0 {
			maxSize = int(cc.GetJwtMaxTokenSize())
		}
	}
	out.cache = newTokenCache(size, maxSize)
	switch src := p.GetJwksSourceSpecifier().(type) {
	case *jwtv3.JwtProvider_LocalJwks:
		doc, err := dataSource(src.LocalJwks.GetFilename(), src.LocalJwks.GetInlineString(), src.LocalJwks.GetInlineBytes(), src.LocalJwks.GetEnvironmentVariable())
		if err != nil {
			return nil, fmt.Errorf("local_jwks.%w", err)
		}
		// Envoy accepts a JWKS it cannot use and fails the requests that need it
		// (JwksNoValidKeys); Istio relies on that when it could not fetch an issuer's keys.
		out.local, out.localStatus = parseJWKS(doc)
	case *jwtv3.JwtProvider_RemoteJwks:
		r, err := parseRemote(src.RemoteJwks)
		if err != nil {
			return nil, fmt.Errorf("remote_jwks.%w", err)
		}
		r.onNewKeys = out.cache.clear
		out.remote = r
	default:
		return nil, errors.New("remote_jwks or local_jwks is required")
	}
	return out, nil
}

func dataSource(filename, inline string, inlineBytes []byte, env string) ([]byte, error) {
	switch {
	case filename != "":
		b, err := os.ReadFile(filename)
		if err != nil {
			return nil, fmt.Errorf("filename: %w", err)
		}
		return b, nil
	case inline != "":
		return []byte(inline), nil
	case len(inlineBytes) > 0:
		return inlineBytes, nil
	case env != "":
		return []byte(os.Getenv(env)), nil
	}
	return nil, errors.New("filename, inline_string or inline_bytes is required")
}

func parseRemote(r *jwtv3.RemoteJwks) (*remoteJWKS, error) {
	if err := filters.OnlyFields(r, "http_uri", "cache_duration", "async_fetch", "retry_policy"); err != nil {
		return nil, err
	}
	u := r.GetHttpUri()
	if err := filters.OnlyFields(u, "uri", "cluster", "timeout"); err != nil {
		return nil, fmt.Errorf("http_uri.%w", err)
	}
	timeout := u.GetTimeout().AsDuration()
	if timeout <= 0 {
		timeout = defaultFetchTimeout
	}
	out, err := newRemoteJWKS(u.GetUri(), u.GetCluster(), timeout, r.GetCacheDuration().AsDuration())
	if err != nil {
		return nil, err
	}
	if a := r.GetAsyncFetch(); a != nil {
		if err := filters.OnlyFields(a, "fast_listener", "failed_refetch_duration"); err != nil {
			return nil, fmt.Errorf("async_fetch.%w", err)
		}
		out.async = true
		if d := a.GetFailedRefetchDuration().AsDuration(); d > 0 {
			out.failedRefetch = d
		}
	}
	if rp := r.GetRetryPolicy(); rp != nil {
		// Retries are honoured by count, back to back: a JWKS fetch is rare and off the hot path.
		if err := filters.OnlyFields(rp, "num_retries", "retry_back_off"); err != nil {
			return nil, fmt.Errorf("retry_policy.%w", err)
		}
		out.retries = 1 // Envoy's default when retry_policy is set
		if n := rp.GetNumRetries(); n != nil {
			out.retries = int(n.GetValue())
		}
	}
	return out, nil
}

// routeMatch is the subset of route.v3.RouteMatch jwt_authn rules use: the path specifier, case
// sensitivity and headers.
type routeMatch struct {
	kind       pathKind
	value      string
	regex      route.StringMatcher
	ignoreCase bool
	headers    []route.HeaderMatcher
}

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
)

func parseRouteMatch(m *routev3.RouteMatch, conv filters.Converters) (routeMatch, error) {
	var rm routeMatch
	if m == nil {
		return rm, errors.New("required")
	}
	if err := filters.OnlyFields(m, "prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive", "headers"); err != nil {
		return rm, err
	}
	rm.ignoreCase = m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rm.kind, rm.value = pathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		rm.kind, rm.value = pathExact, p.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		rm.kind, rm.value = pathSeparatedPrefix, p.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		sm, err := conv.StringMatcher(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: p.SafeRegex}})
		if err != nil {
			return rm, fmt.Errorf("safe_regex: %w", err)
		}
		rm.kind, rm.regex = pathRegex, sm
	default:
		return rm, errors.New("prefix, path, path_separated_prefix or safe_regex is required")
	}
	for i, h := range m.GetHeaders() {
		hm, err := conv.HeaderMatcher(h)
		if err != nil {
			return rm, fmt.Errorf("headers[%d].%w", i, err)
		}
		rm.headers = append(rm.headers, hm)
	}
	return rm, nil
}

// matches says whether the request's path (query left out) and headers match.
func (m *routeMatch) matches(path string, h route.HeaderGetter) bool {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	var ok bool
	switch m.kind {
	case pathPrefix:
		ok = hasPrefix(path, m.value, m.ignoreCase)
	case pathExact:
		ok = len(path) == len(m.value) && hasPrefix(path, m.value, m.ignoreCase)
	case pathSeparatedPrefix:
		ok = hasPrefix(path, m.value, m.ignoreCase) && (len(path) == len(m.value) || path[len(m.value)] == '/')
	case pathRegex:
		ok = m.regex.Match(path)
	}
	if !ok {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].Matches(h) {
			return false
		}
	}
	return true
}

func hasPrefix(s, prefix string, ignoreCase bool) bool {
	if len(s) < len(prefix) {
		return false
	}
	if ignoreCase {
		return strings.EqualFold(s[:len(prefix)], prefix)
	}
	return s[:len(prefix)] == prefix
}

// audiences is jwt_verify_lib's CheckAudience: configured and token audiences are compared without
// an http:// or https:// scheme and a trailing slash. Empty allows any token.
type audiences []string

func newAudiences(list []string) audiences {
	if len(list) == 0 {
		return nil
	}
	out := make(audiences, 0, len(list))
	for _, a := range list {
		out = append(out, sanitizeAudience(a))
	}
	return out
}

func sanitizeAudience(a string) string {
	if s, ok := strings.CutPrefix(a, "http://"); ok {
		a = s
	} else if s, ok := strings.CutPrefix(a, "https://"); ok {
		a = s
	}
	return strings.TrimSuffix(a, "/")
}

func (as audiences) allow(tokenAud []string) bool {
	if len(as) == 0 {
		return true
	}
	for _, a := range tokenAud {
		if slices.Contains(as, sanitizeAudience(a)) {
			return true
		}
	}
	return false
}

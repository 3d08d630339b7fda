package translate

import (
	"errors"
	"fmt"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// Istio HTTPMatchRequest and StringMatch → Envoy RouteMatch, header, query parameter and string
// matchers.

// TranslateMatch turns one VirtualService match block into an Envoy route
// match; nil matches every request. Match fields that select where a
// route applies (port, gateways, sourceLabels, sourceNamespace) are
// handled by the caller, not here.
func TranslateMatch(m *networking.HTTPMatchRequest) (*routev3.RouteMatch, error) {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if m == nil {
		return rm, nil
	}
	switch u := m.GetUri().GetMatchType().(type) {
	case nil:
	case *networking.StringMatch_Exact:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: u.Exact}
	case *networking.StringMatch_Prefix:
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: u.Prefix}
	case *networking.StringMatch_Regex:
		if u.Regex == "" {
			return nil, errors.New("uri.regex: must not be empty")
		}
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: regexMatcher(u.Regex)}
	default:
		return nil, fmt.Errorf("uri: unsupported match type %T", u)
	}
	if m.GetIgnoreUriCase() {
		rm.CaseSensitive = wrapperspb.Bool(false)
	}

	// Istio matches method, authority and scheme as pseudo-headers.
	pseudo := []struct {
		name  string
		field string
		sm    *networking.StringMatch
	}{
		{":method", "method", m.GetMethod()},
		{":authority", "authority", m.GetAuthority()},
		{":scheme", "scheme", m.GetScheme()},
	}
	for _, p := range pseudo {
		if p.sm == nil {
			continue
		}
		hm, err := HeaderMatch(p.name, p.sm, false)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.field, err)
		}
		rm.Headers = append(rm.Headers, hm)
	}
	for _, group := range []struct {
		field  string
		m      map[string]*networking.StringMatch
		invert bool
	}{
		{"headers", m.GetHeaders(), false},
		{"withoutHeaders", m.GetWithoutHeaders(), true},
	} {
		for _, name := range sortedKeysFold(group.m) {
			hm, err := HeaderMatch(name, group.m[name], group.invert)
			if err != nil {
				return nil, fmt.Errorf("%s[%s]: %w", group.field, name, err)
			}
			rm.Headers = append(rm.Headers, hm)
		}
	}
	for _, name := range sortedKeys(m.GetQueryParams()) {
		qm, err := queryParamMatch(name, m.GetQueryParams()[name])
		if err != nil {
			return nil, fmt.Errorf("queryParams[%s]: %w", name, err)
		}
		rm.QueryParameters = append(rm.QueryParameters, qm)
	}
	return rm, nil
}

// HeaderMatch matches header name against sm. A StringMatch with no match
// type, or an empty prefix, only asks for the header to be present (Envoy
// rejects an empty prefix).
func HeaderMatch(name string, sm *networking.StringMatch, invert bool) (*routev3.HeaderMatcher, error) {
	if name == "" {
		return nil, errors.New("header name: must not be empty")
	}
	// Envoy compares header names lower-cased; say so in the config too.
	hm := &routev3.HeaderMatcher{Name: strings.ToLower(name), InvertMatch: invert}
	if isPresenceMatch(sm) {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		return hm, nil
	}
	s, err := StringMatcher(sm)
	if err != nil {
		return nil, err
	}
	hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: s}
	return hm, nil
}

func queryParamMatch(name string, sm *networking.StringMatch) (*routev3.QueryParameterMatcher, error) {
	if name == "" {
		return nil, errors.New("query parameter name: must not be empty")
	}
	qm := &routev3.QueryParameterMatcher{Name: name}
	if isPresenceMatch(sm) {
		qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		return qm, nil
	}
	s, err := StringMatcher(sm)
	if err != nil {
		return nil, err
	}
	qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: s}
	return qm, nil
}

func isPresenceMatch(sm *networking.StringMatch) bool {
	switch mt := sm.GetMatchType().(type) {
	case nil:
		return true
	case *networking.StringMatch_Prefix:
		return mt.Prefix == ""
	}
	return false
}

// StringMatcher translates an Istio StringMatch (exact, prefix or regex).
func StringMatcher(sm *networking.StringMatch) (*matcherv3.StringMatcher, error) {
	switch mt := sm.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: mt.Exact}}, nil
	case *networking.StringMatch_Prefix:
		if mt.Prefix == "" {
			return nil, errors.New("prefix: must not be empty")
		}
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: mt.Prefix}}, nil
	case *networking.StringMatch_Regex:
		if mt.Regex == "" {
			return nil, errors.New("regex: must not be empty")
		}
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: regexMatcher(mt.Regex)}}, nil
	case nil:
		return nil, errors.New("want one of exact, prefix or regex")
	default:
		return nil, fmt.Errorf("unsupported match type %T", mt)
	}
}

// regexMatcher leaves the engine unset: Envoy's default is RE2, and the
// explicit google_re2 field is deprecated (Istio stopped setting it too).
func regexMatcher(re string) *matcherv3.RegexMatcher {
	return &matcherv3.RegexMatcher{Regex: re}
}

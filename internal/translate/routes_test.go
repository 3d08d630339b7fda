package translate

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

func exact(s string) *networking.StringMatch {
	return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: s}}
}

func prefix(s string) *networking.StringMatch {
	return &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: s}}
}

func regex(s string) *networking.StringMatch {
	return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: s}}
}

func strExact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func hdr(name string, sm *matcherv3.StringMatcher) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

func TestTranslateMatchMapsIstioMatchToEnvoyRouteMatch(t *testing.T) {
	prefixRoot := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	tests := []struct {
		name string
		in   *networking.HTTPMatchRequest
		want *routev3.RouteMatch
	}{
		{"nil matches everything", nil, prefixRoot},
		{"no uri matches every path", &networking.HTTPMatchRequest{}, prefixRoot},
		{"uri exact is path", &networking.HTTPMatchRequest{Uri: exact("/productpage")},
			&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/productpage"}}},
		{"uri prefix is prefix", &networking.HTTPMatchRequest{Uri: prefix("/static")},
			&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/static"}}},
		{"uri regex is safe_regex without engine", &networking.HTTPMatchRequest{Uri: regex("/items/[0-9]+")},
			&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/items/[0-9]+"}}}},
		{"ignoreUriCase clears case_sensitive", &networking.HTTPMatchRequest{Uri: exact("/A"), IgnoreUriCase: true},
			&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/A"}, CaseSensitive: wrapperspb.Bool(false)}},
		{"header exact", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"end-user": exact("jason")}},
			&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{hdr("end-user", strExact("jason"))}}},
		{"header names lower-cased and ordered", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{
			"X-B": prefix("b"), "x-a": regex("a+")}},
			&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
				hdr("x-a", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a+"}}}),
				hdr("x-b", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "b"}}),
			}}},
		{"empty prefix and no match type mean present", &networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{
			"a": prefix(""), "b": {}}},
			&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
				{Name: "a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
				{Name: "b", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
			}}},
		{"method, authority and scheme are pseudo-headers", &networking.HTTPMatchRequest{
			Method: exact("GET"), Authority: prefix("web"), Scheme: exact("https")},
			&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
				hdr(":method", strExact("GET")),
				hdr(":authority", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "web"}}),
				hdr(":scheme", strExact("https")),
			}}},
		{"withoutHeaders inverts", &networking.HTTPMatchRequest{WithoutHeaders: map[string]*networking.StringMatch{"x-skip": exact("1")}},
			&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, Headers: []*routev3.HeaderMatcher{
				{Name: "x-skip", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: strExact("1")}},
			}}},
		{"query params", &networking.HTTPMatchRequest{QueryParams: map[string]*networking.StringMatch{"debug": exact("1"), "trace": {}}},
			&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}, QueryParameters: []*routev3.QueryParameterMatcher{
				{Name: "debug", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: strExact("1")}},
				{Name: "trace", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}},
			}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := TranslateMatch(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestTranslateMatchRejectsWhatEnvoyWouldWithFieldPath(t *testing.T) {
	tests := []struct {
		in      *networking.HTTPMatchRequest
		wantErr string
	}{
		{&networking.HTTPMatchRequest{Uri: regex("")}, "uri.regex"},
		{&networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"x": regex("")}}, "headers[x]: regex"},
		{&networking.HTTPMatchRequest{Headers: map[string]*networking.StringMatch{"": exact("v")}}, "header name"},
		{&networking.HTTPMatchRequest{Method: regex("")}, "method: regex"},
		{&networking.HTTPMatchRequest{QueryParams: map[string]*networking.StringMatch{"q": regex("")}}, "queryParams[q]"},
	}
	for _, tc := range tests {
		_, err := TranslateMatch(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("TranslateMatch(%v) = %v, want error containing %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestStringMatcherNeedsAMatchType(t *testing.T) {
	if _, err := StringMatcher(&networking.StringMatch{}); err == nil {
		t.Error("StringMatcher with no match type: no error")
	}
	if _, err := StringMatcher(prefix("")); err == nil {
		t.Error("StringMatcher with empty prefix: no error")
	}
	got, err := StringMatcher(exact(""))
	if err != nil || got.GetExact() != "" {
		t.Errorf("exact \"\": %v, %v", got, err)
	}
}

func TestMatchBlocksScopedElsewhereAreDropped(t *testing.T) {
	scope := routeScope{
		port:      9080,
		gateways:  map[string]bool{"mesh": true},
		labels:    map[string]string{"app": "productpage"},
		namespace: "default",
	}
	tests := []struct {
		name  string
		match *networking.HTTPMatchRequest
		keep  bool
	}{
		{"no scoping", &networking.HTTPMatchRequest{}, true},
		{"same port", &networking.HTTPMatchRequest{Port: 9080}, true},
		{"other port", &networking.HTTPMatchRequest{Port: 8080}, false},
		{"matching source labels", &networking.HTTPMatchRequest{SourceLabels: map[string]string{"app": "productpage"}}, true},
		{"other source labels", &networking.HTTPMatchRequest{SourceLabels: map[string]string{"app": "reviews"}}, false},
		{"same source namespace", &networking.HTTPMatchRequest{SourceNamespace: "default"}, true},
		{"other source namespace", &networking.HTTPMatchRequest{SourceNamespace: "shop"}, false},
		{"mesh gateway", &networking.HTTPMatchRequest{Gateways: []string{"mesh"}}, true},
		{"other gateway", &networking.HTTPMatchRequest{Gateways: []string{"istio-system/public"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := applicableMatches([]*networking.HTTPMatchRequest{tc.match}, "default", scope)
			if ok != tc.keep || (ok && len(got) != 1) {
				t.Errorf("kept=%v (%d matches), want %v", ok, len(got), tc.keep)
			}
		})
	}
	gwScope := routeScope{port: 8080, gateways: map[string]bool{"istio-system/public": true}}
	for _, name := range []string{"istio-system/public"} {
		if _, ok := applicableMatches([]*networking.HTTPMatchRequest{{Gateways: []string{name}}}, "default", gwScope); !ok {
			t.Errorf("gateway %q should apply to istio-system/public", name)
		}
	}
	if _, ok := applicableMatches([]*networking.HTTPMatchRequest{{Gateways: []string{"public"}}}, "istio-system", gwScope); !ok {
		t.Error(`short gateway name "public" from namespace istio-system should apply`)
	}
	if _, ok := applicableMatches([]*networking.HTTPMatchRequest{{Gateways: []string{"public"}}}, "default", gwScope); ok {
		t.Error(`short gateway name "public" from namespace default names default/public`)
	}
}

func TestRouteName(t *testing.T) {
	for _, tc := range []struct{ http, match, want string }{
		{"", "", ""}, {"r", "", "r"}, {"", "m", "m"}, {"r", "m", "r.m"},
	} {
		if got := routeName(tc.http, tc.match); got != tc.want {
			t.Errorf("routeName(%q, %q) = %q, want %q", tc.http, tc.match, got, tc.want)
		}
	}
}

func TestHostMatches(t *testing.T) {
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"*", "anything.example.com", true},
		{"*", "*", true},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "*.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "*", false},
		{"a.example.com", "a.example.com", true},
		{"a.example.com", "*.example.com", false},
	}
	for _, tc := range tests {
		if got := hostMatches(tc.pattern, tc.host); got != tc.want {
			t.Errorf("hostMatches(%q, %q) = %v, want %v", tc.pattern, tc.host, got, tc.want)
		}
	}
}

func TestServerAdmitsHostsByNamespaceAndWildcard(t *testing.T) {
	tests := []struct {
		name        string
		serverHosts []string
		vsNamespace string
		vsHost      string
		want        string
		ok          bool
	}{
		{"exact", []string{"bookinfo.com"}, "default", "bookinfo.com", "bookinfo.com", true},
		{"server wildcard keeps vs host", []string{"*"}, "default", "bookinfo.com", "bookinfo.com", true},
		{"vs wildcard narrows to server host", []string{"bookinfo.com"}, "default", "*", "bookinfo.com", true},
		{"suffix wildcards", []string{"*.example.com"}, "default", "a.example.com", "a.example.com", true},
		{"unrelated", []string{"bookinfo.com"}, "default", "other.com", "", false},
		{"namespace matches", []string{"shop/*"}, "shop", "a.com", "a.com", true},
		{"namespace differs", []string{"shop/*"}, "default", "a.com", "", false},
		{"dot is the gateway namespace", []string{"./*"}, "istio-system", "a.com", "a.com", true},
		{"dot excludes other namespaces", []string{"./*"}, "default", "a.com", "", false},
		{"star namespace", []string{"*/a.com"}, "default", "a.com", "a.com", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := serverAdmits(tc.serverHosts, "istio-system", tc.vsNamespace, tc.vsHost)
			if got != tc.want || ok != tc.ok {
				t.Errorf("serverAdmits = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

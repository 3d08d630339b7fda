package route

import (
	"net/http"
	"regexp"
	"testing"
)

type headers map[string]string

func (h headers) Get(name string) (string, bool) {
	v, ok := h[name]
	return v, ok
}

func mustTable(t *testing.T, vhosts ...*VirtualHost) *Table {
	t.Helper()
	tbl, err := NewTable("test", vhosts)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func vhost(name string, domains ...string) *VirtualHost {
	return &VirtualHost{Name: name, Domains: domains, Routes: []*Route{{Match: Match{Kind: PathPrefix, Path: "/"}, Action: Action{Cluster: name}}}}
}

func TestVirtualHostSelectionFollowsEnvoyDomainOrder(t *testing.T) {
	tbl := mustTable(t,
		vhost("any", "*"),
		vhost("prefix-short", "api.*"),
		vhost("prefix-long", "api.example.*"),
		vhost("suffix-short", "*.com"),
		vhost("suffix-long", "*.example.com"),
		vhost("exact", "api.example.com"),
		vhost("withport", "reviews:9080", "reviews.default.svc.cluster.local:9080"),
	)
	for _, tc := range []struct{ host, want string }{
		{"api.example.com", "exact"},
		{"API.Example.COM", "exact"},
		{"www.example.com", "suffix-long"},
		{"www.other.com", "suffix-short"},
		{"api.example.org", "prefix-long"},
		{"api.foo", "prefix-short"},
		{"reviews:9080", "withport"},
		{"reviews.default.svc.cluster.local:9080", "withport"},
		{"reviews", "any"},                    // port is part of the domain: no match without it
		{"api.example.com:80", "prefix-long"}, // the exact domain has no port
		{".com", "any"},                       // a wildcard never matches the empty string
		{"", "any"},
	} {
		vh := tbl.VirtualHost(tc.host)
		if vh == nil || vh.Name != tc.want {
			got := "<nil>"
			if vh != nil {
				got = vh.Name
			}
			t.Errorf("host %q: got %s, want %s", tc.host, got, tc.want)
		}
	}
}

func TestNoVirtualHostWithoutCatchAll(t *testing.T) {
	tbl := mustTable(t, vhost("a", "a.com"))
	if vh, rt := tbl.Select(&Request{Authority: "b.com", Path: "/"}); vh != nil || rt != nil {
		t.Fatalf("got %v %v, want no match", vh, rt)
	}
}

func TestIgnorePortInHostMatching(t *testing.T) {
	tbl := mustTable(t, vhost("a", "a.com"), vhost("v6", "[::1]"))
	tbl.IgnorePortInHostMatching = true
	for _, host := range []string{"a.com:8080", "a.com"} {
		if vh := tbl.VirtualHost(host); vh == nil || vh.Name != "a" {
			t.Errorf("%s: got %v", host, vh)
		}
	}
	if vh := tbl.VirtualHost("[::1]:80"); vh == nil || vh.Name != "v6" {
		t.Errorf("[::1]:80: got %v", vh)
	}
}

func TestTableRejectsDuplicateAndMisplacedWildcardDomains(t *testing.T) {
	for _, tc := range []struct {
		name   string
		vhosts []*VirtualHost
	}{
		{"duplicate", []*VirtualHost{vhost("a", "x.com"), vhost("b", "X.com")}},
		{"two catch-alls", []*VirtualHost{vhost("a", "*"), vhost("b", "*")}},
		{"inner wildcard", []*VirtualHost{vhost("a", "a.*.com")}},
		{"no domains", []*VirtualHost{{Name: "a"}}},
	} {
		if _, err := NewTable("t", tc.vhosts); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestRouteMatching(t *testing.T) {
	re := regexp.MustCompile(`^(?:/api/v[0-9]+/.*)$`)
	routes := []*Route{
		{Name: "exact", Match: Match{Kind: PathExact, Path: "/exact"}},
		{Name: "exact-ci", Match: Match{Kind: PathExact, Path: "/CaseLess", CaseInsensitive: true}},
		{Name: "regex", Match: Match{Kind: PathRegex, Regex: re}},
		{Name: "sep", Match: Match{Kind: PathSeparatedPrefix, Path: "/sep"}},
		{Name: "header-exact", Match: Match{Kind: PathPrefix, Path: "/h", Headers: []HeaderMatcher{
			{Name: "End-User", Kind: HeaderString, String: StringMatcher{Kind: StringExact, Value: "jason"}},
		}}},
		{Name: "header-inverted", Match: Match{Kind: PathPrefix, Path: "/h", Headers: []HeaderMatcher{
			{Name: "End-User", Kind: HeaderString, String: StringMatcher{Kind: StringExact, Value: "jason"}, Invert: true},
		}}},
		{Name: "present", Match: Match{Kind: PathPrefix, Path: "/p", Headers: []HeaderMatcher{
			{Name: "X-Canary", Kind: HeaderPresent, Present: true},
		}}},
		{Name: "absent", Match: Match{Kind: PathPrefix, Path: "/p", Headers: []HeaderMatcher{
			{Name: "X-Canary", Kind: HeaderPresent, Present: false},
		}}},
		{Name: "method", Match: Match{Kind: PathPrefix, Path: "/m", Headers: []HeaderMatcher{
			{Name: ":method", Kind: HeaderString, String: StringMatcher{Kind: StringExact, Value: "POST"}},
		}}},
		{Name: "query", Match: Match{Kind: PathPrefix, Path: "/q", Query: []QueryMatcher{
			{Name: "debug", String: &StringMatcher{Kind: StringExact, Value: "on"}},
		}}},
		{Name: "catch-all", Match: Match{Kind: PathPrefix, Path: "/"}},
	}
	tbl := mustTable(t, &VirtualHost{Name: "vh", Domains: []string{"*"}, Routes: routes})
	for _, tc := range []struct {
		path   string
		method string
		hdr    headers
		want   string
	}{
		{path: "/exact", want: "exact"},
		{path: "/exact?x=1", want: "exact"}, // the query string is not part of the path
		{path: "/exact/", want: "catch-all"},
		{path: "/caseless", want: "exact-ci"},
		{path: "/api/v2/items", want: "regex"},
		{path: "/api/vX/items", want: "catch-all"},
		{path: "/sep", want: "sep"},
		{path: "/sep/x", want: "sep"},
		{path: "/separate", want: "catch-all"},
		{path: "/h", hdr: headers{"End-User": "jason"}, want: "header-exact"},
		{path: "/h", hdr: headers{"End-User": "bob"}, want: "header-inverted"},
		{path: "/h", hdr: headers{}, want: "catch-all"}, // invert_match does not match a missing header
		{path: "/p", hdr: headers{"X-Canary": ""}, want: "present"},
		{path: "/p", hdr: headers{}, want: "absent"},
		{path: "/m", method: "POST", want: "method"},
		{path: "/m", method: "GET", want: "catch-all"},
		{path: "/q?a=1&debug=on", want: "query"},
		{path: "/q?debug=off", want: "catch-all"},
		{path: "/q?debug=%6Fn", want: "query"},
	} {
		h := tc.hdr
		if h == nil {
			h = headers{}
		}
		if tc.method != "" {
			h[":method"] = tc.method
		}
		_, rt := tbl.Select(&Request{Authority: "any", Path: tc.path, Headers: h})
		got := "<nil>"
		if rt != nil {
			got = rt.Name
		}
		if got != tc.want {
			t.Errorf("%s %v: got %s, want %s", tc.path, tc.hdr, got, tc.want)
		}
	}
}

func TestHeaderMatcherKinds(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    HeaderMatcher
		hdr  headers
		want bool
	}{
		{"prefix", HeaderMatcher{Name: "X", Kind: HeaderString, String: StringMatcher{Kind: StringPrefix, Value: "ab"}}, headers{"X": "abc"}, true},
		{"suffix", HeaderMatcher{Name: "X", Kind: HeaderString, String: StringMatcher{Kind: StringSuffix, Value: "bc"}}, headers{"X": "abc"}, true},
		{"contains", HeaderMatcher{Name: "X", Kind: HeaderString, String: StringMatcher{Kind: StringContains, Value: "b"}}, headers{"X": "abc"}, true},
		{"contains ignore case", HeaderMatcher{Name: "X", Kind: HeaderString, String: StringMatcher{Kind: StringContains, Value: "B", IgnoreCase: true}}, headers{"X": "abc"}, true},
		{"regex whole value", HeaderMatcher{Name: "X", Kind: HeaderString, String: StringMatcher{Kind: StringRegex, Regex: regexp.MustCompile(`^(?:b)$`)}}, headers{"X": "abc"}, false},
		{"exact case", HeaderMatcher{Name: "X", Kind: HeaderString, String: StringMatcher{Kind: StringExact, Value: "ABC"}}, headers{"X": "abc"}, false},
		{"range in", HeaderMatcher{Name: "X", Kind: HeaderRange, RangeStart: 1, RangeEnd: 10}, headers{"X": "9"}, true},
		{"range end exclusive", HeaderMatcher{Name: "X", Kind: HeaderRange, RangeStart: 1, RangeEnd: 10}, headers{"X": "10"}, false},
		{"inverted present on missing", HeaderMatcher{Name: "X", Kind: HeaderPresent, Present: true, Invert: true}, headers{}, true},
		{"missing as empty", HeaderMatcher{Name: "X", Kind: HeaderString, String: StringMatcher{Kind: StringExact, Value: ""}, TreatMissingAsEmpty: true}, headers{}, true},
		{"deprecated empty exact matches any", HeaderMatcher{Name: "X", Kind: HeaderString, EmptyMatchesAny: true}, headers{"X": "v"}, true},
	} {
		if got := tc.m.Matches(tc.hdr); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestWeightedPickFollowsWeights(t *testing.T) {
	var a Action
	if err := a.SetWeighted([]WeightedCluster{{Name: "v1", Weight: 90}, {Name: "v2", Weight: 10}}); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for r := range uint64(100) {
		name, wc := a.Pick(r)
		if wc == nil || wc.Name != name {
			t.Fatalf("Pick returned %q and %v", name, wc)
		}
		counts[name]++
	}
	if counts["v1"] != 90 || counts["v2"] != 10 {
		t.Fatalf("got %v over one full cycle, want 90/10", counts)
	}
	if err := (&Action{}).SetWeighted([]WeightedCluster{{Name: "x"}}); err == nil {
		t.Fatal("zero total weight accepted")
	}
}

func TestRewritePath(t *testing.T) {
	prefix := &Route{Match: Match{Kind: PathPrefix, Path: "/api/"}, Action: Action{PrefixRewrite: "/", HasPrefixRewrite: true}}
	if got, _ := prefix.RewritePath("/api/items?x=1"); got != "/items?x=1" {
		t.Errorf("prefix rewrite: %q", got)
	}
	re := &Route{Match: Match{Kind: PathPrefix, Path: "/"}, Action: Action{
		RegexRewrite: regexp.MustCompile(`^/service/([^/]+)(/.*)$`), RegexSubstitution: EnvoySubstitution(`\2/instance/\1`),
	}}
	if got, _ := re.RewritePath("/service/foo/v1/api?q"); got != "/v1/api/instance/foo?q" {
		t.Errorf("regex rewrite: %q", got)
	}
	if got, changed := (&Route{}).RewritePath("/same"); changed || got != "/same" {
		t.Errorf("no rewrite: %q %v", got, changed)
	}
}

func TestHeaderMutationsApplyInEnvoyOrder(t *testing.T) {
	tbl := mustTable(t, vhost("vh", "*"))
	vh := tbl.VirtualHosts[0]
	rt := vh.Routes[0]
	rt.RequestHeaders = HeaderMutation{Add: []HeaderValue{{Name: "X-Level", Value: "route", Action: OverwriteIfExistsOrAdd}}}
	vh.RequestHeaders = HeaderMutation{Add: []HeaderValue{{Name: "X-Level", Value: "vhost", Action: OverwriteIfExistsOrAdd}}}
	tbl.RequestHeaders = HeaderMutation{
		Add: []HeaderValue{
			{Name: "X-Level", Value: "table", Action: AddIfAbsent},
			{Name: "X-Append", Value: "b"},
			{Name: "X-Only-If-Exists", Value: "v", Action: OverwriteIfExists},
			{Name: "X-Empty", Value: ""},
		},
		Remove: []string{"X-Secret"},
	}
	h := http.Header{"X-Append": {"a"}, "X-Secret": {"s"}}
	req, _ := tbl.Mutations(vh, rt, nil)
	ApplyAll(req, h)
	if got := h.Get("X-Level"); got != "vhost" {
		t.Errorf("X-Level: %q (the table's add-if-absent must not override the vhost's value)", got)
	}
	if got := h.Values("X-Append"); len(got) != 2 {
		t.Errorf("X-Append: %q", got)
	}
	for _, name := range []string{"X-Secret", "X-Only-If-Exists", "X-Empty"} {
		if _, ok := h[name]; ok {
			t.Errorf("%s present", name)
		}
	}
	tbl.MostSpecificWins = true
	h = http.Header{}
	req, _ = tbl.Mutations(vh, rt, nil)
	ApplyAll(req, h)
	if got := h.Get("X-Level"); got != "route" {
		t.Errorf("most_specific_header_mutations_wins: X-Level %q", got)
	}
}

func BenchmarkSelect(b *testing.B) {
	var vhs []*VirtualHost
	for _, d := range []string{"reviews:9080", "ratings:9080", "details:9080", "productpage:9080"} {
		vhs = append(vhs, &VirtualHost{Name: d, Domains: []string{d}, Routes: []*Route{
			{Match: Match{Kind: PathPrefix, Path: "/api", Headers: []HeaderMatcher{{Name: "End-User", Kind: HeaderString, String: StringMatcher{Kind: StringExact, Value: "jason"}}}}},
			{Match: Match{Kind: PathPrefix, Path: "/"}, Action: Action{Cluster: d}},
		}})
	}
	tbl, _ := NewTable("b", vhs)
	req := &Request{Authority: "ratings:9080", Path: "/api/ratings/1", Headers: headers{"End-User": "bob"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, rt := tbl.Select(req); rt == nil {
			b.Fatal("no route")
		}
	}
}

package route

import (
	"regexp"
	"testing"
)

// FuzzSelect feeds untrusted request data (authority, path with query, a header) through a table
// using every matcher kind; routing must never panic.
func FuzzSelect(f *testing.F) {
	for _, seed := range [][3]string{
		{"reviews:9080", "/api/v1/items?debug=on&x=%zz", "jason"},
		{"[::1]:80", "/sep/", ""},
		{"UPPER.Example.COM", "?", "a,b"},
		{"", "", ""},
		{"*.x", "//double//slash#frag", "\x00"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	tbl, err := NewTable("fuzz", []*VirtualHost{
		{Name: "exact", Domains: []string{"reviews:9080"}, Routes: []*Route{
			{Match: Match{Kind: PathRegex, Regex: regexp.MustCompile(`^(?:/api/v[0-9]+/.*)$`), Query: []QueryMatcher{{Name: "debug"}}}},
			{Match: Match{Kind: PathSeparatedPrefix, Path: "/sep"}},
			{Match: Match{Kind: PathExact, Path: "/x", CaseInsensitive: true}},
			{Match: Match{Kind: PathPrefix, Path: "/", Headers: []HeaderMatcher{
				{Name: "End-User", Kind: HeaderRange, RangeStart: -5, RangeEnd: 5},
				{Name: "End-User", Kind: HeaderString, String: StringMatcher{Kind: StringContains, Value: "J", IgnoreCase: true}, Invert: true},
			}}},
		}},
		{Name: "suffix", Domains: []string{"*.com"}},
		{Name: "prefix", Domains: []string{"upper.*"}},
		{Name: "any", Domains: []string{"*"}, Routes: []*Route{{Match: Match{Kind: PathPrefix, Path: "/"}}}},
	})
	if err != nil {
		f.Fatal(err)
	}
	tbl.IgnorePortInHostMatching = true
	f.Fuzz(func(t *testing.T, authority, path, user string) {
		tbl.Select(&Request{Authority: authority, Path: path, Headers: headers{"End-User": user}})
		(&Route{Match: Match{Kind: PathPrefix, Path: "/api/"}, Action: Action{PrefixRewrite: "/", HasPrefixRewrite: true}}).RewritePath(path)
		_ = EnvoySubstitution(user)
	})
}

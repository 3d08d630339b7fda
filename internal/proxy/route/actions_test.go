package route

import (
	"regexp"
	"testing"
)

func TestRedirectLocation(t *testing.T) {
	prefix := Match{Kind: PathPrefix, Path: "/api"}
	for _, tc := range []struct {
		name               string
		match              Match
		rd                 Redirect
		scheme, host, path string
		want               string
	}{
		{"https keeps a non-default port", prefix, Redirect{Scheme: "https"}, "http", "a.test:8080", "/api/x?q", "https://a.test:8080/api/x?q"},
		{"https drops port 80", prefix, Redirect{Scheme: "https"}, "http", "a.test:80", "/api", "https://a.test/api"},
		{"new host and port", prefix, Redirect{Host: "b.test", Port: 9000}, "http", "a.test:80", "/", "http://b.test:9000/"},
		{"path redirect keeps the query", prefix, Redirect{Path: "/v2", HasPath: true}, "http", "a", "/api/x?q=1", "http://a/v2?q=1"},
		{"path redirect with its own query", prefix, Redirect{Path: "/v2?x=y", HasPath: true}, "http", "a", "/api?q=1", "http://a/v2?x=y"},
		{"prefix rewrite and strip query", prefix, Redirect{PrefixRewrite: "/v1", HasPrefixRewrite: true, StripQuery: true}, "http", "a", "/api/users?t=1", "http://a/v1/users"},
		{"regex rewrite", Match{Kind: PathRegex, Regex: regexp.MustCompile(`^/.*$`)},
			Redirect{RegexRewrite: regexp.MustCompile(`^/user/([0-9]+)$`), RegexSubstitution: "/u/${1}"}, "http", "a", "/user/42", "http://a/u/42"},
	} {
		r := &Route{Match: tc.match, Action: Action{Redirect: &tc.rd}}
		if got := r.RedirectLocation(tc.scheme, tc.host, tc.path); got != tc.want {
			t.Errorf("%s: got %q want %q", tc.name, got, tc.want)
		}
	}
}

func TestPerFilterConfigMostSpecificLevelWins(t *testing.T) {
	tbl := &Table{FilterConfigs: FilterConfigs{"f": {Config: "table", Toggles: true, Disabled: true}}}
	vh := &VirtualHost{FilterConfigs: FilterConfigs{"f": {Config: "vh"}}}
	rt := &Route{}
	wc := &WeightedCluster{FilterConfigs: FilterConfigs{"f": {Toggles: true, Disabled: false}}}
	if cfg, disabled, toggled := tbl.PerFilter("f", vh, rt, nil); cfg != "vh" || !disabled || !toggled {
		t.Fatalf("route without config: %v %v %v", cfg, disabled, toggled)
	}
	if cfg, disabled, toggled := tbl.PerFilter("f", vh, rt, wc); cfg != "vh" || disabled || !toggled {
		t.Fatalf("weighted cluster enables: %v %v %v", cfg, disabled, toggled)
	}
	if cfg, _, toggled := tbl.PerFilter("other", vh, rt, wc); cfg != nil || toggled {
		t.Fatal("config found for a filter nobody configured")
	}
}

func TestParseRetryOnRejectsUnknownTokens(t *testing.T) {
	on, bad := ParseRetryOn("5xx, connect-failure,unavailable")
	if bad != "" || on != Retry5xx|RetryConnectFailure|RetryGRPCUnavailable {
		t.Fatalf("%b %q", on, bad)
	}
	if _, bad := ParseRetryOn("5xx,reset-before-request"); bad != "reset-before-request" {
		t.Fatalf("unknown token %q", bad)
	}
}

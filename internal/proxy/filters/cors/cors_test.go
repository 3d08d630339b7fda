package cors

import (
	"context"
	"net/http"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

func TestOriginMatchingFollowsEnvoy(t *testing.T) {
	p := &Policy{Origins: []route.StringMatcher{
		{Kind: route.StringPrefix, Value: "https://"},
		{Kind: route.StringSuffix, Value: ".internal"},
	}}
	for origin, want := range map[string]bool{"https://a.test": true, "http://b.internal": true, "http://c.test": false} {
		if got := p.allows(origin); got != want {
			t.Errorf("%s: %v", origin, got)
		}
	}
	star := &Policy{Origins: []route.StringMatcher{{Kind: route.StringExact, Value: "*"}}}
	if !star.allows("http://anything") {
		t.Error(`a matcher matching "*" must allow every origin`)
	}
}

func TestPolicyDisabledByFilterEnabledLeavesRequestAlone(t *testing.T) {
	p := &Policy{Origins: []route.StringMatcher{{Kind: route.StringExact, Value: "*"}}, Enabled: 0}
	x := &filters.Exchange{Method: "OPTIONS", Info: &streaminfo.Info{}, Headers: http.Header{
		"Origin": {"http://a"}, "Access-Control-Request-Method": {"GET"},
	}}
	if (Filter{}).OnRequest(context.Background(), x, p) != filters.Continue || len(x.ResponseHeaders()) != 0 {
		t.Fatal("a disabled policy answered the preflight")
	}
	p.Enabled = filters.Always
	if (Filter{}).OnRequest(context.Background(), x, p) != filters.Stop || x.Reply().Status != 200 {
		t.Fatal("an enabled policy did not answer the preflight")
	}
}

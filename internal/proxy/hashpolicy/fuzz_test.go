package hashpolicy

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// FuzzHash feeds untrusted header, cookie and query text to every kind of policy: no panics, and a
// request's hash never depends on anything but the request.
func FuzzHash(f *testing.F) {
	f.Add("alice", `a=1; s="x"; b`, "q=1&q=2&u=%zz", "198.51.100.1:1")
	f.Add("", ";;=;", "&&=&", "")
	f.Add("a,b", `s=""`, "u=a+b%20c", "[::1]:80")
	p := Policy{Methods: []Method{
		{Kind: Header, Name: "X-User"}, {Kind: Cookie, Name: "s", HasTTL: true, CookieTTL: time.Second},
		{Kind: QueryParameter, Name: "u"}, {Kind: SourceIP}, {Kind: Header, Name: ":path"},
	}}
	f.Fuzz(func(t *testing.T, header, cookie, query, remote string) {
		r := &http.Request{Method: "GET", URL: &url.URL{Path: "/", RawQuery: query}, Header: http.Header{
			"X-User": {header}, "Cookie": {cookie}}, RemoteAddr: remote}
		a, b := p.Hash(r), p.Hash(r)
		if a != b {
			t.Fatalf("hash changed between calls: %+v vs %+v", a, b)
		}
	})
}

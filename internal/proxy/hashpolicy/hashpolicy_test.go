package hashpolicy

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

func req(target string, hdr ...string) *http.Request {
	r := httptest.NewRequest("GET", target, nil)
	r.RemoteAddr = "192.0.2.7:51000"
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

func TestHashFromEachSource(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		req    *http.Request
		want   uint64
		ok     bool
	}{
		{"header", Policy{[]Method{{Kind: Header, Name: "X-User"}}}, req("/", "X-User", "alice"), xxhash.Sum64String("alice"), true},
		{"absent header gives none", Policy{[]Method{{Kind: Header, Name: "X-User"}}}, req("/"), 0, false},
		{"header values sorted then hashed as one", Policy{[]Method{{Kind: Header, Name: "X-User"}}}, req("/", "X-User", "b", "X-User", "a"), xxhash.Sum64String("ab"), true},
		{"authority", Policy{[]Method{{Kind: Header, Name: ":authority"}}}, req("http://reviews:9080/"), xxhash.Sum64String("reviews:9080"), true},
		{"header regex rewrite", Policy{[]Method{{Kind: Header, Name: "X-User", Regex: regexp.MustCompile(`-\d+$`), Substitution: ""}}}, req("/", "X-User", "alice-42"), xxhash.Sum64String("alice"), true},
		{"cookie", Policy{[]Method{{Kind: Cookie, Name: "session"}}}, req("/", "Cookie", `a=1; session="s1"; b=2`), xxhash.Sum64String("s1"), true},
		{"source ip", Policy{[]Method{{Kind: SourceIP}}}, req("/"), xxhash.Sum64String("192.0.2.7"), true},
		{"query parameter, first value, unescaped", Policy{[]Method{{Kind: QueryParameter, Name: "user"}}}, req("/p?x=1&user=bob%20b&user=eve"), xxhash.Sum64String("bob b"), true},
		{"missing query parameter", Policy{[]Method{{Kind: QueryParameter, Name: "user"}}}, req("/p?x=1"), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.policy.Hash(tt.req)
			if got.OK != tt.ok || got.Hash != tt.want {
				t.Fatalf("got %+v, want %d %v", got, tt.want, tt.ok)
			}
		})
	}
}

func TestPoliciesCombineByRotateXorAndStopAtTerminal(t *testing.T) {
	a, b := xxhash.Sum64String("alice"), xxhash.Sum64String("192.0.2.7")
	r := req("/", "X-User", "alice")
	both := Policy{[]Method{{Kind: Header, Name: "X-User"}, {Kind: SourceIP}}}
	if got := both.Hash(r); got.Hash != (a<<1|a>>63)^b {
		t.Fatalf("combined hash %d", got.Hash)
	}
	terminal := Policy{[]Method{{Kind: Header, Name: "X-User", Terminal: true}, {Kind: SourceIP}}}
	if got := terminal.Hash(r); got.Hash != a {
		t.Fatalf("terminal policy did not stop: %d", got.Hash)
	}
	// A terminal policy that finds nothing lets the next one decide.
	if got := terminal.Hash(req("/")); !got.OK || got.Hash != b {
		t.Fatalf("fell through to %+v", got)
	}
	same := Policy{[]Method{{Kind: Header, Name: "X-User"}, {Kind: Header, Name: "X-User"}}}
	if got := same.Hash(r); got.Hash == 0 {
		t.Fatal("two equal policies cancelled out")
	}
	var none *Policy
	if got := none.Hash(r); got.OK {
		t.Fatal("nil policy produced a hash")
	}
}

func TestCookieWithTTLIsGeneratedAndSetWhenAbsent(t *testing.T) {
	p := Policy{[]Method{{Kind: Cookie, Name: "lb", HasTTL: true, CookieTTL: time.Hour, CookiePath: "/app"}}}
	got := p.Hash(req("/"))
	if !got.OK || !strings.HasPrefix(got.SetCookie, `lb="`) || !strings.HasSuffix(got.SetCookie, `"; Max-Age=3600; Path=/app; HttpOnly`) {
		t.Fatalf("got %+v", got)
	}
	value := strings.TrimPrefix(strings.Split(got.SetCookie, ";")[0], "lb=")
	// The client sends it back: same hash, nothing to set.
	again := p.Hash(req("/", "Cookie", "lb="+value))
	if again.Hash != got.Hash || again.SetCookie != "" {
		t.Fatalf("returning cookie: %+v vs %+v", again, got)
	}
	session := Policy{[]Method{{Kind: Cookie, Name: "lb", HasTTL: true}}}
	if sc := session.Hash(req("/")).SetCookie; strings.Contains(sc, "Max-Age") {
		t.Fatalf("ttl 0 must be a session cookie: %q", sc)
	}
}

func TestHeaderHashDoesNotAllocate(t *testing.T) {
	p := Policy{[]Method{{Kind: Header, Name: "X-User"}, {Kind: SourceIP}, {Kind: Cookie, Name: "s"}, {Kind: QueryParameter, Name: "q"}}}
	r := req("/x?q=1", "X-User", "alice", "Cookie", "s=1")
	if n := testing.AllocsPerRun(100, func() { p.Hash(r) }); n != 0 {
		t.Fatalf("%v allocations per request", n)
	}
}

package hashpolicy

import (
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/trellis-mesh/trellis/internal/proxy/reqparse"
)

// Kind is what a policy hashes.
type Kind int

const (
	// Header hashes the values of a request header (sorted, concatenated), optionally rewritten.
	Header Kind = iota
	// Cookie hashes a cookie's value.
	Cookie
	// SourceIP hashes the downstream connection's IP address.
	SourceIP
	// QueryParameter hashes the first value of a query parameter.
	QueryParameter
)

// Method is one entry of a route's hash_policy.
type Method struct {
	Kind Kind
	// Name is the header (canonical form, or ":authority", ":path", ":method"), cookie or query
	// parameter name.
	Name string
	// Regex and Substitution rewrite header values before hashing (regex_rewrite); Substitution is
	// in Go's regexp.Expand syntax.
	Regex        *regexp.Regexp
	Substitution string
	// CookieTTL, when HasTTL, makes the proxy generate the cookie when the request lacks it and set
	// it on the response (Max-Age omitted when the ttl is 0: a session cookie).
	CookieTTL  time.Duration
	HasTTL     bool
	CookiePath string
	// Terminal stops evaluation once a hash has been produced.
	Terminal bool
}

// Policy is a route's hash_policy list.
type Policy struct {
	Methods []Method
}

// Result is what Hash found.
type Result struct {
	Hash uint64
	OK   bool
	// SetCookie, when not empty, is a Set-Cookie header value to add to the response: a cookie the
	// policy generated for a request that had none.
	SetCookie string
}

// Hash computes r's hash. A nil policy, or one whose methods all found nothing, gives OK false:
// the load balancer then picks at random, as Envoy's does.
func (p *Policy) Hash(r *http.Request) Result {
	var res Result
	if p == nil {
		return res
	}
	for i := range p.Methods {
		m := &p.Methods[i]
		h, ok := m.eval(r, &res)
		if ok {
			// Envoy rotates the running hash before xoring in the next, so that two equal rules do
			// not cancel out.
			old := uint64(0)
			if res.OK {
				old = res.Hash<<1 | res.Hash>>63
			}
			res.Hash, res.OK = old^h, true
		}
		if m.Terminal && res.OK {
			break
		}
	}
	return res
}

func (m *Method) eval(r *http.Request, res *Result) (uint64, bool) {
	switch m.Kind {
	case Header:
		return m.header(r)
	case Cookie:
		if v, ok := reqparse.CookieValue(r.Header["Cookie"], m.Name); ok && v != "" {
			return xxhash.Sum64String(v), true
		}
		if !m.HasTTL {
			return 0, false
		}
		v := generatedCookie(r)
		res.SetCookie = setCookie(m.Name, v, m.CookiePath, m.CookieTTL)
		return xxhash.Sum64String(v), true
	case SourceIP:
		ip := r.RemoteAddr
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
		if ip == "" {
			return 0, false
		}
		return xxhash.Sum64String(ip), true
	case QueryParameter:
		if v, ok := reqparse.QueryValue(r.URL.RawQuery, m.Name); ok {
			return xxhash.Sum64String(v), true
		}
	}
	return 0, false
}

func (m *Method) header(r *http.Request) (uint64, bool) {
	var one [1]string
	var values []string
	switch m.Name {
	case ":authority":
		one[0] = r.Host
		values = one[:]
	case ":method":
		one[0] = r.Method
		values = one[:]
	case ":path":
		one[0] = r.URL.RequestURI()
		values = one[:]
	default:
		values = r.Header[m.Name]
	}
	if len(values) == 0 {
		return 0, false
	}
	if m.Regex == nil && len(values) == 1 {
		return xxhash.Sum64String(values[0]), true
	}
	vs := slices.Clone(values)
	if m.Regex != nil {
		for i, v := range vs {
			vs[i] = m.Regex.ReplaceAllString(v, m.Substitution)
		}
	}
	// Envoy sorts the values so their order does not change the hash, then hashes them as one
	// stream.
	slices.Sort(vs)
	d := xxhash.New()
	for _, v := range vs {
		_, _ = d.WriteString(v)
	}
	return d.Sum64(), true
}

// generatedCookie is Envoy's value for a cookie it creates: the hex XXH64 of the downstream
// connection's remote and local addresses, so every request of one connection gets the same one.
func generatedCookie(r *http.Request) string {
	local := ""
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		local = a.String()
	}
	hex := strconv.FormatUint(xxhash.Sum64String(r.RemoteAddr+local), 16)
	return strings.Repeat("0", 16-len(hex)) + hex // Envoy's Hex::uint64ToHex pads to 16 digits
}

// setCookie renders Envoy's Set-Cookie for a generated cookie (makeSetCookieValue).
func setCookie(name, value, path string, ttl time.Duration) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteString(`="`)
	b.WriteString(value)
	b.WriteByte('"')
	if s := int64(ttl / time.Second); s > 0 {
		b.WriteString("; Max-Age=")
		b.WriteString(strconv.FormatInt(s, 10))
	}
	if path != "" {
		b.WriteString("; Path=")
		b.WriteString(path)
	}
	b.WriteString("; HttpOnly")
	return b.String()
}

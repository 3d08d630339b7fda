package route

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Table is a routing table: Envoy's RouteConfiguration.
type Table struct {
	Name         string
	VirtualHosts []*VirtualHost // in declared order

	// IgnorePortInHostMatching strips ":port" from the authority before looking up virtual hosts.
	IgnorePortInHostMatching bool

	RequestHeaders  HeaderMutation
	ResponseHeaders HeaderMutation
	// MostSpecificWins reverses the order header mutations apply in, so a route's own changes have the
	// last word over its virtual host's and the table's.
	MostSpecificWins bool
	FilterConfigs    FilterConfigs

	exact  map[string]*VirtualHost
	suffix []wildcardHost // "*.foo.com" stored as ".foo.com", longest first
	prefix []wildcardHost // "foo.*" stored as "foo.", longest first
	any    *VirtualHost   // "*"
}

type wildcardHost struct {
	part string
	vh   *VirtualHost
}

// VirtualHost is a set of domains and the routes that serve them.
type VirtualHost struct {
	Name    string
	Domains []string
	Routes  []*Route

	RequestHeaders  HeaderMutation
	ResponseHeaders HeaderMutation
	FilterConfigs   FilterConfigs
	// CORS is the deprecated VirtualHost.cors policy (see Action.CORS).
	CORS any
}

// Route is one entry of a virtual host: the first route whose Match matches wins.
type Route struct {
	Name   string
	Match  Match
	Action Action

	RequestHeaders  HeaderMutation
	ResponseHeaders HeaderMutation
	FilterConfigs   FilterConfigs
}

// Request is what routing looks at.
type Request struct {
	// Authority is the Host header (:authority) as received, port included.
	Authority string
	// Path is :path, the origin-form request target, query string included.
	Path string
	// Headers gives access to the request headers; may be nil when no route matches on headers.
	Headers HeaderGetter
}

// HeaderGetter reads request headers. Name is the canonical MIME form ("X-User") for ordinary headers
// and lowercase with a colon for pseudo-headers (":method", ":authority", ":path", ":scheme"). A
// header sent several times is reported as its values joined by ",", as Envoy does.
type HeaderGetter interface {
	Get(name string) (value string, ok bool)
}

// NewTable indexes vhosts by domain, checking Envoy's rules: a domain appears once per table, and a
// wildcard is either the whole domain or its first or last character.
func NewTable(name string, vhosts []*VirtualHost) (*Table, error) {
	t := &Table{Name: name, VirtualHosts: vhosts, exact: make(map[string]*VirtualHost)}
	seen := make(map[string]bool)
	for i, vh := range vhosts {
		if len(vh.Domains) == 0 {
			return nil, fmt.Errorf("virtual_hosts[%d] (%q): domains: at least one domain is required", i, vh.Name)
		}
		for j, d := range vh.Domains {
			d = strings.ToLower(d)
			field := fmt.Sprintf("virtual_hosts[%d] (%q): domains[%d] %q", i, vh.Name, j, d)
			if seen[d] {
				return nil, fmt.Errorf("%s: domain appears in more than one place; each domain may be used once per route configuration", field)
			}
			seen[d] = true
			switch n := strings.Count(d, "*"); {
			case d == "*":
				t.any = vh
			case n == 0:
				t.exact[d] = vh
			case n == 1 && strings.HasPrefix(d, "*"):
				t.suffix = append(t.suffix, wildcardHost{part: d[1:], vh: vh})
			case n == 1 && strings.HasSuffix(d, "*"):
				t.prefix = append(t.prefix, wildcardHost{part: d[:len(d)-1], vh: vh})
			default:
				return nil, fmt.Errorf("%s: a wildcard may only be the whole domain or its first or last character", field)
			}
		}
	}
	// Longest wildcard first: Envoy prefers the most specific one. Stable so equal lengths keep
	// declaration order.
	byLen := func(a, b wildcardHost) int { return cmp.Compare(len(b.part), len(a.part)) }
	slices.SortStableFunc(t.suffix, byLen)
	slices.SortStableFunc(t.prefix, byLen)
	return t, nil
}

// VirtualHost finds the virtual host for an authority, in Envoy's order: exact domain, then suffix
// wildcards ("*.foo.com"), then prefix wildcards ("foo.*"), longest first, then "*". Matching ignores
// case. A wildcard never matches the empty string.
func (t *Table) VirtualHost(authority string) *VirtualHost {
	host := authority
	if t.IgnorePortInHostMatching {
		host = stripPort(host)
	}
	if hasUpper(host) {
		host = strings.ToLower(host) // rare: clients send lowercase hosts
	}
	if vh, ok := t.exact[host]; ok {
		return vh
	}
	for _, w := range t.suffix {
		if len(host) > len(w.part) && strings.HasSuffix(host, w.part) {
			return w.vh
		}
	}
	for _, w := range t.prefix {
		if len(host) > len(w.part) && strings.HasPrefix(host, w.part) {
			return w.vh
		}
	}
	return t.any
}

// Select returns the virtual host and route for req; the route is nil when none matches (a 404 in
// Envoy), and so is the virtual host when no domain matches.
func (t *Table) Select(req *Request) (*VirtualHost, *Route) {
	vh := t.VirtualHost(req.Authority)
	if vh == nil {
		return nil, nil
	}
	path := stripQuery(req.Path)
	for _, r := range vh.Routes {
		if r.Match.matches(req, path) {
			return vh, r
		}
	}
	return vh, nil
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}

// stripPort removes a trailing ":port", leaving bracketed IPv6 literals intact.
func stripPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.IndexByte(host[i:], ']') >= 0 {
		return host
	}
	if strings.Count(host, ":") > 1 && !strings.HasPrefix(host, "[") {
		return host // bare IPv6 address without a port
	}
	return host[:i]
}

// stripQuery returns the path without its query string and fragment: what Envoy's path matchers see.
func stripQuery(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

// queryOf returns the raw query string of a path, without the '?' and any fragment.
func queryOf(p string) string {
	i := strings.IndexByte(p, '?')
	if i < 0 {
		return ""
	}
	q := p[i+1:]
	if j := strings.IndexByte(q, '#'); j >= 0 {
		q = q[:j]
	}
	return q
}

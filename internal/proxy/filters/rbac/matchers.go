package rbac

import (
	"net/netip"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// matcher is one compiled Permission or Principal rule.
type matcher interface {
	match(r *Request) bool
}

type andMatcher []matcher

func (m andMatcher) match(r *Request) bool {
	for _, s := range m {
		if !s.match(r) {
			return false
		}
	}
	return true
}

type orMatcher []matcher

func (m orMatcher) match(r *Request) bool { return anyMatch(m, r) }

type notMatcher struct{ m matcher }

func (m notMatcher) match(r *Request) bool { return !m.m.match(r) }

type anyMatcher struct{}

func (anyMatcher) match(*Request) bool { return true }

// headerMatcher is Envoy's HeaderMatcher rule: multiple values of a header are joined with ","
// (the request's HeaderGetter does that), and a TCP connection has no headers.
type headerMatcher struct{ h route.HeaderMatcher }

func (m *headerMatcher) match(r *Request) bool { return m.h.Matches(r.Headers) }

// pathMatcher is url_path: the :path without its query and fragment. A connection without a
// :path (TCP) never matches, as in Envoy.
type pathMatcher struct{ s route.StringMatcher }

func (m *pathMatcher) match(r *Request) bool {
	if r.Headers == nil {
		return false
	}
	p, ok := r.Headers.Get(":path")
	if !ok {
		return false
	}
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	return m.s.Match(p)
}

// addrSource says which of a request's addresses an IP rule reads.
type addrSource int

const (
	directRemoteAddr addrSource = iota // source_ip, direct_remote_ip
	remoteAddr                         // remote_ip
	localAddr                          // destination_ip
)

type ipMatcher struct {
	prefix netip.Prefix
	source addrSource
}

func (m *ipMatcher) match(r *Request) bool {
	var a netip.Addr
	switch m.source {
	case directRemoteAddr:
		a = r.DirectRemote
	case remoteAddr:
		a = r.Remote
	case localAddr:
		a = r.Local.Addr()
	}
	return a.IsValid() && m.prefix.Contains(a.Unmap())
}

// portMatcher is destination_port; portRangeMatcher destination_port_range, [start, end).
type portMatcher struct{ port uint16 }

func (m portMatcher) match(r *Request) bool { return r.Local.IsValid() && r.Local.Port() == m.port }

type portRangeMatcher struct{ start, end int32 }

func (m portRangeMatcher) match(r *Request) bool {
	if !r.Local.IsValid() {
		return false
	}
	p := int32(r.Local.Port())
	return m.start <= p && p < m.end
}

// serverNameMatcher is requested_server_name: the SNI, "" without one.
type serverNameMatcher struct{ s route.StringMatcher }

func (m *serverNameMatcher) match(r *Request) bool { return m.s.Match(r.ServerName) }

// authenticatedMatcher is Principal.authenticated, as Envoy's AuthenticatedMatcher: any TLS
// connection when principal_name is unset; otherwise any URI SAN of the peer certificate, then any
// DNS SAN, then its subject, must match.
type authenticatedMatcher struct{ name *route.StringMatcher }

func (m *authenticatedMatcher) match(r *Request) bool {
	if r.TLS == nil {
		return false
	}
	if m.name == nil {
		return true
	}
	// The first URI SAN is usually already rendered (and is what mesh certificates carry), so the
	// common case renders nothing.
	skipFirst := r.PeerURISAN != ""
	if skipFirst && m.name.Match(r.PeerURISAN) {
		return true
	}
	if len(r.TLS.PeerCertificates) == 0 {
		return m.name.Match("")
	}
	cert := r.TLS.PeerCertificates[0]
	for i, u := range cert.URIs {
		if i == 0 && skipFirst {
			continue
		}
		if m.name.Match(u.String()) {
			return true
		}
	}
	for _, d := range cert.DNSNames {
		if m.name.Match(d) {
			return true
		}
	}
	return m.name.Match(cert.Subject.String())
}

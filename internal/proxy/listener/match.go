package listener

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// Filter chain selection follows Envoy's FilterChainMatch: the criteria are applied one after the
// other (destination port, destination IP, server name, transport protocol, application protocols,
// direct source IP, source type, source IP, source port). At each step only the chains that match
// the connection most specifically go on; a chain without that criterion matches least
// specifically. There is no backtracking: once a specific chain has won a step, chains that lost it
// are out even if the winner fails a later step. Config parsing refuses duplicate matches, so at
// most one chain is left.

// score is how specifically a criterion matched: noMatch, 0 for a criterion the chain does not set,
// higher for closer matches.
const noMatch = -1

var criteria = [...]func(m *xdsconfig.FilterChainMatch, c *ConnInfo) int{
	func(m *xdsconfig.FilterChainMatch, c *ConnInfo) int {
		if m.DestinationPort == 0 {
			return 0
		}
		if m.DestinationPort == uint32(c.Local.Port()) {
			return 1
		}
		return noMatch
	},
	func(m *xdsconfig.FilterChainMatch, c *ConnInfo) int {
		return prefixScore(m.PrefixRanges, c.Local.Addr())
	},
	func(m *xdsconfig.FilterChainMatch, c *ConnInfo) int {
		return serverNameScore(m.ServerNames, c.ServerName)
	},
	func(m *xdsconfig.FilterChainMatch, c *ConnInfo) int {
		switch m.TransportProtocol {
		case "":
			return 0
		case c.TransportProtocol:
			return 1
		}
		return noMatch
	},
	func(m *xdsconfig.FilterChainMatch, c *ConnInfo) int {
		if len(m.ApplicationProtocols) == 0 {
			return 0
		}
		for _, p := range c.ApplicationProtocols {
			if slices.Contains(m.ApplicationProtocols, p) {
				return 1
			}
		}
		return noMatch
	},
	// Without the PROXY protocol the directly connected source is the source.
	func(m *xdsconfig.FilterChainMatch, c *ConnInfo) int {
		return prefixScore(m.DirectSourcePrefixRanges, c.Remote.Addr())
	},
	func(m *xdsconfig.FilterChainMatch, c *ConnInfo) int {
		if m.SourceType == xdsconfig.SourceAny {
			return 0
		}
		local := c.Remote.Addr().IsLoopback() || c.Remote.Addr() == c.Local.Addr()
		if local == (m.SourceType == xdsconfig.SourceLocal) {
			return 1
		}
		return noMatch
	},
	func(m *xdsconfig.FilterChainMatch, c *ConnInfo) int {
		return prefixScore(m.SourcePrefixRanges, c.Remote.Addr())
	},
	func(m *xdsconfig.FilterChainMatch, c *ConnInfo) int {
		if len(m.SourcePorts) == 0 {
			return 0
		}
		if slices.Contains(m.SourcePorts, uint32(c.Remote.Port())) {
			return 1
		}
		return noMatch
	},
}

// prefixScore is the longest matching prefix, plus one so a /0 beats no criterion.
func prefixScore(ps []netip.Prefix, a netip.Addr) int {
	if len(ps) == 0 {
		return 0
	}
	best := noMatch
	for _, p := range ps {
		if p.Contains(a) {
			best = max(best, p.Bits()+1)
		}
	}
	return best
}

// serverNameScore ranks an exact name above any wildcard, and a longer wildcard suffix
// ("*.b.example.com") above a shorter one ("*.example.com").
func serverNameScore(names []string, sni string) int {
	if len(names) == 0 {
		return 0
	}
	best := noMatch
	for _, n := range names {
		switch {
		case n == sni:
			return 1 << 20
		case strings.HasPrefix(n, "*.") && len(sni) > len(n)-1 && strings.HasSuffix(sni, n[1:]):
			best = max(best, len(n))
		}
	}
	return best
}

// selectChain returns the chain serving a connection, or nil.
func selectChain(chains []*runChain, info *ConnInfo) *runChain {
	var buf [8]*runChain
	cands := append(buf[:0], chains...)
	for _, crit := range criteria {
		best := noMatch
		kept := cands[:0]
		for _, c := range cands {
			s := crit(&c.cfg.Match, info)
			switch {
			case s > best:
				best = s
				kept = append(kept[:0], c)
			case s == best && s != noMatch:
				kept = append(kept, c)
			}
		}
		cands = kept
		if len(cands) == 0 {
			return nil
		}
	}
	return cands[0]
}

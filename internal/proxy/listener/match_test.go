package listener

import (
	"net/netip"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

func chainsOf(ms map[string]xdsconfig.FilterChainMatch) []*runChain {
	var out []*runChain
	for name, m := range ms {
		out = append(out, &runChain{cfg: Chain{Name: name, Match: m}})
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestFilterChainSelectionFollowsEnvoysOrder(t *testing.T) {
	conn := func(local, remote, sni, transport string, alpn ...string) ConnInfo {
		return ConnInfo{Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote), ServerName: sni,
			TransportProtocol: transport, ApplicationProtocols: alpn}
	}
	for _, tc := range []struct {
		name   string
		chains map[string]xdsconfig.FilterChainMatch
		conn   ConnInfo
		want   string // "" for no chain
	}{
		{"exact SNI beats wildcard beats none", map[string]xdsconfig.FilterChainMatch{
			"exact": {ServerNames: []string{"api.example.com"}},
			"wild":  {ServerNames: []string{"*.example.com"}},
			"any":   {},
		}, conn("10.0.0.1:443", "10.0.0.9:5000", "api.example.com", "tls"), "exact"},
		{"longer wildcard wins", map[string]xdsconfig.FilterChainMatch{
			"short": {ServerNames: []string{"*.com"}},
			"long":  {ServerNames: []string{"*.example.com"}},
		}, conn("10.0.0.1:443", "10.0.0.9:5000", "a.b.example.com", "tls"), "long"},
		{"wildcard needs a label before the suffix", map[string]xdsconfig.FilterChainMatch{
			"wild": {ServerNames: []string{"*.example.com"}},
			"any":  {},
		}, conn("10.0.0.1:443", "10.0.0.9:5000", "example.com", "tls"), "any"},
		{"no SNI falls to chains without server_names", map[string]xdsconfig.FilterChainMatch{
			"named": {ServerNames: []string{"api.example.com"}},
			"plain": {TransportProtocol: "raw_buffer"},
		}, conn("10.0.0.1:80", "10.0.0.9:5000", "", "raw_buffer"), "plain"},
		{"destination port is decided first, without backtracking", map[string]xdsconfig.FilterChainMatch{
			"port":  {DestinationPort: 443, ServerNames: []string{"other.example.com"}},
			"exact": {ServerNames: []string{"api.example.com"}},
		}, conn("10.0.0.1:443", "10.0.0.9:5000", "api.example.com", "tls"), ""},
		{"longest destination prefix wins", map[string]xdsconfig.FilterChainMatch{
			"wide":   {PrefixRanges: prefixes("10.0.0.0/8")},
			"narrow": {PrefixRanges: prefixes("10.0.0.0/24")},
		}, conn("10.0.0.1:80", "10.0.0.9:5000", "", "raw_buffer"), "narrow"},
		{"transport protocol", map[string]xdsconfig.FilterChainMatch{
			"tls": {TransportProtocol: "tls"},
			"raw": {TransportProtocol: "raw_buffer"},
		}, conn("10.0.0.1:80", "10.0.0.9:5000", "", "raw_buffer"), "raw"},
		{"application protocols", map[string]xdsconfig.FilterChainMatch{
			"h2":    {ApplicationProtocols: []string{"h2", "h2c"}},
			"http1": {ApplicationProtocols: []string{"http/1.1"}},
		}, conn("10.0.0.1:80", "10.0.0.9:5000", "", "raw_buffer", "h2c"), "h2"},
		{"source type local", map[string]xdsconfig.FilterChainMatch{
			"local":    {SourceType: xdsconfig.SourceLocal},
			"external": {SourceType: xdsconfig.SourceExternal},
		}, conn("10.0.0.1:80", "10.0.0.1:5000", "", "raw_buffer"), "local"},
		{"source type external", map[string]xdsconfig.FilterChainMatch{
			"local":    {SourceType: xdsconfig.SourceLocal},
			"external": {SourceType: xdsconfig.SourceExternal},
		}, conn("10.0.0.1:80", "10.0.0.2:5000", "", "raw_buffer"), "external"},
		{"source prefix then port", map[string]xdsconfig.FilterChainMatch{
			"src":      {SourcePrefixRanges: prefixes("10.0.0.0/16")},
			"src-port": {SourcePrefixRanges: prefixes("10.0.0.0/16"), SourcePorts: []uint32{5000}},
			"other":    {SourcePrefixRanges: prefixes("10.0.0.0/8"), SourcePorts: []uint32{5000}},
		}, conn("10.0.0.1:80", "10.0.3.3:5000", "", "raw_buffer"), "src-port"},
		{"direct source prefix", map[string]xdsconfig.FilterChainMatch{
			"in":  {DirectSourcePrefixRanges: prefixes("192.168.0.0/16")},
			"out": {DirectSourcePrefixRanges: prefixes("10.0.0.0/8")},
		}, conn("10.0.0.1:80", "192.168.1.1:5000", "", "raw_buffer"), "in"},
		{"nothing matches", map[string]xdsconfig.FilterChainMatch{
			"port": {DestinationPort: 8443},
		}, conn("10.0.0.1:80", "10.0.0.9:5000", "", "raw_buffer"), ""},
	} {
		got := selectChain(chainsOf(tc.chains), &tc.conn)
		name := ""
		if got != nil {
			name = got.cfg.Name
		}
		if name != tc.want {
			t.Errorf("%s: got chain %q, want %q", tc.name, name, tc.want)
		}
	}
}

func BenchmarkSelectChain(b *testing.B) {
	chains := chainsOf(map[string]xdsconfig.FilterChainMatch{
		"a": {ServerNames: []string{"a.example.com"}, TransportProtocol: "tls"},
		"b": {ServerNames: []string{"*.example.com"}, TransportProtocol: "tls"},
		"c": {TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"http/1.1", "h2c"}},
		"d": {},
	})
	info := ConnInfo{Local: netip.MustParseAddrPort("10.0.0.1:443"), Remote: netip.MustParseAddrPort("10.0.0.2:5555"),
		ServerName: "x.example.com", TransportProtocol: "tls"}
	b.ReportAllocs()
	for b.Loop() {
		if selectChain(chains, &info) == nil {
			b.Fatal("no chain")
		}
	}
}

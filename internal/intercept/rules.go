package intercept

import (
	"net/netip"
	"strconv"
	"strings"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// Istio's chain names in the nat table.
const (
	ChainInbound    = "ISTIO_INBOUND"
	ChainInRedirect = "ISTIO_IN_REDIRECT"
	ChainOutput     = "ISTIO_OUTPUT"
	ChainRedirect   = "ISTIO_REDIRECT"
)

// Chains are the chains Build creates, in the order they are declared.
var Chains = []string{ChainInbound, ChainRedirect, ChainInRedirect, ChainOutput}

// Rule is one nat rule: appended to Chain, with iptables arguments Args.
type Rule struct {
	Chain string
	Args  []string
}

func (r Rule) String() string { return "-A " + r.Chain + " " + strings.Join(r.Args, " ") }

// Rules is the nat table content Build computes: the ISTIO_* chains and every rule, including the
// jumps from the built-in PREROUTING and OUTPUT chains.
type Rules struct {
	Chains []string
	Rules  []Rule
}

// RestoreText is the input for `iptables-restore --noflush` on a nat table without ISTIO_* rules:
// what --dry-run prints.
func (r Rules) RestoreText() string {
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, c := range r.Chains {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, rule := range r.Rules {
		b.WriteString(rule.String() + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// Build computes Istio's nat rules for c (after Normalize), in istio-iptables' order.
func Build(c Config) (Rules, error) {
	p, err := c.Normalize().parse()
	if err != nil {
		return Rules{}, err
	}
	uid := strconv.FormatUint(uint64(p.ProxyUID), 10)
	gid := strconv.FormatUint(uint64(p.ProxyGID), 10)
	port := func(n uint16) string { return strconv.Itoa(int(n)) }
	var rules []Rule
	add := func(chain string, args ...string) { rules = append(rules, Rule{chain, args}) }

	// Inbound: HBONE tunnel traffic goes straight to the proxy's listener.
	add(ChainInbound, "-p", "tcp", "--dport", port(TunnelPort), "-j", "RETURN")
	add(ChainRedirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", port(p.OutboundCapturePort))
	add(ChainInRedirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", port(p.InboundCapturePort))
	switch {
	case p.inboundAll:
		add("PREROUTING", "-p", "tcp", "-j", ChainInbound)
		for _, n := range append(append([]uint16{}, AlwaysExcludedInboundPorts...), p.ExcludeInboundPorts...) {
			add(ChainInbound, "-p", "tcp", "--dport", port(n), "-j", "RETURN")
		}
		add(ChainInbound, "-p", "tcp", "-j", ChainInRedirect)
	case len(p.inboundPorts) > 0:
		add("PREROUTING", "-p", "tcp", "-j", ChainInbound)
		for _, n := range p.inboundPorts {
			add(ChainInbound, "-p", "tcp", "--dport", port(n), "-j", ChainInRedirect)
		}
	}

	// Outbound.
	add("OUTPUT", "-p", "tcp", "-j", ChainOutput)
	if p.DNS {
		add("OUTPUT", "-p", "udp", "--dport", "53", "-j", ChainOutput)
	}
	// Port exclusions come before connections back to self are redirected (Istio's order).
	for _, n := range p.ExcludeOutboundPorts {
		add(ChainOutput, "-p", "tcp", "--dport", port(n), "-j", "RETURN")
	}
	// The inbound passthrough cluster binds 127.0.0.6 to reach the app: never capture it again.
	add(ChainOutput, "-o", "lo", "-s", InboundPassthroughSource, "-j", "RETURN")
	if p.DNS {
		// The app's DNS goes to the proxy's resolver; the proxy's own upstream queries do not.
		for _, proto := range []string{"udp", "tcp"} {
			add(ChainOutput, "-p", proto, "--dport", "53", "-m", "owner", "--uid-owner", uid, "-j", "RETURN")
			add(ChainOutput, "-p", proto, "--dport", "53", "-m", "owner", "--gid-owner", gid, "-j", "RETURN")
			add(ChainOutput, "-p", proto, "--dport", "53", "-j", "REDIRECT", "--to-ports", port(DNSCapturePort))
		}
	}
	for _, owner := range [][2]string{{"--uid-owner", uid}, {"--gid-owner", gid}} {
		// The app calling itself through a service VIP: app => proxy (outbound) => proxy (inbound) => app.
		add(ChainOutput, "-o", "lo", "!", "-d", "127.0.0.1/32", "-p", "tcp", "!", "--dport", port(TunnelPort),
			"-m", "owner", owner[0], owner[1], "-j", ChainInRedirect)
		// The app calling itself by its own address over loopback stays direct, unless loopback
		// was explicitly included.
		if !includesLoopback(p) {
			add(ChainOutput, "-o", "lo", "-m", "owner", "!", owner[0], owner[1], "-j", "RETURN")
		}
		// The proxy's own outbound traffic is never sent back to itself.
		add(ChainOutput, "-m", "owner", owner[0], owner[1], "-j", "RETURN")
	}
	add(ChainOutput, "-d", "127.0.0.1/32", "-j", "RETURN")
	for _, pfx := range p.outboundExclude {
		add(ChainOutput, "-d", pfx.String(), "-j", "RETURN")
	}
	// Included ports are captured to any destination not excluded above (Istio's order:
	// after the CIDR exclusions, before the CIDR inclusions).
	for _, n := range p.IncludeOutboundPorts {
		add(ChainOutput, "-p", "tcp", "--dport", port(n), "-j", ChainRedirect)
	}
	if p.outboundAll {
		add(ChainOutput, "-j", ChainRedirect)
	}
	for _, pfx := range p.outboundInclude {
		add(ChainOutput, "-d", pfx.String(), "-j", ChainRedirect)
	}
	return Rules{Chains: append([]string(nil), Chains...), Rules: rules}, nil
}

func includesLoopback(p parsedConfig) bool {
	for _, pfx := range p.outboundInclude {
		if pfx.Contains(loopback) {
			return true
		}
	}
	return false
}

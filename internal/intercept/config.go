// Package intercept builds and applies the iptables nat rules that capture a sidecar's traffic, as
// Istio's istio-iptables does in the istio-init container: outbound TCP to the proxy's outbound
// capture port (15001), inbound TCP to its inbound capture port (15006), the proxy's own traffic
// exempted by UID/GID, and DNS to the proxy's DNS port (15053) when DNS proxying is on.
//
// The rules are data (Build is a pure function of Config); Apply and Cleanup hand them to
// iptables-restore, so one nat table replacement either lands whole or not at all.
package intercept

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Istio's well-known ports.
const (
	DefaultProxyUID            = 1337
	DefaultInboundCapturePort  = 15006
	DefaultOutboundCapturePort = 15001
	DNSCapturePort             = 15053
	// TunnelPort is Istio's HBONE port: inbound traffic to it is never captured (Istio's rule).
	TunnelPort = 15008
	// InboundPassthroughSource is the address the proxy binds when it forwards inbound traffic
	// to the app over loopback; that traffic must not be captured again.
	InboundPassthroughSource = "127.0.0.6/32"
)

// AlwaysExcludedInboundPorts are the proxy's own ports that inbound capture never takes, as Istio's
// injector passes them to istio-iptables: status (15020), health (15021), Prometheus (15090).
var AlwaysExcludedInboundPorts = []uint16{15090, 15021, 15020}

// Config is what istio-iptables takes on its command line. The zero value of a field means
// Istio's default (see Normalize).
type Config struct {
	// ProxyUID and ProxyGID own the proxy process: its own connections are never captured.
	ProxyUID, ProxyGID uint32
	// InboundCapturePort receives captured inbound connections (Istio: 15006).
	InboundCapturePort uint16
	// OutboundCapturePort receives captured outbound connections (Istio: 15001).
	OutboundCapturePort uint16
	// IncludeInboundPorts: "*" captures every inbound port (less the excluded ones), a
	// comma-separated list captures only those, "" captures nothing inbound.
	IncludeInboundPorts string
	// ExcludeInboundPorts are never captured inbound (with "*"), on top of AlwaysExcludedInboundPorts.
	ExcludeInboundPorts []uint16
	// IncludeOutboundCIDRs: "*" captures every outbound destination, a comma-separated list of
	// CIDRs only those, "" none.
	IncludeOutboundCIDRs string
	// ExcludeOutboundCIDRs and ExcludeOutboundPorts bypass the proxy.
	ExcludeOutboundCIDRs []string
	ExcludeOutboundPorts []uint16
	// IncludeOutboundPorts are captured whatever IncludeOutboundCIDRs says (istio-iptables -q),
	// e.g. with IncludeOutboundCIDRs None only these ports go through the proxy. As in Istio,
	// ExcludeOutboundCIDRs and ExcludeOutboundPorts still win: their RETURN rules come first.
	IncludeOutboundPorts []uint16
	// DNS redirects the app's DNS (UDP and TCP port 53) to DNSCapturePort, except the proxy's own.
	DNS bool
}

// Normalize fills Istio's defaults into zero fields; an explicit "" for the include lists is
// kept only through the command's flags (see cmd/trellis-proxy), here "" means "*".
func (c Config) Normalize() Config {
	if c.ProxyUID == 0 {
		c.ProxyUID = DefaultProxyUID
	}
	if c.ProxyGID == 0 {
		c.ProxyGID = c.ProxyUID
	}
	if c.InboundCapturePort == 0 {
		c.InboundCapturePort = DefaultInboundCapturePort
	}
	if c.OutboundCapturePort == 0 {
		c.OutboundCapturePort = DefaultOutboundCapturePort
	}
	if c.IncludeInboundPorts == "" {
		c.IncludeInboundPorts = "*"
	}
	if c.IncludeOutboundCIDRs == "" {
		c.IncludeOutboundCIDRs = "*"
	}
	return c
}

// None is the value of an include list that captures nothing (Istio's flags take "" for it;
// Config's "" means the default "*").
const None = "-"

// ParsePorts parses a comma-separated port list ("80,8080"); field names the flag or field in errors.
func ParsePorts(field, s string) ([]uint16, error) {
	var ports []uint16
	for i, p := range splitList(s) {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%s[%d]: %q is not a port (1-65535)", field, i, p)
		}
		ports = append(ports, uint16(n))
	}
	return ports, nil
}

// parsedConfig is a validated Config with its lists parsed.
type parsedConfig struct {
	Config
	inboundAll      bool
	inboundPorts    []uint16
	outboundAll     bool
	outboundInclude []netip.Prefix
	outboundExclude []netip.Prefix
}

// Validate reports the first invalid field, naming it.
func (c Config) Validate() error {
	_, err := c.Normalize().parse()
	return err
}

func (c Config) parse() (parsedConfig, error) {
	p := parsedConfig{Config: c}
	if c.InboundCapturePort == c.OutboundCapturePort {
		return p, fmt.Errorf("inboundCapturePort and outboundCapturePort are both %d", c.InboundCapturePort)
	}
	switch c.IncludeInboundPorts {
	case "*":
		p.inboundAll = true
	case None:
	default:
		ports, err := ParsePorts("includeInboundPorts", c.IncludeInboundPorts)
		if err != nil {
			return p, err
		}
		p.inboundPorts = ports
	}
	switch c.IncludeOutboundCIDRs {
	case "*":
		p.outboundAll = true
	case None:
	default:
		cidrs, err := parseCIDRs("includeOutboundCIDRs", splitList(c.IncludeOutboundCIDRs))
		if err != nil {
			return p, err
		}
		p.outboundInclude = cidrs
	}
	cidrs, err := parseCIDRs("excludeOutboundCIDRs", c.ExcludeOutboundCIDRs)
	if err != nil {
		return p, err
	}
	p.outboundExclude = cidrs
	for i, port := range c.ExcludeInboundPorts {
		if port == 0 {
			return p, fmt.Errorf("excludeInboundPorts[%d]: port 0", i)
		}
	}
	for i, port := range c.ExcludeOutboundPorts {
		if port == 0 {
			return p, fmt.Errorf("excludeOutboundPorts[%d]: port 0", i)
		}
	}
	for i, port := range c.IncludeOutboundPorts {
		if port == 0 {
			return p, fmt.Errorf("includeOutboundPorts[%d]: port 0", i)
		}
	}
	return p, nil
}

func parseCIDRs(field string, list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range list {
		s = strings.TrimSpace(s)
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %q is not a CIDR (e.g. 10.0.0.0/8)", field, i, s)
		}
		if !pfx.Addr().Is4() {
			// Only the IPv4 nat table is written (ip6tables is not managed yet).
			return nil, fmt.Errorf("%s[%d]: %q is not IPv4 (only IPv4 capture is supported)", field, i, s)
		}
		out = append(out, pfx.Masked())
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

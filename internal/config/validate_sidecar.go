package config

import (
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

func validateSidecar(c *checker, sc *networking.Sidecar) {
	if len(sc.GetIngress()) == 0 && len(sc.GetEgress()) == 0 && sc.GetOutboundTrafficPolicy() == nil && sc.GetInboundConnectionPool() == nil {
		c.errorf("spec", "empty Sidecar: set ingress, egress or outboundTrafficPolicy")
	}
	if ws := sc.GetWorkloadSelector(); ws != nil {
		if len(ws.GetLabels()) == 0 {
			c.errorf("spec.workloadSelector.labels", "at least one label is required")
		}
		validateSelector(c, "spec.workloadSelector.labels", ws.GetLabels())
	}
	ports := map[uint32]int{}
	for i, in := range sc.GetIngress() {
		p := fmt.Sprintf("spec.ingress[%d]", i)
		validatePort(c, p+".port", in.GetPort(), in.GetPort() != nil, false)
		if n := in.GetPort().GetNumber(); n != 0 {
			if first, dup := ports[n]; dup {
				c.errorf(p+".port.number", "duplicate ingress port %d (also spec.ingress[%d])", n, first)
			} else {
				ports[n] = i
			}
		}
		if b := in.GetBind(); b != "" && !isIP(b) {
			c.errorf(p+".bind", "%q is not an IP address", b)
		}
		if ep := in.GetDefaultEndpoint(); ep != "" {
			if reason := defaultEndpointProblem(ep); reason != "" {
				c.errorf(p+".defaultEndpoint", "%s", reason)
			}
		}
	}
	catchAll := -1
	for i, eg := range sc.GetEgress() {
		p := fmt.Sprintf("spec.egress[%d]", i)
		if port := eg.GetPort(); port != nil {
			if !validPort(port.GetNumber()) {
				c.errorf(p+".port.number", "must be between 1 and 65535, got %d", port.GetNumber())
			}
			if proto := port.GetProtocol(); proto != "" && !isKnownProtocol(proto) {
				c.errorf(p+".port.protocol", "unknown protocol %q; want one of %s", proto, strings.Join(knownProtocols, ", "))
			}
		} else {
			if catchAll >= 0 {
				c.errorf(p, "only one egress listener may omit the port (also spec.egress[%d])", catchAll)
			}
			catchAll = i
		}
		if b := eg.GetBind(); b != "" && !isIP(b) && !strings.HasPrefix(b, unixPrefix) {
			c.errorf(p+".bind", "%q is not an IP address or unix:// path", b)
		}
		if len(eg.GetHosts()) == 0 {
			c.errorf(p+".hosts", "at least one host is required, as namespace/host (e.g. ./* or istio-system/*)")
		}
		for j, h := range eg.GetHosts() {
			if reason := namespacedHostProblem(h, true); reason != "" {
				c.errorf(fmt.Sprintf("%s.hosts[%d]", p, j), "%s", reason)
			}
		}
	}
	if catchAll >= 0 && catchAll != len(sc.GetEgress())-1 {
		c.errorf(fmt.Sprintf("spec.egress[%d]", catchAll), "the egress listener without a port must be the last one")
	}
}

// defaultEndpointProblem applies Istio's rule: 127.0.0.1:PORT, 0.0.0.0:PORT,
// [::1]:PORT, [::]:PORT, :PORT or unix:///absolute/path (or unix://@abstract).
func defaultEndpointProblem(ep string) string {
	const want = "want 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port> or unix:///<path>"
	if sock, ok := strings.CutPrefix(ep, unixPrefix); ok {
		switch {
		case sock == "":
			return fmt.Sprintf("%q: a Unix socket needs a path", ep)
		case strings.HasPrefix(sock, "@"):
			return ""
		case !path.IsAbs(sock) || strings.HasSuffix(sock, "/"):
			return fmt.Sprintf("%q: %s is not an absolute path to a file", ep, sock)
		}
		return ""
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Sprintf("%q: %s", ep, want)
	}
	switch host {
	case "", "127.0.0.1", "0.0.0.0", "::1", "::":
	default:
		return fmt.Sprintf("%q: %s", ep, want)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("%q: port %q must be a number between 1 and 65535", ep, port)
	}
	return ""
}

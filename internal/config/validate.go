package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1beta1 "istio.io/api/networking/v1beta1"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
)

// checker collects the problems validation finds, by field path; lines are
// filled in from the document afterwards.
type checker struct{ errs []fieldErr }

func (c *checker) errorf(path, format string, args ...any) {
	c.errs = append(c.errs, fieldErr{path: path, reason: fmt.Sprintf(format, args...)})
}

func validateMeta(d *document) []fieldErr {
	var c checker
	switch name := d.meta.Name; {
	case name == "":
		c.errorf("metadata.name", "required")
	case !isDNS1123Subdomain(name):
		c.errorf("metadata.name", "%q is not a valid name: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", name)
	}
	if ns := d.meta.Namespace; !isDNS1123Label(ns) {
		c.errorf("metadata.namespace", "%q is not a valid namespace: use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit", ns)
	}
	return c.errs
}

// validateSpec runs the per-kind rules, with Istio's semantics.
func validateSpec(d *document) []fieldErr {
	var c checker
	switch spec := d.spec.(type) {
	case *networking.VirtualService:
		validateVirtualService(&c, spec)
		validateExportTo(&c, "spec.exportTo", spec.GetExportTo())
		validateDelegates(&c, spec)
	case *networkingv1beta1.ProxyConfig:
		validateProxyConfig(&c, d.meta, spec)
	case *networking.DestinationRule:
		validateDestinationRule(&c, spec)
		validateExportTo(&c, "spec.exportTo", spec.GetExportTo())
	case *networking.ServiceEntry:
		validateServiceEntry(&c, spec)
		validateExportTo(&c, "spec.exportTo", spec.GetExportTo())
	case *networking.WorkloadEntry:
		validateWorkloadEntry(&c, "spec", spec, false)
	case *networking.WorkloadGroup:
		validateWorkloadGroup(&c, spec)
	case *networking.Gateway:
		validateGateway(&c, spec)
	case *networking.Sidecar:
		validateSidecar(&c, spec)
	case *telemetry.Telemetry:
		validateTelemetry(&c, spec)
	case *security.PeerAuthentication:
		validatePeerAuthentication(&c, spec)
	case *security.AuthorizationPolicy:
		validateAuthorizationPolicy(&c, spec)
	case *security.RequestAuthentication:
		validateRequestAuthentication(&c, spec)
	}
	return c.errs
}

var (
	dns1123LabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	// Host names in Istio resources may be upper-case; DNS is not.
	dnsLabelRE = regexp.MustCompile(`^(?i)[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

func isDNS1123Label(s string) bool { return len(s) <= 63 && dns1123LabelRE.MatchString(s) }

func isDNS1123Subdomain(s string) bool {
	if len(s) > 253 || s == "" {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isDNS1123Label(l) {
			return false
		}
	}
	return true
}

// isHostname reports whether s is a DNS name (short or fully qualified).
func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 255 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if len(l) > 63 || !dnsLabelRE.MatchString(l) {
			return false
		}
	}
	return true
}

// isWildcardHost reports whether s is a host name, optionally with a
// leading "*." or "*" label, or "*" alone (Istio's wildcard domains).
func isWildcardHost(s string) bool {
	if s == "*" {
		return true
	}
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		return isHostname(rest)
	}
	if rest, ok := strings.CutPrefix(s, "*"); ok {
		return isHostname("x" + rest)
	}
	return isHostname(s)
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func validPort(n uint32) bool { return n >= 1 && n <= 65535 }

// knownProtocols are the port protocols Istio recognises; case-insensitive,
// as Istio's protocol.Parse is.
var knownProtocols = []string{"HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "TCP", "TLS", "MONGO", "REDIS", "MYSQL"}

func isKnownProtocol(p string) bool {
	for _, k := range knownProtocols {
		if strings.EqualFold(p, k) {
			return true
		}
	}
	return false
}

// portSpec is what networking.Port and networking.ServicePort share.
type portSpec interface {
	GetNumber() uint32
	GetName() string
	GetProtocol() string
}

// validatePort checks an Istio port (ServiceEntry, Gateway, Sidecar).
// present is false when the port was left out.
func validatePort(c *checker, path string, p portSpec, present, nameRequired bool) {
	if !present {
		c.errorf(path, "required")
		return
	}
	if !validPort(p.GetNumber()) {
		c.errorf(path+".number", "must be between 1 and 65535, got %d", p.GetNumber())
	}
	if p.GetName() == "" && nameRequired {
		c.errorf(path+".name", "required")
	}
	switch proto := p.GetProtocol(); {
	case proto == "":
		c.errorf(path+".protocol", "required; one of %s", strings.Join(knownProtocols, ", "))
	case !isKnownProtocol(proto):
		c.errorf(path+".protocol", "unknown protocol %q; want one of %s", proto, strings.Join(knownProtocols, ", "))
	}
}

func validateSelector(c *checker, path string, labels map[string]string) {
	for k := range labels {
		if k == "" {
			c.errorf(path, "label keys must not be empty")
		}
	}
}

func isIPOrCIDR(s string) bool {
	if isIP(s) {
		return true
	}
	_, err := netip.ParsePrefix(s)
	return err == nil
}

package config

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

func validateGateway(c *checker, gw *networking.Gateway) {
	if len(gw.GetServers()) == 0 {
		c.errorf("spec.servers", "at least one server is required")
	}
	for i, s := range gw.GetServers() {
		path := fmt.Sprintf("spec.servers[%d]", i)
		validatePort(c, path+".port", s.GetPort(), s.GetPort() != nil, false)
		if len(s.GetHosts()) == 0 {
			c.errorf(path+".hosts", "at least one host is required")
		}
		for j, h := range s.GetHosts() {
			if reason := namespacedHostProblem(h, false); reason != "" {
				c.errorf(fmt.Sprintf("%s.hosts[%d]", path, j), "%s", reason)
			}
		}
		proto := strings.ToUpper(s.GetPort().GetProtocol())
		tls := s.GetTls()
		if (proto == "HTTPS" || proto == "TLS") && tls == nil {
			c.errorf(path+".tls", "required for protocol %s", proto)
		}
		if tls == nil || tls.GetHttpsRedirect() {
			continue
		}
		switch tls.GetMode() {
		case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL:
			if tls.GetCredentialName() == "" && len(tls.GetCredentialNames()) == 0 && len(tls.GetTlsCertificates()) == 0 {
				if tls.GetServerCertificate() == "" {
					c.errorf(path+".tls.serverCertificate", "required when mode is %s and credentialName is not set", tls.GetMode())
				}
				if tls.GetPrivateKey() == "" {
					c.errorf(path+".tls.privateKey", "required when mode is %s and credentialName is not set", tls.GetMode())
				}
			}
		}
	}
}

// namespacedHostProblem checks a host of the form [namespace/]host, as
// Gateway servers (namespace optional) and Sidecar egress (required) use.
// The namespace may be "*", "." (the resource's own) or "~" (none).
func namespacedHostProblem(h string, nsRequired bool) string {
	ns, host, scoped := strings.Cut(h, "/")
	if !scoped {
		if nsRequired {
			return fmt.Sprintf("%q: want namespace/host, e.g. ./* or istio-system/*", h)
		}
		ns, host = "", ns
	}
	switch {
	case scoped && ns != "*" && ns != "." && ns != "~" && !isDNS1123Label(ns):
		return fmt.Sprintf("%q: namespace %q must be *, ., ~ or a namespace name", h, ns)
	case host == "":
		return fmt.Sprintf("%q: host must not be empty", h)
	case !isWildcardHost(host) && !isIP(host):
		return fmt.Sprintf("%q: %q is not a valid host name", h, host)
	}
	return ""
}

package config

import (
	"fmt"
	"sort"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

const unixPrefix = "unix://"

// validateWorkloadEntry checks a WorkloadEntry spec, or an endpoint inline
// in a ServiceEntry (path "spec.endpoints[i]"); staticOnly is set for the
// endpoints of a STATIC ServiceEntry, which must be IPs or Unix sockets.
func validateWorkloadEntry(c *checker, path string, we *networking.WorkloadEntry, staticOnly bool) {
	switch a := we.GetAddress(); {
	case a == "":
		c.errorf(path+".address", "required")
	case strings.HasPrefix(a, unixPrefix):
		if strings.TrimPrefix(a, unixPrefix) == "" {
			c.errorf(path+".address", "%q: a Unix socket address needs a path", a)
		}
	case isIP(a):
	case staticOnly:
		c.errorf(path+".address", "%q is not an IP address; resolution STATIC needs IPs (or use resolution DNS)", a)
	case !isHostname(a):
		c.errorf(path+".address", "%q is not an IP address or host name", a)
	}
	names := make([]string, 0, len(we.GetPorts()))
	for name := range we.GetPorts() {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if n := we.GetPorts()[name]; !validPort(n) {
			c.errorf(fmt.Sprintf("%s.ports[%s]", path, name), "must be between 1 and 65535, got %d", n)
		}
	}
	if sa := we.GetServiceAccount(); sa != "" && !isDNS1123Subdomain(sa) {
		c.errorf(path+".serviceAccount", "%q is not a valid service account name", sa)
	}
}

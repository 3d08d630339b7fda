package config

import (
	"fmt"
	"sort"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

func validateServiceEntry(c *checker, se *networking.ServiceEntry) {
	if len(se.GetHosts()) == 0 {
		c.errorf("spec.hosts", "at least one host is required")
	}
	res := se.GetResolution()
	dns := res == networking.ServiceEntry_DNS || res == networking.ServiceEntry_DNS_ROUND_ROBIN
	for i, h := range se.GetHosts() {
		path := fmt.Sprintf("spec.hosts[%d]", i)
		switch {
		case h == "*":
			c.errorf(path, `"*" is not allowed; name the hosts, or use a wildcard such as *.example.com`)
		case !isWildcardHost(h):
			c.errorf(path, "%q is not a valid host name", h)
		case strings.HasPrefix(h, "*") && dns && len(se.GetEndpoints()) == 0:
			c.errorf(path, "wildcard host %q cannot be resolved with %s resolution; add endpoints or use resolution NONE", h, res)
		}
	}
	for i, a := range se.GetAddresses() {
		if !isIPOrCIDR(a) {
			c.errorf(fmt.Sprintf("spec.addresses[%d]", i), "%q is not an IP address or CIDR", a)
		}
	}
	if len(se.GetPorts()) == 0 {
		c.errorf("spec.ports", "at least one port is required")
	}
	numbers, names := map[uint32]int{}, map[string]int{}
	for i, p := range se.GetPorts() {
		path := fmt.Sprintf("spec.ports[%d]", i)
		validatePort(c, path, p, true, true)
		if tp := p.GetTargetPort(); tp > 65535 {
			c.errorf(path+".targetPort", "must be between 1 and 65535, got %d", tp)
		}
		if first, dup := numbers[p.GetNumber()]; dup && p.GetNumber() != 0 {
			c.errorf(path+".number", "duplicate port %d (also spec.ports[%d])", p.GetNumber(), first)
		} else {
			numbers[p.GetNumber()] = i
		}
		if first, dup := names[p.GetName()]; dup && p.GetName() != "" {
			c.errorf(path+".name", "duplicate port name %q (also spec.ports[%d])", p.GetName(), first)
		} else {
			names[p.GetName()] = i
		}
	}
	hasSelector := se.GetWorkloadSelector() != nil
	if hasSelector && len(se.GetEndpoints()) > 0 {
		c.errorf("spec.workloadSelector", "set workloadSelector or endpoints, not both")
	}
	if hasSelector {
		if len(se.GetWorkloadSelector().GetLabels()) == 0 {
			c.errorf("spec.workloadSelector.labels", "at least one label is required")
		}
		validateSelector(c, "spec.workloadSelector.labels", se.GetWorkloadSelector().GetLabels())
	}
	if res == networking.ServiceEntry_STATIC && !hasSelector && len(se.GetEndpoints()) == 0 {
		c.errorf("spec.endpoints", "resolution STATIC needs endpoints or a workloadSelector")
	}
	for i, ep := range se.GetEndpoints() {
		path := fmt.Sprintf("spec.endpoints[%d]", i)
		validateWorkloadEntry(c, path, ep, res == networking.ServiceEntry_STATIC)
		keys := make([]string, 0, len(ep.GetPorts()))
		for name := range ep.GetPorts() {
			keys = append(keys, name)
		}
		sort.Strings(keys)
		for _, name := range keys {
			if _, ok := names[name]; !ok {
				c.errorf(fmt.Sprintf("%s.ports[%s]", path, name), "port name %q is not declared in spec.ports", name)
			}
		}
	}
}

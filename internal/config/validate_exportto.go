package config

import (
	"fmt"

	networking "istio.io/api/networking/v1alpha3"
)

// validateExportTo applies Istio's rules to an exportTo list: each entry is
// "." (own namespace), "*" (every namespace), "~" (none) or a namespace
// name; "*" and "~" stand alone; no entry twice.
func validateExportTo(c *checker, path string, exportTo []string) {
	seen := map[string]int{}
	for i, e := range exportTo {
		p := fmt.Sprintf("%s[%d]", path, i)
		if first, dup := seen[e]; dup {
			c.errorf(p, "duplicate entry %q (also %s[%d])", e, path, first)
			continue
		}
		seen[e] = i
		switch e {
		case ".":
		case "*", "~":
			if len(exportTo) > 1 {
				c.errorf(p, "%q cannot be combined with other entries", e)
			}
		default:
			if !isDNS1123Label(e) {
				c.errorf(p, `%q: want ".", "*", "~" or a namespace name`, e)
			}
		}
	}
}

// validateDelegates checks the VirtualService delegation rules Istio
// enforces: a VirtualService without hosts is a delegate, bound to no
// gateway, with http routes only and none delegating again; a delegating
// entry names its delegate.
func validateDelegates(c *checker, vs *networking.VirtualService) {
	isDelegate := len(vs.GetHosts()) == 0
	if isDelegate {
		if len(vs.GetGateways()) > 0 {
			c.errorf("spec.gateways", "a delegate VirtualService (no hosts) must not list gateways; its root's apply")
		}
		if len(vs.GetTcp()) > 0 || len(vs.GetTls()) > 0 {
			c.errorf("spec", "a delegate VirtualService (no hosts) may have http routes only")
		}
	}
	for i, h := range vs.GetHttp() {
		d := h.GetDelegate()
		if d == nil {
			continue
		}
		p := fmt.Sprintf("spec.http[%d].delegate", i)
		switch {
		case isDelegate:
			c.errorf(p, "a delegate VirtualService (no hosts) cannot delegate again")
		case d.GetName() == "":
			c.errorf(p+".name", "required")
		case !isDNS1123Subdomain(d.GetName()):
			c.errorf(p+".name", "%q is not a valid resource name", d.GetName())
		}
		if ns := d.GetNamespace(); ns != "" && !isDNS1123Label(ns) {
			c.errorf(p+".namespace", "%q is not a valid namespace", ns)
		}
	}
}

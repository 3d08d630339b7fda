package config

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// danglingRefs warns about references Istio accepts but that route nowhere,
// as istioctl analyze does: a VirtualService bound to a Gateway that does
// not exist, or routing to a subset no DestinationRule defines.
func danglingRefs(docs []*document) []Warning {
	gateways := map[string]bool{}
	subsets := map[string]bool{}     // "host|subset", host fully qualified
	delegates := map[string]bool{}   // "namespace/name" of hostless VirtualServices
	delegatedTo := map[string]bool{} // "namespace/name" some http[].delegate names
	for _, d := range docs {
		switch spec := d.spec.(type) {
		case *networking.VirtualService:
			if len(spec.GetHosts()) == 0 {
				delegates[d.meta.Namespace+"/"+d.meta.Name] = true
			}
			for _, r := range spec.GetHttp() {
				if dl := r.GetDelegate(); dl != nil {
					delegatedTo[delegateRef(dl, d.meta.Namespace)] = true
				}
			}
		case *networking.Gateway:
			gateways[d.meta.Namespace+"/"+d.meta.Name] = true
		case *networking.DestinationRule:
			host := model.ResolveHost(spec.GetHost(), d.meta.Namespace)
			for _, s := range spec.GetSubsets() {
				subsets[host+"|"+s.GetName()] = true
			}
		}
	}
	var warns []Warning
	warn := func(d *document, path, format string, args ...any) {
		warns = append(warns, Warning{
			Source:  model.Source{File: d.meta.Source.File, Line: d.lineOf(path)},
			Message: fmt.Sprintf("%s: %s: ", d.meta.Key(), path) + fmt.Sprintf(format, args...),
		})
	}
	for _, d := range docs {
		if gw, ok := d.spec.(*networking.Gateway); ok {
			unservedGatewayServers(d, gw, warn)
			continue
		}
		vs, ok := d.spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		for i, g := range vs.GetGateways() {
			if g == meshGateway {
				continue
			}
			ref := g
			if !strings.Contains(g, "/") {
				ref = d.meta.Namespace + "/" + g
			}
			if !gateways[ref] {
				warn(d, fmt.Sprintf("spec.gateways[%d]", i), "Gateway %s not found", ref)
			}
		}
		if len(vs.GetHosts()) == 0 && !delegatedTo[d.meta.Namespace+"/"+d.meta.Name] {
			warn(d, "spec.hosts", "no hosts and no VirtualService delegates to it: it routes nothing")
		}
		for i, r := range vs.GetHttp() {
			if dl := r.GetDelegate(); dl != nil && dl.GetName() != "" && !delegates[delegateRef(dl, d.meta.Namespace)] {
				warn(d, fmt.Sprintf("spec.http[%d].delegate", i), "delegate VirtualService %s not found (a delegate has no hosts)", delegateRef(dl, d.meta.Namespace))
			}
			for j, rd := range r.GetRoute() {
				dst := rd.GetDestination()
				if dst.GetSubset() == "" {
					continue
				}
				host := model.ResolveHost(dst.GetHost(), d.meta.Namespace)
				if !subsets[host+"|"+dst.GetSubset()] {
					warn(d, fmt.Sprintf("spec.http[%d].route[%d].destination.subset", i, j),
						"subset %q of %s is not defined by any DestinationRule", dst.GetSubset(), host)
				}
			}
		}
	}
	return warns
}

// delegateRef is "namespace/name" of a delegate; the namespace defaults to
// the root VirtualService's.
func delegateRef(d *networking.Delegate, ns string) string {
	if d.GetNamespace() != "" {
		ns = d.GetNamespace()
	}
	return ns + "/" + d.GetName()
}

// unservedGatewayServers warns about Gateway servers Trellis loads but does not serve yet, so that
// an existing Istio Gateway keeps working for its other servers instead of being refused whole:
// terminating TLS needs gateway certificates (SDS for credentialName), AUTO_PASSTHROUGH the
// sni_cluster filter.
func unservedGatewayServers(d *document, gw *networking.Gateway, warn func(*document, string, string, ...any)) {
	for i, srv := range gw.GetServers() {
		path := fmt.Sprintf("spec.servers[%d]", i)
		switch strings.ToUpper(srv.GetPort().GetProtocol()) {
		case "HTTPS":
			if !srv.GetTls().GetHttpsRedirect() {
				warn(d, path+".port.protocol", "HTTPS servers are not served by Trellis yet; this server is skipped")
			}
		case "TLS":
			if m := srv.GetTls().GetMode(); srv.GetTls() != nil && m != networking.ServerTLSSettings_PASSTHROUGH {
				warn(d, path+".tls.mode", "%s on a TLS server is not served by Trellis yet (PASSTHROUGH is); this server is skipped", m)
			}
		}
	}
}

package translate

import (
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Visibility: what one proxy may see and needs. newEnv narrows the
// snapshot once, here, and every other step reads the narrowed view as if
// it were the whole mesh:
//
//   - exportTo: a ServiceEntry (or Kubernetes Service), VirtualService or
//     DestinationRule is seen only from the namespaces it is exported to
//     (MeshConfig default*ExportTo, else "*").
//   - Sidecar egress hosts: a sidecar whose Sidecar resource lists egress
//     hosts sees only the services and VirtualServices those import, plus
//     the services the imported VirtualServices route to. Gateways are not
//     narrowed by Sidecars.
//   - VirtualService delegates are folded into their root here too, so
//     route code never sees a delegate.
//
// A view depends only on the proxy's namespace and the Sidecar that applies
// to it, so it is built once per snapshot for each such pair and shared by
// every proxy with that pair (model.Snapshot.Memo).

// autoScopeKey holds, in a snapshot's memo, the synthetic Sidecars that
// automatic scoping learned (SetAutoScope).
type autoScopeKey struct{}

// SetAutoScope attaches learned per-namespace Sidecars (internal/autoscope)
// to snap, before snap is translated for any proxy. A sidecar proxy that no
// user Sidecar applies to is then scoped as if its namespace's entry were
// its Sidecar. The scope is an input of the snapshot: a change of learned
// scopes is a new snapshot (the control plane re-derives it from the same
// Config), so anything caching per snapshot stays correct. Calling it after
// translation, or twice, has no effect. Proxies in local mode
// (INTERCEPTION_MODE=NONE) are not auto-scoped.
func SetAutoScope(snap *model.Snapshot, sidecars map[string]*model.Sidecar) {
	snap.Memo(autoScopeKey{}, func() any { return sidecars })
}

// AutoScope is what SetAutoScope attached to snap; nil if nothing.
func AutoScope(snap *model.Snapshot) map[string]*model.Sidecar {
	m, _ := snap.Memo(autoScopeKey{}, func() any { return map[string]*model.Sidecar(nil) }).(map[string]*model.Sidecar)
	return m
}

func autoScopeFor(snap *model.Snapshot, ns string) *model.Sidecar {
	return AutoScope(snap)[ns]
}

// viewKey names one view in the snapshot's memo.
type viewKey struct {
	namespace string
	sidecar   *model.Sidecar // nil: exportTo only
}

// delegatesKey names the snapshot's VirtualServices with delegates folded in.
type delegatesKey struct{}

// visibleSnapshot is the view of snap for proxy.
func visibleSnapshot(snap *model.Snapshot, proxy *model.Proxy, labels map[string]string) *model.Snapshot {
	key := viewKeyFor(snap, proxy, labels)
	return snap.Memo(key, func() any { return buildView(snap.Full(), key, nil) }).(*model.Snapshot)
}

// hostsView is proxy's view narrowed to hosts: what their endpoints are
// computed from. An endpoint change is a new snapshot, whose full views
// (every visible service, indexed, per namespace) would be built again for
// one host's endpoints, 20 times per change at 20 namespaces.
func hostsView(snap *model.Snapshot, proxy *model.Proxy, labels map[string]string, hosts []string) *model.Snapshot {
	return buildView(snap.Full(), viewKeyFor(snap, proxy, labels), hosts)
}

func viewKeyFor(snap *model.Snapshot, proxy *model.Proxy, labels map[string]string) viewKey {
	var sc *model.Sidecar
	if proxy.Type == model.SidecarProxy {
		s := snap.SidecarFor(proxy.Namespace, labels)
		if s == nil && proxy.Interception != model.InterceptNone {
			// Explicit Sidecars win; local mode has no passthrough to carry a
			// first call to a service not yet learned, so it is never narrowed.
			s = autoScopeFor(snap, proxy.Namespace)
		}
		if s != nil && len(s.Spec.GetEgress()) > 0 {
			sc = s
		}
	}
	return viewKey{namespace: proxy.Namespace, sidecar: sc}
}

// buildView is the view key names, of every service, or of only hosts'
// services when hosts is not nil.
func buildView(full *model.Snapshot, key viewKey, hosts []string) *model.Snapshot {
	ns := key.namespace
	visible := func(svc *model.Service) bool { return model.Exported(full.ServiceExportTo(svc), svc.Namespace, ns) }
	var services []*model.Service
	if hosts != nil {
		for _, h := range hosts {
			if svc := full.Service(h); svc != nil && visible(svc) {
				services = append(services, svc)
			}
		}
	} else {
		for _, svc := range full.Services {
			if visible(svc) {
				services = append(services, svc)
			}
		}
	}
	// A Sidecar imports the services its VirtualServices route to.
	var vss []*model.VirtualService
	if hosts == nil || key.sidecar != nil {
		for _, vs := range foldedVirtualServices(full) {
			if model.Exported(full.VirtualServiceExportTo(vs), vs.Namespace, ns) {
				vss = append(vss, vs)
			}
		}
	}
	var drs []*model.DestinationRule
	for _, dr := range full.Config.DestinationRules {
		if model.Exported(full.DestinationRuleExportTo(dr), dr.Namespace, ns) {
			drs = append(drs, dr)
		}
	}
	if key.sidecar != nil {
		imports := parseEgress(key.sidecar, ns)
		services, vss = imports.filter(services, vss)
	}
	return full.View(services, vss, drs)
}

// egressImport is one Sidecar egress host, "namespace/dnsName", with "."
// already replaced by the proxy's namespace, and its listener's port.
type egressImport struct {
	namespace string // "*" for any
	host      string // "*", "*.example.com" or a name
	port      uint32 // the egress listener's port; 0: every port
}

type egressImports []egressImport

// parseEgress parses the hosts of every egress listener. "." means the
// proxy's namespace (for a root-namespace default Sidecar too, as Istio);
// "~" imports nothing. A listener with a port imports its hosts on that
// port only, as Istio's needsPortMatch (whose HTTP_PROXY exception does not
// arise: validation refuses that protocol).
func parseEgress(sc *model.Sidecar, ns string) egressImports {
	var out egressImports
	for _, eg := range sc.Spec.GetEgress() {
		port := eg.GetPort().GetNumber()
		for _, h := range eg.GetHosts() {
			n, host, ok := strings.Cut(h, "/")
			if !ok || n == model.ExportNone {
				continue
			}
			if n == model.ExportPrivate {
				n = ns
			}
			out = append(out, egressImport{namespace: n, host: host, port: port})
		}
	}
	return out
}

// importsVirtualService: imp imports one of vs's hosts from vs's namespace
// (either covering the other, since both may be wildcards).
func (imp egressImport) importsVirtualService(vs *model.VirtualService) bool {
	if imp.namespace != "*" && imp.namespace != vs.Namespace {
		return false
	}
	for _, h := range vs.Spec.GetHosts() {
		h = model.ResolveHost(h, vs.Namespace)
		if hostMatches(imp.host, h) || hostMatches(h, imp.host) {
			return true
		}
	}
	return false
}

// importedPorts is what a Sidecar imports of one host: every port, or
// only some.
type importedPorts struct {
	all  bool
	only map[uint32]bool
}

func (p *importedPorts) add(port uint32) {
	if port == 0 {
		p.all = true
		return
	}
	if p.only == nil {
		p.only = map[uint32]bool{}
	}
	p.only[port] = true
}

// filter keeps the imported services and VirtualServices, and the
// (exported) services an imported VirtualService routes to, as Istio's
// SidecarScope does. Only VirtualServices bound to the mesh count: one
// bound to gateways alone routes nothing on a sidecar. Ports too, as
// Istio: a host imported on a listener with a port has that port only; a
// service routed to by a VirtualService, the ports its destinations name
// (all when one names none), or the listener's port; a service imported
// several ways, the union. One left with no port is not imported.
func (imps egressImports) filter(services []*model.Service, vss []*model.VirtualService) ([]*model.Service, []*model.VirtualService) {
	want := map[string]*importedPorts{}
	add := func(host string, port uint32) {
		p := want[host]
		if p == nil {
			p = &importedPorts{}
			want[host] = p
		}
		p.add(port)
	}
	var keptVS []*model.VirtualService
	for _, vs := range vss {
		if !boundToMesh(vs) {
			continue
		}
		kept := false
		for _, imp := range imps {
			if !imp.importsVirtualService(vs) {
				continue
			}
			kept = true
			for _, d := range virtualServiceDestinations(vs) {
				if imp.port != 0 {
					add(d.host, imp.port)
				} else {
					add(d.host, d.port)
				}
			}
		}
		if kept {
			keptVS = append(keptVS, vs)
		}
	}
	var kept []*model.Service
	for _, svc := range services {
		for _, imp := range imps {
			if (imp.namespace == "*" || imp.namespace == svc.Namespace) && hostMatches(imp.host, svc.Hostname) {
				add(svc.Hostname, imp.port)
			}
		}
		if p := want[svc.Hostname]; p != nil {
			if svc = withPorts(svc, p); svc != nil {
				kept = append(kept, svc)
			}
		}
	}
	return kept, keptVS
}

// withPorts is svc with only the ports p imports: svc itself when that is
// all of them, nil when none.
func withPorts(svc *model.Service, p *importedPorts) *model.Service {
	if p.all {
		return svc
	}
	var ports []*model.Port
	for _, port := range svc.Ports {
		if p.only[port.Number] {
			ports = append(ports, port)
		}
	}
	switch len(ports) {
	case len(svc.Ports):
		return svc
	case 0:
		return nil
	}
	trimmed := *svc
	trimmed.Ports = ports
	return &trimmed
}

// destination is a host a VirtualService routes or mirrors to, and the
// port it names (0: none).
type destination struct {
	host string
	port uint32
}

// virtualServiceDestinations are the destinations vs routes or mirrors to,
// with full host names.
func virtualServiceDestinations(vs *model.VirtualService) []destination {
	var out []destination
	add := func(d *networking.Destination) {
		if d.GetHost() != "" {
			out = append(out, destination{model.ResolveHost(d.GetHost(), vs.Namespace), d.GetPort().GetNumber()})
		}
	}
	for _, h := range vs.Spec.GetHttp() {
		for _, r := range h.GetRoute() {
			add(r.GetDestination())
		}
		add(h.GetMirror())
		for _, m := range h.GetMirrors() {
			add(m.GetDestination())
		}
	}
	for _, t := range vs.Spec.GetTcp() {
		for _, r := range t.GetRoute() {
			add(r.GetDestination())
		}
	}
	for _, t := range vs.Spec.GetTls() {
		for _, r := range t.GetRoute() {
			add(r.GetDestination())
		}
	}
	return out
}

// foldedVirtualServices is the snapshot's VirtualServices with every
// delegate folded into its root (see delegate.go), computed once per
// snapshot.
func foldedVirtualServices(full *model.Snapshot) []*model.VirtualService {
	return full.Memo(delegatesKey{}, func() any { return foldDelegates(full) }).([]*model.VirtualService)
}

// cloneVS copies vs with a spec the caller may change.
func cloneVS(vs *model.VirtualService) *model.VirtualService {
	return &model.VirtualService{Meta: vs.Meta, Spec: proto.Clone(vs.Spec).(*networking.VirtualService)}
}

// destinationRule is the DestinationRule for host as this proxy sees it
// (precedence, exportTo and workloadSelector: model.DestinationRuleFor).
func (e *env) destinationRule(host string) *model.DestinationRule {
	return e.snap.DestinationRuleFor(host, e.proxy.Namespace, e.labels)
}

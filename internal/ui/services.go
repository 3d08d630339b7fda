package ui

import (
	"fmt"
	"sort"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// serviceName is the short name of a host in its namespace
// ("reviews" for reviews.default.svc.cluster.local); other hosts keep
// their full name.
func serviceName(host, ns string) string {
	if short, ok := strings.CutSuffix(host, "."+ns+"."+model.DomainSuffix); ok {
		return short
	}
	return host
}

func workloadID(ns, name string) string { return ns + "/" + name }

func serviceOf(svc *model.Service) Service {
	out := Service{
		Namespace: svc.Namespace,
		Name:      serviceName(svc.Hostname, svc.Namespace),
		Host:      svc.Hostname,
		Ports:     []ServicePort{},
		Workloads: []string{},
	}
	for _, p := range svc.Ports {
		out.Ports = append(out.Ports, ServicePort{Number: p.Number, Name: p.Name, Protocol: string(p.Protocol)})
	}
	seen := map[string]bool{}
	for _, ep := range svc.Endpoints {
		if ep.Workload == nil {
			continue
		}
		id := workloadID(ep.Workload.Namespace, ep.Workload.Name)
		if !seen[id] {
			seen[id] = true
			out.Workloads = append(out.Workloads, id)
		}
	}
	sort.Strings(out.Workloads)
	return out
}

// servicesOf lists the services of snap by namespace, then name.
func servicesOf(snap *model.Snapshot) []Service {
	out := []Service{}
	if snap == nil {
		return out
	}
	for _, svc := range snap.Services {
		out = append(out, serviceOf(svc))
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// findService returns the service named name in namespace ns: by short
// name, or by full host.
func findService(snap *model.Snapshot, ns, name string) *model.Service {
	if snap == nil {
		return nil
	}
	for _, svc := range snap.Services {
		if svc.Namespace == ns && (serviceName(svc.Hostname, ns) == name || svc.Hostname == name) {
			return svc
		}
	}
	return nil
}

func (s *Server) serviceView(snap *model.Snapshot, ns, name string) (ServiceView, bool) {
	svc := findService(snap, ns, name)
	if svc == nil {
		return ServiceView{}, false
	}
	view := ServiceView{Service: serviceOf(svc), VirtualServices: []VirtualService{}, DestinationRules: []DestinationRule{}}
	for _, vs := range snap.Config.VirtualServices {
		if virtualServiceFor(vs, svc.Hostname) {
			view.VirtualServices = append(view.VirtualServices, s.virtualServiceOf(vs))
		}
	}
	for _, dr := range snap.Config.DestinationRules {
		if model.ResolveHost(dr.Spec.GetHost(), dr.Namespace) == svc.Hostname {
			view.DestinationRules = append(view.DestinationRules, destinationRuleOf(dr))
		}
	}
	return view, true
}

// virtualServiceFor reports whether vs routes requests for host: one of its
// hosts names it.
func virtualServiceFor(vs *model.VirtualService, host string) bool {
	for _, h := range vs.Spec.GetHosts() {
		if model.ResolveHost(h, vs.Namespace) == host {
			return true
		}
	}
	return false
}

func (s *Server) virtualServiceOf(vs *model.VirtualService) VirtualService {
	out := VirtualService{
		Namespace: vs.Namespace,
		Name:      vs.Name,
		Source:    vs.Source.String(),
		Editable:  s.opts.Writer != nil && s.opts.Writer.Editable(vs),
		HTTP:      []HTTPRoute{},
	}
	for i, h := range vs.Spec.GetHttp() {
		r := HTTPRoute{Index: i, Name: h.GetName(), Match: matchSummary(h.GetMatch()), Route: []RouteDestination{}}
		routes := h.GetRoute()
		for _, d := range routes {
			w := d.GetWeight()
			if len(routes) == 1 && w == 0 {
				w = 100 // Istio's default for a single destination
			}
			r.Route = append(r.Route, RouteDestination{
				Host:   d.GetDestination().GetHost(),
				Subset: d.GetDestination().GetSubset(),
				Port:   d.GetDestination().GetPort().GetNumber(),
				Weight: w,
			})
		}
		out.HTTP = append(out.HTTP, r)
	}
	return out
}

func destinationRuleOf(dr *model.DestinationRule) DestinationRule {
	out := DestinationRule{Namespace: dr.Namespace, Name: dr.Name, Source: dr.Source.String(), Subsets: []Subset{}}
	for _, ss := range dr.Spec.GetSubsets() {
		labels := ss.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		out.Subsets = append(out.Subsets, Subset{Name: ss.GetName(), Labels: labels})
	}
	return out
}

// matchSummary renders match conditions for people: conditions of one
// match joined by " and ", alternatives by " or ", "" for a catch-all.
// E.g. "headers end-user exact jason".
func matchSummary(matches []*networking.HTTPMatchRequest) string {
	var alts []string
	for _, m := range matches {
		var conds []string
		add := func(what string, sm *networking.StringMatch) {
			if sm == nil {
				return
			}
			switch v := sm.GetMatchType().(type) {
			case *networking.StringMatch_Exact:
				conds = append(conds, what+" exact "+v.Exact)
			case *networking.StringMatch_Prefix:
				conds = append(conds, what+" prefix "+v.Prefix)
			case *networking.StringMatch_Regex:
				conds = append(conds, what+" regex "+v.Regex)
			}
		}
		add("uri", m.GetUri())
		add("scheme", m.GetScheme())
		add("method", m.GetMethod())
		add("authority", m.GetAuthority())
		for _, k := range sortedKeys(m.GetHeaders()) {
			add("headers "+k, m.GetHeaders()[k])
		}
		for _, k := range sortedKeys(m.GetQueryParams()) {
			add("query "+k, m.GetQueryParams()[k])
		}
		for _, k := range sortedKeys(m.GetWithoutHeaders()) {
			add("without headers "+k, m.GetWithoutHeaders()[k])
		}
		if m.GetPort() != 0 {
			conds = append(conds, fmt.Sprintf("port %d", m.GetPort()))
		}
		if len(m.GetSourceLabels()) > 0 {
			var ls []string
			for _, k := range sortedKeys(m.GetSourceLabels()) {
				ls = append(ls, k+"="+m.GetSourceLabels()[k])
			}
			conds = append(conds, "source labels "+strings.Join(ls, ","))
		}
		if len(m.GetGateways()) > 0 {
			conds = append(conds, "gateways "+strings.Join(m.GetGateways(), ","))
		}
		if m.GetSourceNamespace() != "" {
			conds = append(conds, "source namespace "+m.GetSourceNamespace())
		}
		if len(conds) > 0 {
			alts = append(alts, strings.Join(conds, " and "))
		}
	}
	return strings.Join(alts, " or ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

package analyze

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
)

// Input is what the analyzers read: the config a source loaded and the
// problems of the resources it left out.
type Input struct {
	Config   *model.Config // nil: nothing loaded
	Errors   []*config.ValidationError
	Warnings []config.Warning
	// Line, when set, gives the line of a field path in the resource
	// named key ("Kind ns/name"); 0 when unknown. File sources have it.
	Line func(key, path string) int
	// Cluster says the resources come from a cluster: their Source names
	// the object again ("kubernetes: Kind ns/name"), so it is left out.
	Cluster bool
}

// Analyze runs every analyzer over in and returns the findings sorted by
// file, line and resource.
func Analyze(in Input) []Message {
	a := &analysis{in: in}
	a.schema()
	if in.Config != nil {
		a.snap = model.NewSnapshot(in.Config)
		a.virtualServices()
		a.destinationRules()
		a.selectors()
	}
	slices.SortStableFunc(a.out, func(x, y Message) int {
		return cmp.Or(cmp.Compare(x.Resource.File, y.Resource.File), cmp.Compare(x.Resource.Line, y.Resource.Line),
			cmp.Compare(x.Resource.Namespace, y.Resource.Namespace), cmp.Compare(x.Resource.Kind, y.Resource.Kind),
			cmp.Compare(x.Resource.Name, y.Resource.Name), cmp.Compare(x.Code, y.Code), cmp.Compare(x.Text, y.Text))
	})
	return a.out
}

type analysis struct {
	in   Input
	snap *model.Snapshot
	out  []Message
}

// at names meta's resource, at the line of path when the source knows it.
func (a *analysis) at(meta model.Meta, path string) Resource {
	r := Resource{Kind: meta.Kind, Namespace: meta.Namespace, Name: meta.Name, File: meta.Source.File, Line: meta.Source.Line}
	if a.in.Cluster {
		r.File, r.Line = "", 0
	}
	if a.in.Line != nil && path != "" {
		if l := a.in.Line(meta.Key(), path); l > 0 {
			r.Line = l
		}
	}
	return r
}

func (a *analysis) report(c Code, r Resource, field, format string, args ...any) {
	a.out = append(a.out, newMessage(c, r, field, format, args...))
}

// schema reports every problem the loader found (IST0106) and every kind it
// ignored (TRL0002).
func (a *analysis) schema() {
	for _, e := range a.in.Errors {
		r := Resource{Kind: e.Kind, Namespace: e.Namespace, Name: e.Name, File: e.Source.File, Line: e.Source.Line}
		if a.in.Cluster && e.Name != "" {
			r.File, r.Line = "", 0
		}
		reason := e.Reason
		if e.Field != "" {
			reason = e.Field + ": " + reason
		}
		a.report(SchemaValidationError, r, e.Field, "Schema validation error: %s", reason)
	}
	for _, w := range a.in.Warnings {
		a.report(IgnoredResource, Resource{File: w.Source.File, Line: w.Source.Line}, "", "%s", w.Message)
	}
}

// hostKnown reports whether host (fully qualified) is a service of the
// registry, or matches one when either is a wildcard.
func (a *analysis) hostKnown(host string) bool {
	if a.snap.Service(host) != nil {
		return true
	}
	for _, svc := range a.snap.Services {
		if hostMatch(svc.Hostname, host) || hostMatch(host, svc.Hostname) {
			return true
		}
	}
	return false
}

// hostMatch reports whether pattern ("*", "*.example.com" or exact)
// covers host.
func hostMatch(pattern, host string) bool {
	if pattern == "*" || pattern == host {
		return true
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix)
	}
	return false
}

func (a *analysis) subsets() map[string]bool {
	out := map[string]bool{}
	for _, dr := range a.in.Config.DestinationRules {
		host := model.ResolveHost(dr.Spec.GetHost(), dr.Namespace)
		for _, s := range dr.Spec.GetSubsets() {
			out[host+"|"+s.GetName()] = true
		}
	}
	return out
}

func (a *analysis) virtualServices() {
	subsets := a.subsets()
	gateways := map[string]*model.Gateway{}
	for _, g := range a.in.Config.Gateways {
		gateways[g.Namespace+"/"+g.Name] = g
	}
	meshHosts := map[string][]*model.VirtualService{}
	for _, vs := range a.in.Config.VirtualServices {
		dest := func(d *networking.Destination, path string) {
			if d == nil {
				return
			}
			host := model.ResolveHost(d.GetHost(), vs.Namespace)
			if !a.hostKnown(host) {
				a.report(ReferencedResourceNotFound, a.at(vs.Meta, path+".host"), path+".host", "Referenced host not found: %q", d.GetHost())
				return
			}
			if s := d.GetSubset(); s != "" && !subsets[host+"|"+s] {
				a.report(ReferencedResourceNotFound, a.at(vs.Meta, path+".subset"), path+".subset",
					"Referenced host+subset in destinationrule not found: %q", d.GetHost()+"+"+s)
			}
		}
		for i, r := range vs.Spec.GetHttp() {
			for j, rd := range r.GetRoute() {
				dest(rd.GetDestination(), fmt.Sprintf("spec.http[%d].route[%d].destination", i, j))
			}
			dest(r.GetMirror(), fmt.Sprintf("spec.http[%d].mirror", i))
			for j, m := range r.GetMirrors() {
				dest(m.GetDestination(), fmt.Sprintf("spec.http[%d].mirrors[%d].destination", i, j))
			}
		}
		for i, r := range vs.Spec.GetTcp() {
			for j, rd := range r.GetRoute() {
				dest(rd.GetDestination(), fmt.Sprintf("spec.tcp[%d].route[%d].destination", i, j))
			}
		}
		for i, r := range vs.Spec.GetTls() {
			for j, rd := range r.GetRoute() {
				dest(rd.GetDestination(), fmt.Sprintf("spec.tls[%d].route[%d].destination", i, j))
			}
		}
		a.unreachableRules(vs)

		bound := vs.Spec.GetGateways()
		if len(bound) == 0 || slices.Contains(bound, "mesh") {
			for _, h := range vs.Spec.GetHosts() {
				host := model.ResolveHost(h, vs.Namespace)
				meshHosts[host] = append(meshHosts[host], vs)
			}
		}
		for i, g := range bound {
			if g == "mesh" {
				continue
			}
			ref := g
			if !strings.Contains(g, "/") {
				ref = vs.Namespace + "/" + g
			}
			path := fmt.Sprintf("spec.gateways[%d]", i)
			gw := gateways[ref]
			if gw == nil {
				a.report(ReferencedResourceNotFound, a.at(vs.Meta, path), path, "Referenced gateway not found: %q", g)
				continue
			}
			var missing []string
			for _, h := range vs.Spec.GetHosts() {
				if !gatewayHasHost(gw, vs.Namespace, h) {
					missing = append(missing, h)
				}
			}
			if len(missing) > 0 {
				a.report(VirtualServiceHostNotFoundInGateway, a.at(vs.Meta, "spec.hosts"), "spec.hosts",
					"one or more host %v defined in VirtualService %s/%s not found in Gateway %s.", missing, vs.Namespace, vs.Name, ref)
			}
		}
	}
	for _, host := range slices.Sorted(maps.Keys(meshHosts)) {
		vss := meshHosts[host]
		if len(vss) < 2 {
			continue
		}
		names := make([]string, len(vss))
		for i, vs := range vss {
			names[i] = vs.Namespace + "/" + vs.Name
		}
		for _, vs := range vss {
			a.report(ConflictingMeshGatewayVirtualServiceHosts, a.at(vs.Meta, "spec.hosts"), "spec.hosts",
				"The VirtualServices %s associated with mesh gateway define the same host %s which can lead to undefined behavior. "+
					"This can be fixed by merging the conflicting VirtualServices into a single resource.", strings.Join(names, ","), host)
		}
	}
}

// gatewayHasHost reports whether a server of gw accepts host for a
// VirtualService in ns (server hosts may be "ns/host", "*/host" or "./host").
func gatewayHasHost(gw *model.Gateway, ns, host string) bool {
	for _, s := range gw.Spec.GetServers() {
		for _, h := range s.GetHosts() {
			if i := strings.Index(h, "/"); i >= 0 {
				hns := h[:i]
				if hns == "." {
					hns = gw.Namespace
				}
				if hns != "*" && hns != ns {
					continue
				}
				h = h[i+1:]
			}
			if hostMatch(h, host) || hostMatch(host, h) {
				return true
			}
		}
	}
	return false
}

// unreachableRules finds HTTP rules no request can reach (IST0130): those
// after a rule without matches, and those whose every match an earlier
// rule already has; and single matches an earlier rule has (IST0131).
func (a *analysis) unreachableRules(vs *model.VirtualService) {
	seen := map[string]int{} // match key → first rule
	catchAll := -1
	for i, r := range vs.Spec.GetHttp() {
		path := fmt.Sprintf("spec.http[%d]", i)
		name := ruleName(r.GetName(), i)
		if catchAll >= 0 {
			a.report(VirtualServiceUnreachableRule, a.at(vs.Meta, path), path,
				"VirtualService rule %s not used (only the last rule can have no matches).", name)
			continue
		}
		if len(r.GetMatch()) == 0 {
			catchAll = i
			continue
		}
		var dups []Message
		for j, m := range r.GetMatch() {
			key := matchKey(m)
			if key == "" {
				catchAll = i
			}
			if k, ok := seen[key]; ok && k != i {
				mpath := fmt.Sprintf("%s.match[%d]", path, j)
				dups = append(dups, newMessage(VirtualServiceIneffectiveMatch, a.at(vs.Meta, mpath), mpath,
					"VirtualService rule %s match %s is not used (duplicate/overlapping match in rule %s).",
					name, ruleName(m.GetName(), j), ruleName(vs.Spec.GetHttp()[k].GetName(), k)))
				continue
			}
			if _, ok := seen[key]; !ok {
				seen[key] = i
			}
		}
		if len(dups) == len(r.GetMatch()) {
			a.report(VirtualServiceUnreachableRule, a.at(vs.Meta, path), path,
				"VirtualService rule %s not used (all matches used by prior rules).", name)
			continue
		}
		a.out = append(a.out, dups...)
	}
}

func ruleName(name string, i int) string {
	if name != "" {
		return name
	}
	return fmt.Sprintf("#%d", i)
}

// matchKey is a match's conditions, without its name, in a comparable
// form; "" for a match with no conditions (it matches everything).
func matchKey(m *networking.HTTPMatchRequest) string {
	c := proto.Clone(m).(*networking.HTTPMatchRequest)
	c.Name = ""
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return fmt.Sprintf("%p", m) // unique: never equal to another
	}
	return string(b)
}

// destinationRules reports rules for hosts no service has (TRL0001) and
// subsets that select no endpoint of theirs (IST0173).
func (a *analysis) destinationRules() {
	for _, dr := range a.in.Config.DestinationRules {
		host := model.ResolveHost(dr.Spec.GetHost(), dr.Namespace)
		if !a.hostKnown(host) {
			a.report(DestinationRuleHostNotFound, a.at(dr.Meta, "spec.host"), "spec.host",
				"Referenced host not found: %q (no ServiceEntry or Service has it)", dr.Spec.GetHost())
			continue
		}
		svc := a.snap.Service(host)
		if svc == nil || svc.Location == networking.ServiceEntry_MESH_EXTERNAL {
			continue // a wildcard, or outside the mesh: no workloads to select
		}
		for i, s := range dr.Spec.GetSubsets() {
			found := false
			for _, ep := range svc.Endpoints {
				if model.LabelsMatch(s.GetLabels(), ep.Labels) {
					found = true
					break
				}
			}
			if !found {
				path := fmt.Sprintf("spec.subsets[%d]", i)
				a.report(DestinationRuleSubsetNotSelectPods, a.at(dr.Meta, path), path,
					"The Subset %s defined in the DestinationRule does not select any pods, which may lead to 503 UH (NoHealthyUpstream).", s.GetName())
			}
		}
	}
}

// selectors reports workload selectors that match no workload
// (WorkloadEntry or Pod) of their namespace (IST0127). A Gateway's selector
// looks in every namespace, as Istio's does by default.
func (a *analysis) selectors() {
	cfg := a.in.Config
	workloads := slices.Concat(cfg.WorkloadEntries, cfg.Pods)
	check := func(meta model.Meta, path string, sel map[string]string, anyNamespace bool) {
		if len(sel) == 0 {
			return
		}
		for _, w := range workloads {
			if (anyNamespace || w.Namespace == meta.Namespace) && model.LabelsMatch(sel, w.Spec.GetLabels()) {
				return
			}
		}
		parts := make([]string, 0, len(sel))
		for _, k := range slices.Sorted(maps.Keys(sel)) {
			parts = append(parts, k+"="+sel[k])
		}
		a.report(NoMatchingWorkloadsFound, a.at(meta, path), path,
			"No matching workloads for this resource with the following labels: %s", strings.Join(parts, ","))
	}
	for _, r := range cfg.Sidecars {
		check(r.Meta, "spec.workloadSelector", r.Spec.GetWorkloadSelector().GetLabels(), false)
	}
	for _, r := range cfg.PeerAuthentications {
		check(r.Meta, "spec.selector", r.Spec.GetSelector().GetMatchLabels(), false)
	}
	for _, r := range cfg.AuthorizationPolicies {
		check(r.Meta, "spec.selector", r.Spec.GetSelector().GetMatchLabels(), false)
	}
	for _, r := range cfg.RequestAuthentications {
		check(r.Meta, "spec.selector", r.Spec.GetSelector().GetMatchLabels(), false)
	}
	for _, r := range cfg.Telemetries {
		check(r.Meta, "spec.selector", r.Spec.GetSelector().GetMatchLabels(), false)
	}
	for _, r := range cfg.DestinationRules {
		check(r.Meta, "spec.workloadSelector", r.Spec.GetWorkloadSelector().GetMatchLabels(), false)
	}
	for _, r := range cfg.ServiceEntries {
		if !r.Source.Registry() { // a Service with no Pods is no mistake
			check(r.Meta, "spec.workloadSelector", r.Spec.GetWorkloadSelector().GetLabels(), false)
		}
	}
	for _, r := range cfg.Gateways {
		check(r.Meta, "spec.selector", r.Spec.GetSelector(), true)
	}
}

package model

import (
	"sort"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// The exportTo values Istio reserves; anything else is a namespace name.
const (
	ExportPublic  = "*" // every namespace
	ExportPrivate = "." // the resource's own namespace
	ExportNone    = "~" // no namespace
)

// Exported reports whether a resource in namespace owner with exportTo
// (already defaulted, see ServiceExportTo and friends) is visible to
// proxies in namespace ns. "~" anywhere hides it, as in Istio.
func Exported(exportTo []string, owner, ns string) bool {
	visible := false
	for _, e := range exportTo {
		switch e {
		case ExportNone:
			return false
		case ExportPublic:
			visible = true
		case ExportPrivate:
			visible = visible || owner == ns
		default:
			visible = visible || e == ns
		}
	}
	return visible
}

// exportToOr returns exportTo, or the mesh default when it is empty, or
// "*" when that is empty too (Istio's defaults).
func exportToOr(exportTo, meshDefault []string) []string {
	if len(exportTo) > 0 {
		return exportTo
	}
	if len(meshDefault) > 0 {
		return meshDefault
	}
	return []string{ExportPublic}
}

// ServiceExportTo is the effective exportTo of svc: its ServiceEntry's, else
// MeshConfig defaultServiceExportTo, else "*".
func (s *Snapshot) ServiceExportTo(svc *Service) []string {
	var own []string
	if svc.Entry != nil {
		own = svc.Entry.Spec.GetExportTo()
	}
	return exportToOr(own, s.Config.Mesh.GetDefaultServiceExportTo())
}

// VirtualServiceExportTo is vs's exportTo, else MeshConfig
// defaultVirtualServiceExportTo, else "*".
func (s *Snapshot) VirtualServiceExportTo(vs *VirtualService) []string {
	return exportToOr(vs.Spec.GetExportTo(), s.Config.Mesh.GetDefaultVirtualServiceExportTo())
}

// DestinationRuleExportTo is dr's exportTo, else MeshConfig
// defaultDestinationRuleExportTo, else "*".
func (s *Snapshot) DestinationRuleExportTo(dr *DestinationRule) []string {
	return exportToOr(dr.Spec.GetExportTo(), s.Config.Mesh.GetDefaultDestinationRuleExportTo())
}

// View is a Snapshot narrowed to what proxies in one namespace may see:
// Services, VirtualServices and DestinationRules replaced by the given
// lists, everything else (workloads, the proxy's own inbound services,
// policies, mesh config) shared with the full snapshot. Translation code
// reads a view exactly as a Snapshot.
func (s *Snapshot) View(services []*Service, vss []*VirtualService, drs []*DestinationRule) *Snapshot {
	full := s.root()
	cfg := *full.Config
	cfg.VirtualServices, cfg.DestinationRules = vss, drs
	v := &Snapshot{
		Config:      &cfg,
		Services:    services,
		byHost:      make(map[string]*Service, len(services)),
		workloadsIP: full.workloadsIP,
		podsAt:      full.podsAt,
		full:        full,
	}
	for _, svc := range services {
		v.byHost[svc.Hostname] = svc
	}
	v.drs = indexDestinationRules(drs)
	return v
}

// Full is the snapshot a view was made from (s itself when s is not a view).
func (s *Snapshot) Full() *Snapshot { return s.root() }

func (s *Snapshot) root() *Snapshot {
	if s.full != nil {
		return s.full
	}
	return s
}

// Memo returns the value cached under key on the full snapshot, building it
// once. Snapshots are immutable, so whatever is derived from one (such as
// the namespace views translation uses) can be shared by every proxy for
// the snapshot's lifetime. build may run more than once under contention;
// one result wins.
func (s *Snapshot) Memo(key any, build func() any) any {
	root := s.root()
	if v, ok := root.memo.Load(key); ok {
		return v
	}
	v, _ := root.memo.LoadOrStore(key, build())
	return v
}

// drIndex holds DestinationRules by namespace, then host as written
// (resolved to a full name), in namespace/name order, with rules Istio
// merges already merged.
type drIndex map[string]map[string][]*DestinationRule

func indexDestinationRules(drs []*DestinationRule) drIndex {
	idx := drIndex{}
	for _, dr := range drs {
		host := ResolveHost(dr.Spec.GetHost(), dr.Namespace)
		byHost := idx[dr.Namespace]
		if byHost == nil {
			byHost = map[string][]*DestinationRule{}
			idx[dr.Namespace] = byHost
		}
		byHost[host] = addDestinationRule(byHost[host], dr)
	}
	return idx
}

// addDestinationRule appends dr to the rules for one host in one
// namespace, merging it into an earlier one the way Istio does: two rules
// without workloadSelector and with the same exportTo become one, the
// later's subsets added (a subset name already defined is ignored) and its
// trafficPolicy used only where the earlier has none. Rules with a
// workloadSelector are never merged.
func addDestinationRule(list []*DestinationRule, dr *DestinationRule) []*DestinationRule {
	if dr.Spec.GetWorkloadSelector() != nil {
		return append(list, dr)
	}
	for i, prev := range list {
		if prev.Spec.GetWorkloadSelector() != nil || !sameStrings(prev.Spec.GetExportTo(), dr.Spec.GetExportTo()) {
			continue
		}
		merged := &DestinationRule{Meta: prev.Meta}
		spec := proto.Clone(prev.Spec).(*networking.DestinationRule)
		seen := map[string]bool{}
		for _, ss := range spec.Subsets {
			seen[ss.GetName()] = true
		}
		for _, ss := range dr.Spec.GetSubsets() {
			if !seen[ss.GetName()] {
				spec.Subsets = append(spec.Subsets, ss)
			}
		}
		if spec.TrafficPolicy == nil {
			spec.TrafficPolicy = dr.Spec.GetTrafficPolicy()
		}
		merged.Spec = spec
		list[i] = merged
		return list
	}
	return append(list, dr)
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(a)
	sort.Strings(b)
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// DestinationRuleFor returns the rule applying to host for a proxy in
// namespace ns with workload labels, by Istio's precedence: the proxy's
// namespace (a rule whose workloadSelector matches the proxy first), then
// the host's own namespace, then the mesh root namespace, each considering
// only rules exported to ns. Within a namespace an exact host beats the
// longest matching wildcard. Nil if none.
func (s *Snapshot) DestinationRuleFor(host, ns string, labels map[string]string) *DestinationRule {
	svcNS := ""
	if svc := s.byHost[host]; svc != nil {
		svcNS = svc.Namespace
	}
	root := s.Config.Mesh.GetRootNamespace()
	for i, lookIn := range []string{ns, svcNS, root} {
		if lookIn == "" || (i == 1 && lookIn == ns) || (i == 2 && (lookIn == ns || lookIn == svcNS)) {
			continue
		}
		if dr := s.destinationRuleIn(lookIn, host, ns, labels); dr != nil {
			return dr
		}
	}
	return nil
}

func (s *Snapshot) destinationRuleIn(lookIn, host, ns string, labels map[string]string) *DestinationRule {
	byHost := s.drs[lookIn]
	if len(byHost) == 0 {
		return nil
	}
	if dr := s.pickDestinationRule(byHost[host], lookIn, ns, labels); dr != nil {
		return dr
	}
	// The most specific wildcard host covering host.
	best, bestLen := (*DestinationRule)(nil), -1
	for pattern, list := range byHost {
		if !strings.HasPrefix(pattern, "*") || len(pattern) <= bestLen || !wildcardCovers(pattern, host) {
			continue
		}
		if dr := s.pickDestinationRule(list, lookIn, ns, labels); dr != nil {
			best, bestLen = dr, len(pattern)
		}
	}
	return best
}

// pickDestinationRule chooses among one namespace's rules for one host:
// a workloadSelector rule matching the proxy (only for rules in the
// proxy's own namespace, as Istio), else the first selector-less rule
// exported to ns.
func (s *Snapshot) pickDestinationRule(list []*DestinationRule, lookIn, ns string, labels map[string]string) *DestinationRule {
	var plain *DestinationRule
	for _, dr := range list {
		if !Exported(s.DestinationRuleExportTo(dr), dr.Namespace, ns) {
			continue
		}
		if sel := dr.Spec.GetWorkloadSelector().GetMatchLabels(); sel != nil {
			if lookIn == ns && labels != nil && LabelsMatch(sel, labels) {
				return dr
			}
			continue
		}
		if plain == nil {
			plain = dr
		}
	}
	return plain
}

// wildcardCovers reports whether a wildcard host pattern ("*" or
// "*.example.com") covers host.
func wildcardCovers(pattern, host string) bool {
	if pattern == "*" {
		return true
	}
	return strings.HasSuffix(host, pattern[1:]) && host != pattern[1:]
}

// memoMap is sync.Map under a name that says what it is for.
type memoMap = sync.Map

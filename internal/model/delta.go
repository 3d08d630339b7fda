package model

import (
	"maps"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// EndpointChange is what EndpointDelta found between two snapshots.
type EndpointChange struct {
	// Hosts are the service hostnames whose resolved endpoints differ,
	// sorted. Only their ClusterLoadAssignments change.
	Hosts []string
	// Addresses are the workload addresses (old and new) of every
	// WorkloadEntry or Pod that changed and of every endpoint that was
	// added, removed or changed, sorted. A proxy at one of them may have
	// changed beyond its load assignments (its inbound listeners, the
	// labels and locality its whole translation reads): re-translate it.
	Addresses []string
}

// EndpointDelta reports whether new differs from old in endpoint data only
// — WorkloadEntries, Pods and inline ServiceEntry endpoints — such that
// for every proxy not at one of the returned Addresses only the
// ClusterLoadAssignments of the returned Hosts' clusters can differ
// between the two snapshots' translations. ok is false whenever anything
// else may change: another kind, the MeshConfig, a ServiceEntry's fields
// other than endpoints, a view, or an endpoint change that reaches a
// cluster or listener (DNS resolution, resolution NONE gaining or losing
// its endpoints, the set of workload identities in a cluster's SANs, a
// local-mode cluster's loopback binding).
//
// It does not see what other packages attach to a snapshot
// (translate.SetAutoScope); translate.EndpointDelta checks that too.
//
// Unchanged resources are recognised by pointer first (config's file
// cache hands back the same objects), then by value.
func EndpointDelta(old, new *Snapshot) (EndpointChange, bool) {
	var ch EndpointChange
	if old == nil || new == nil || old.full != nil || new.full != nil {
		return ch, false
	}
	oc, nc := old.Config, new.Config
	if oc != nc {
		if !proto.Equal(oc.Mesh, nc.Mesh) ||
			!sameResources(oc.VirtualServices, nc.VirtualServices) ||
			!sameResources(oc.DestinationRules, nc.DestinationRules) ||
			!sameResources(oc.Gateways, nc.Gateways) ||
			!sameResources(oc.Sidecars, nc.Sidecars) ||
			!sameResources(oc.Telemetries, nc.Telemetries) ||
			!sameResources(oc.PeerAuthentications, nc.PeerAuthentications) ||
			!sameResources(oc.AuthorizationPolicies, nc.AuthorizationPolicies) ||
			!sameResources(oc.RequestAuthentications, nc.RequestAuthentications) ||
			!sameResources(oc.ProxyConfigs, nc.ProxyConfigs) ||
			!sameResources(oc.WorkloadGroups, nc.WorkloadGroups) ||
			!maps.EqualFunc(oc.Namespaces, nc.Namespaces, maps.Equal[map[string]string]) {
			return ch, false
		}
	}
	d := deltaBuilder{old: old, new: new, hosts: map[string]bool{}, addrs: map[string]bool{}}
	if !d.serviceEntries() || !d.workloads(oc.WorkloadEntries, nc.WorkloadEntries, false) ||
		!d.workloads(oc.Pods, nc.Pods, true) {
		return ch, false
	}
	for h := range d.hosts {
		changed, ok := d.host(h)
		if !ok {
			return ch, false
		}
		if changed {
			ch.Hosts = append(ch.Hosts, h)
		}
	}
	slices.Sort(ch.Hosts)
	ch.Addresses = slices.Sorted(maps.Keys(d.addrs))
	return ch, true
}

// deltaConfigFields are the model.Config fields EndpointDelta compares; a
// test fails when Config gains one that is not listed here.
var deltaConfigFields = []string{
	"Mesh", "VirtualServices", "DestinationRules", "ServiceEntries", "WorkloadEntries",
	"Gateways", "Sidecars", "Telemetries", "PeerAuthentications", "AuthorizationPolicies",
	"RequestAuthentications", "ProxyConfigs", "Pods", "WorkloadGroups", "Namespaces",
}

// deltaEndpointFields are the Endpoint fields endpointEqual compares.
var deltaEndpointFields = []string{
	"Address", "Ports", "Labels", "Weight", "Locality", "Network", "ServiceAccount", "Workload",
}

type deltaBuilder struct {
	old, new *Snapshot
	hosts    map[string]bool // candidates: their endpoints may differ
	addrs    map[string]bool
}

// sameResources: the same resources, in the same order, equal in
// everything translation reads (Source only names them in errors).
func sameResources[T proto.Message](a, b []*Resource[T]) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameResource(a[i], b[i]) {
			return false
		}
	}
	return true
}

func sameResource[T proto.Message](a, b *Resource[T]) bool {
	if a == b {
		return true
	}
	if !sameMeta(a.Meta, b.Meta) {
		return false
	}
	return any(a.Spec) == any(b.Spec) || proto.Equal(a.Spec, b.Spec)
}

func sameMeta(a, b Meta) bool {
	return a.Kind == b.Kind && a.Namespace == b.Namespace && a.Name == b.Name &&
		maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Annotations, b.Annotations) && slices.Equal(a.Conditions, b.Conditions)
}

// serviceEntries pairs the ServiceEntries by position (both lists are
// sorted and hold the same entries, or ok is false); an entry may differ
// in its endpoints only, which makes its hosts candidates.
func (d *deltaBuilder) serviceEntries() bool {
	a, b := d.old.Config.ServiceEntries, d.new.Config.ServiceEntries
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] == b[i] {
			continue
		}
		if !sameMeta(a[i].Meta, b[i].Meta) {
			return false
		}
		if a[i].Spec == b[i].Spec || proto.Equal(a[i].Spec, b[i].Spec) {
			continue
		}
		if !equalButEndpoints(a[i].Spec, b[i].Spec) {
			return false
		}
		for _, h := range b[i].Spec.GetHosts() {
			d.hosts[h] = true
		}
	}
	return true
}

func equalButEndpoints(a, b *networking.ServiceEntry) bool {
	a, b = proto.Clone(a).(*networking.ServiceEntry), proto.Clone(b).(*networking.ServiceEntry)
	a.Endpoints, b.Endpoints = nil, nil
	return proto.Equal(a, b)
}

// workloads matches WorkloadEntries (or Pods) by namespace/name. Each one
// added, removed or changed marks its addresses, and the hosts of the
// services that select it (pods: that have an inline endpoint at it).
func (d *deltaBuilder) workloads(a, b []*WorkloadEntry, pods bool) bool {
	if len(a) == len(b) {
		// Usually the same entries in the same order: pair by position.
		aligned := true
		for i := range a {
			if a[i] != b[i] && (a[i].Namespace != b[i].Namespace || a[i].Name != b[i].Name) {
				aligned = false
				break
			}
		}
		if aligned {
			for i := range a {
				if a[i] != b[i] && !sameResource(a[i], b[i]) {
					d.workloadChanged(a[i], pods)
					d.workloadChanged(b[i], pods)
				}
			}
			return true
		}
	}
	byKey := make(map[string]*WorkloadEntry, len(a))
	for _, we := range a {
		k := we.Namespace + "/" + we.Name
		if _, dup := byKey[k]; dup {
			return false
		}
		byKey[k] = we
	}
	seen := make(map[string]bool, len(b))
	for _, we := range b {
		k := we.Namespace + "/" + we.Name
		if seen[k] {
			return false
		}
		seen[k] = true
		prev, ok := byKey[k]
		if ok && sameResource(prev, we) {
			continue
		}
		d.workloadChanged(we, pods)
		if ok {
			d.workloadChanged(prev, pods)
		}
	}
	for k, we := range byKey {
		if !seen[k] {
			d.workloadChanged(we, pods)
		}
	}
	return true
}

func (d *deltaBuilder) workloadChanged(we *WorkloadEntry, pod bool) {
	addr := we.Spec.GetAddress()
	d.addrs[addr] = true
	// Selectors and inline endpoints are equal in both snapshots
	// (serviceEntries), apart from inline endpoints, so both are scanned.
	for _, cfg := range []*Config{d.old.Config, d.new.Config} {
		for _, se := range cfg.ServiceEntries {
			if se.Namespace != we.Namespace {
				continue
			}
			if usesWorkload(se, we, pod) {
				for _, h := range se.Spec.GetHosts() {
					d.hosts[h] = true
				}
			}
		}
		if d.old.Config == d.new.Config {
			break
		}
	}
}

// host compares one candidate host's endpoints; ok is false when the
// change reaches more than its load assignments.
func (d *deltaBuilder) host(h string) (changed, ok bool) {
	a, b := d.old.Service(h), d.new.Service(h)
	if a == nil || b == nil {
		return false, a == b
	}
	if a.Entry != b.Entry && !sameMeta(a.Entry.Meta, b.Entry.Meta) {
		return false, false // another entry now owns the host
	}
	if endpointsEqual(a.Endpoints, b.Endpoints) {
		return false, true
	}
	switch b.Resolution {
	case networking.ServiceEntry_STATIC:
	case networking.ServiceEntry_NONE:
		// EDS with endpoints, ORIGINAL_DST without (translate/clusters.go).
		if (len(a.Endpoints) == 0) != (len(b.Endpoints) == 0) {
			return false, false
		}
	default:
		return false, false // DNS clusters carry their endpoints inline
	}
	if !slices.Equal(endpointIdentities(a), endpointIdentities(b)) {
		return false, false // the clusters' SANs (translate/mtls.go)
	}
	for _, sel := range d.subsetSelectors(h) {
		if loopbackOnly(a.Endpoints, sel) != loopbackOnly(b.Endpoints, sel) {
			return false, false // upstream_bind_config (translate/localbind.go)
		}
	}
	d.markAddresses(a.Endpoints, b.Endpoints)
	return true, true
}

// markAddresses marks the addresses whose endpoints differ between the
// two lists (a proxy there may serve or stop serving the service).
func (d *deltaBuilder) markAddresses(a, b []*Endpoint) {
	byAddr := func(eps []*Endpoint) map[string][]*Endpoint {
		m := make(map[string][]*Endpoint, len(eps))
		for _, ep := range eps {
			m[ep.Address] = append(m[ep.Address], ep)
		}
		return m
	}
	am, bm := byAddr(a), byAddr(b)
	for addr, x := range am {
		if !endpointsEqual(x, bm[addr]) {
			d.addrs[addr] = true
		}
	}
	for addr, y := range bm {
		if _, ok := am[addr]; !ok && len(y) > 0 {
			d.addrs[addr] = true
		}
	}
}

// subsetSelectors are the label sets a cluster of host may select
// endpoints with: none (the port's own cluster) and every subset of every
// DestinationRule that could apply to host from any namespace.
func (d *deltaBuilder) subsetSelectors(host string) []map[string]string {
	out := []map[string]string{nil}
	for _, dr := range d.new.Config.DestinationRules {
		pattern := ResolveHost(dr.Spec.GetHost(), dr.Namespace)
		if pattern != host && !(strings.HasPrefix(pattern, "*") && wildcardCovers(pattern, host)) {
			continue
		}
		for _, ss := range dr.Spec.GetSubsets() {
			out = append(out, ss.GetLabels())
		}
	}
	return out
}

// loopbackOnly is translate's test for binding a local-mode cluster to the
// proxy's loopback address: some endpoint selected, all on loopback.
func loopbackOnly(eps []*Endpoint, sel map[string]string) bool {
	n := 0
	for _, ep := range eps {
		if !LabelsMatch(sel, ep.Labels) {
			continue
		}
		a, err := netip.ParseAddr(ep.Address)
		if err != nil || !a.IsLoopback() {
			return false
		}
		n++
	}
	return n > 0
}

// endpointIdentities are the namespace/serviceAccount pairs of the
// service's sidecar endpoints, sorted, without repeats: what the
// service's clusters put in their SANs.
func endpointIdentities(svc *Service) []string {
	var ids []string
	for _, ep := range svc.Endpoints {
		if !ep.HasSidecar() {
			continue
		}
		ns, sa := svc.Identity(ep)
		ids = append(ids, ns+"/"+sa)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

func endpointsEqual(a, b []*Endpoint) bool {
	return slices.EqualFunc(a, b, endpointEqual)
}

// endpointEqual compares everything a load assignment is made of,
// including the workload's name and metadata (endpoint metadata, tlsMode).
func endpointEqual(a, b *Endpoint) bool {
	if a == b {
		return true
	}
	if a.Address != b.Address || a.Weight != b.Weight || a.Locality != b.Locality ||
		a.Network != b.Network || a.ServiceAccount != b.ServiceAccount ||
		!maps.Equal(a.Ports, b.Ports) || !maps.Equal(a.Labels, b.Labels) {
		return false
	}
	if (a.Workload == nil) != (b.Workload == nil) {
		return false
	}
	return a.Workload == nil || a.Workload == b.Workload || sameMeta(a.Workload.Meta, b.Workload.Meta)
}

// Labels and annotations that say whether a workload runs a sidecar.
const (
	TLSModeLabel       = "security.istio.io/tlsMode"
	TLSModeIstio       = "istio"
	SidecarInjectLabel = "sidecar.istio.io/inject"
)

// HasSidecar reports whether the endpoint's workload runs a sidecar, so that
// auto-mTLS may send it mTLS: an explicit security.istio.io/tlsMode label
// says so (as in Istio); otherwise every WorkloadEntry-backed endpoint does,
// unless labelled or annotated sidecar.istio.io/inject: "false", and inline
// ServiceEntry endpoints do not.
func (e *Endpoint) HasSidecar() bool {
	if mode, ok := e.Labels[TLSModeLabel]; ok {
		return mode == TLSModeIstio
	}
	we := e.Workload
	if we == nil {
		return false
	}
	return e.Labels[SidecarInjectLabel] != "false" && we.Labels[SidecarInjectLabel] != "false" &&
		we.Annotations[SidecarInjectLabel] != "false"
}

// Memoized returns the value Memo cached under key, without building one.
func (s *Snapshot) Memoized(key any) (any, bool) {
	return s.root().memo.Load(key)
}

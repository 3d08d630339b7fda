// Package autoscope learns, from observed traffic, which services each
// opted-in namespace's sidecars call, and turns that into a synthetic
// Sidecar egress list per namespace (see docs/scoping.md, "Automatic
// scoping"). It only computes scopes; translate applies them
// (translate.SetAutoScope) and the control plane decides when to push.
package autoscope

import (
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/ui"
)

// DefaultTTL is how long a dependency stays in scope after it was last
// seen: long enough that a scope does not flap with bursty traffic.
const DefaultTTL = time.Hour

// Options configure a Learner.
type Options struct {
	// Namespaces are the opted-in namespaces; "*" means every namespace.
	Namespaces []string
	TTL        time.Duration // 0: DefaultTTL
}

// Learner accumulates observed dependencies. Safe for concurrent use.
type Learner struct {
	all bool
	ns  map[string]bool
	ttl time.Duration

	mu   sync.Mutex
	seen map[string]map[string]time.Time // namespace → host → last seen
}

// New returns a Learner for opts.
func New(opts Options) *Learner {
	l := &Learner{ns: map[string]bool{}, ttl: opts.TTL, seen: map[string]map[string]time.Time{}}
	if l.ttl <= 0 {
		l.ttl = DefaultTTL
	}
	for _, n := range opts.Namespaces {
		if n == "*" {
			l.all = true
		}
		l.ns[n] = true
	}
	return l
}

// Label opts a Kubernetes namespace in ("enabled") as if named in
// Options.Namespaces, or out of "*" ("disabled"); it is read from
// model.Config.Namespaces.
const Label = "trellis.dev/auto-scope"

// Enabled reports whether namespace ns opted in through Options.
func (l *Learner) Enabled(ns string) bool { return l.all || l.ns[ns] }

// EnabledIn reports whether ns is opted in, by Options or by its Label in
// snap's namespaces.
func (l *Learner) EnabledIn(snap *model.Snapshot, ns string) bool {
	if snap != nil && snap.Config != nil {
		switch snap.Config.Namespaces[ns][Label] {
		case "enabled":
			return true
		case "disabled":
			return l.ns[ns] // a name given outright still counts
		}
	}
	return l.Enabled(ns)
}

// Any reports whether any namespace is opted in, so that nothing need be
// scraped while none is.
func (l *Learner) Any(snap *model.Snapshot) bool {
	if len(l.ns) > 0 {
		return true
	}
	if snap != nil && snap.Config != nil {
		for _, labels := range snap.Config.Namespaces {
			if labels[Label] == "enabled" {
				return true
			}
		}
	}
	return false
}

// Observe records the edges of t whose source is a workload of an opted-in
// namespace, mapping each destination to a service of snap, and forgets
// dependencies not seen for the TTL. It reports whether any namespace's
// set of hosts changed.
func (l *Learner) Observe(t *ui.Traffic, snap *model.Snapshot, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	changed := false
	if t != nil && snap != nil {
		nodes := make(map[string]ui.Node, len(t.Nodes))
		for _, n := range t.Nodes {
			nodes[n.ID] = n
		}
		for _, e := range t.Edges {
			src, dst := nodes[e.Source], nodes[e.Target]
			if src.Kind != ui.KindWorkload || !l.EnabledIn(snap, src.Namespace) {
				continue
			}
			host := serviceOf(snap, dst)
			if host == "" {
				continue
			}
			hosts := l.seen[src.Namespace]
			if hosts == nil {
				hosts = map[string]time.Time{}
				l.seen[src.Namespace] = hosts
			}
			if _, ok := hosts[host]; !ok {
				changed = true
			}
			hosts[host] = now
		}
	}
	for ns, hosts := range l.seen {
		for h, at := range hosts {
			if now.Sub(at) > l.ttl {
				delete(hosts, h)
				changed = true
			}
		}
		if len(hosts) == 0 {
			delete(l.seen, ns)
		}
	}
	return changed
}

// serviceOf maps a destination node to a service host of snap. The
// destination_service a proxy reports is normally the host; traffic that
// left through the passthrough may instead name an address ("10.0.0.7" or
// "10.0.0.7:9080"), which is mapped to the service with that VIP, or else
// to the service of the workload or endpoint at that address.
func serviceOf(snap *model.Snapshot, n ui.Node) string {
	host := n.Service
	if host == "" {
		return ""
	}
	if snap.Service(host) != nil {
		return host
	}
	ip := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		ip = h
	}
	if net.ParseIP(ip) == nil {
		// A Host header "name.namespace" (with or without a port), as the
		// proxy reports an HTTP request that left through the passthrough.
		if parts := strings.Split(ip, "."); len(parts) == 2 {
			if svc := snap.Service(ip + ".svc.cluster.local"); svc != nil {
				return svc.Hostname
			}
		} else if snap.Service(ip) != nil {
			return ip
		}
		return ""
	}
	for _, svc := range snap.Services {
		if svc.Entry != nil && slices.Contains(svc.Entry.Spec.GetAddresses(), ip) {
			return svc.Hostname
		}
	}
	if we := snap.WorkloadAt(ip); we != nil {
		if svcs := snap.ServicesOf(we); len(svcs) > 0 {
			return svcs[0].Hostname
		}
	}
	for _, svc := range snap.Services { // an inline ServiceEntry endpoint
		for _, ep := range svc.Endpoints {
			if ep.Address == ip {
				return svc.Hostname
			}
		}
	}
	return ""
}

// Learned returns the hosts learned for each namespace, sorted.
func (l *Learner) Learned() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]string, len(l.seen))
	for ns, hosts := range l.seen {
		for h := range hosts {
			out[ns] = append(out[ns], h)
		}
		slices.Sort(out[ns])
	}
	return out
}

// Sidecars returns the synthetic Sidecar for every opted-in namespace
// that has proxies or learned hosts in snap, keyed by namespace. It
// returns nil when the mesh's outbound policy is REGISTRY_ONLY: a first
// call to a service not yet learned would then fail, so nothing is
// narrowed. translate applies a synthetic Sidecar only to proxies that no
// user Sidecar applies to.
func (l *Learner) Sidecars(snap *model.Snapshot) map[string]*model.Sidecar {
	// REGISTRY_ONLY is the enum's zero value, but an unset policy is ALLOW_ANY.
	if p := snap.Config.Mesh.GetOutboundTrafficPolicy(); p != nil && p.GetMode() == meshv1alpha1.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY {
		return nil
	}
	learned := l.Learned()
	namespaces := map[string]bool{}
	for ns := range l.ns {
		if ns != "*" {
			namespaces[ns] = true
		}
	}
	if l.all {
		for _, svc := range snap.Services {
			namespaces[svc.Namespace] = true
		}
		for _, we := range snap.Config.WorkloadEntries {
			namespaces[we.Namespace] = true
		}
		for _, p := range snap.Config.Pods {
			namespaces[p.Namespace] = true
		}
	}
	for ns, labels := range snap.Config.Namespaces {
		if labels[Label] == "enabled" {
			namespaces[ns] = true
		}
	}
	for ns := range learned {
		namespaces[ns] = true
	}
	for ns := range namespaces {
		if !l.EnabledIn(snap, ns) {
			delete(namespaces, ns) // labelled out of "*", or no longer labelled in
		}
	}
	out := make(map[string]*model.Sidecar, len(namespaces))
	for ns := range namespaces {
		out[ns] = Sidecar(ns, snap.Config.Mesh.GetRootNamespace(), learned[ns], snap)
	}
	return out
}

// Sidecar is the synthetic Sidecar of namespace ns: its own services, the
// root namespace's, and the learned hosts (in their service's namespace).
// It is also what `trellis`'s debug endpoint prints for freezing.
func Sidecar(ns, root string, hosts []string, snap *model.Snapshot) *model.Sidecar {
	egress := []string{"./*"}
	if root != "" && root != ns {
		egress = append(egress, root+"/*")
	}
	for _, h := range hosts {
		svcNS := "*"
		if svc := snap.Service(h); svc != nil {
			svcNS = svc.Namespace
		}
		if svcNS == ns || svcNS == root {
			continue // already imported
		}
		egress = append(egress, svcNS+"/"+h)
	}
	return &model.Sidecar{
		Meta: model.Meta{Kind: "Sidecar", Namespace: ns, Name: "trellis-auto-scope"},
		Spec: &networking.Sidecar{Egress: []*networking.IstioEgressListener{{Hosts: egress}}},
	}
}

// YAML renders sc as a Sidecar resource a user can apply to freeze it.
func YAML(sc *model.Sidecar) string {
	var b strings.Builder
	b.WriteString("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\n  namespace: ")
	b.WriteString(sc.Namespace)
	b.WriteString("\nspec:\n  egress:\n  - hosts:\n")
	for _, eg := range sc.Spec.GetEgress() {
		for _, h := range eg.GetHosts() {
			b.WriteString("    - \"" + h + "\"\n")
		}
	}
	return b.String()
}

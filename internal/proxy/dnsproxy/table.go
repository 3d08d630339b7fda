package dnsproxy

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
)

// DefaultDomainSuffix is the cluster domain of Kubernetes service names.
const DefaultDomainSuffix = "cluster.local"

// Host is one mesh name's answer: its canonical name and addresses.
type Host struct {
	Name string // canonical FQDN, lower case, with the trailing dot
	V4   []netip.Addr
	V6   []netip.Addr
}

// Table maps every name a mesh service answers to (its FQDN, the short forms Kubernetes search
// paths allow, the route configuration's domains) to its Host. A Table is immutable once built;
// the server swaps whole tables on each xDS update.
type Table struct {
	hosts map[string]*Host // keys: lower case, no trailing dot
	// search are the proxy's search suffixes (".default.svc.cluster.local.", ".svc.cluster.local.",
	// ".cluster.local."), as a pod's resolv.conf lists them.
	search []string
	// domain is ".cluster.local": an unknown name that is a search expansion of a name already
	// under it ("x.ns.svc.cluster.local.ns.svc.cluster.local.") gets NXDOMAIN at once.
	domain string
}

// Lookup returns the Host a query name answers to, with cname set when the name was the search
// expansion of a known name ("reviews.default.svc.cluster.local.default.svc.cluster.local."), and
// nxdomain when the name cannot exist (a search expansion of a name already under the cluster domain).
// name must be fully qualified (trailing dot). It allocates only when name has upper case letters.
func (t *Table) Lookup(name string) (h *Host, cname bool, nxdomain bool) {
	if t == nil {
		return nil, false, false
	}
	name = strings.ToLower(name) // returns name itself when already lower case
	if h := t.hosts[strings.TrimSuffix(name, ".")]; h != nil {
		return h, false, false
	}
	for _, s := range t.search {
		base, ok := strings.CutSuffix(name, s)
		if !ok || base == "" {
			continue
		}
		if h := t.hosts[base]; h != nil {
			return h, true, false
		}
		// A qualified cluster name expanded again by the search path: no DNS server has it, so
		// the upstream is spared the search storm. Other unknown names, cluster ones included
		// (a Service this proxy's config leaves out), go upstream.
		if strings.HasSuffix(base, t.domain) {
			return nil, false, true
		}
	}
	return nil, false, false
}

// Len is the number of names (aliases included) the table answers.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.hosts)
}

// Resources are the current xDS resources of each type, as the proxy last accepted them.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
}

// Build derives the name table from standard xDS: virtual hosts name a service's FQDN (their name
// "<fqdn>:<port>", their domains the short forms and VIPs), outbound clusters
// "outbound|<port>|<subset>|<fqdn>" name services routed over TCP, per-service listeners
// "<vip>_<port>" whose TCP proxy goes to such a cluster give the VIP. A service without a VIP
// (local mode's WorkloadEntries) answers with its endpoints' addresses from EDS instead.
// namespace is the proxy's own, for the short names; domainSuffix defaults to cluster.local.
func Build(res Resources, namespace, domainSuffix string) *Table {
	if domainSuffix == "" {
		domainSuffix = DefaultDomainSuffix
	}
	domainSuffix = strings.ToLower(strings.Trim(domainSuffix, "."))
	b := builder{
		vips:     map[string][]netip.Addr{},
		aliases:  map[string][]string{},
		clusters: map[string][]string{},
	}
	for _, c := range res.Clusters {
		if host, ok := outboundHost(c.GetName()); ok {
			b.addHost(host)
			b.clusters[host] = append(b.clusters[host], c.GetName())
		}
	}
	for _, rc := range res.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			b.virtualHost(vh)
		}
	}
	for _, l := range res.Listeners {
		b.listener(l)
	}

	// Endpoint addresses per cluster, for services without a VIP.
	eds := map[string]*endpointv3.ClusterLoadAssignment{}
	for _, cla := range res.Endpoints {
		eds[cla.GetClusterName()] = cla
	}
	clusterAddrs := map[string][]netip.Addr{}
	for _, c := range res.Clusters {
		cla := c.GetLoadAssignment()
		if c.GetType() == clusterv3.Cluster_EDS {
			name := c.GetEdsClusterConfig().GetServiceName()
			if name == "" {
				name = c.GetName()
			}
			cla = eds[name]
		}
		clusterAddrs[c.GetName()] = endpointAddrs(cla)
	}

	t := &Table{
		hosts:  map[string]*Host{},
		domain: "." + domainSuffix,
	}
	if namespace != "" {
		t.search = append(t.search, "."+strings.ToLower(namespace)+".svc."+domainSuffix+".")
	}
	t.search = append(t.search, ".svc."+domainSuffix+".", "."+domainSuffix+".")
	for _, fqdn := range b.order {
		addrs := b.vips[fqdn]
		if len(addrs) == 0 {
			// No VIP: the endpoints of the default-subset cluster(s), else of any subset.
			for _, name := range b.clusters[fqdn] {
				if strings.Contains(name, "||") {
					addrs = append(addrs, clusterAddrs[name]...)
				}
			}
			if len(addrs) == 0 {
				for _, name := range b.clusters[fqdn] {
					addrs = append(addrs, clusterAddrs[name]...)
				}
			}
		}
		h := &Host{Name: fqdn + "."}
		for _, a := range sortedUnique(addrs) {
			if a.Is4() {
				h.V4 = append(h.V4, a)
			} else {
				h.V6 = append(h.V6, a)
			}
		}
		if len(h.V4)+len(h.V6) == 0 {
			continue // nothing to answer with: the upstream resolver may know better
		}
		names := append([]string{fqdn}, b.aliases[fqdn]...)
		names = append(names, kubeAliases(fqdn, namespace, domainSuffix)...)
		for _, n := range names {
			if _, taken := t.hosts[n]; !taken { // first service to claim a name keeps it
				t.hosts[n] = h
			}
		}
	}
	return t
}

type builder struct {
	order    []string                // FQDNs in the order first seen, for deterministic claims
	vips     map[string][]netip.Addr // FQDN → VIPs
	aliases  map[string][]string     // FQDN → other names from virtual host domains
	clusters map[string][]string     // FQDN → its outbound cluster names
}

func (b *builder) addHost(host string) {
	if _, ok := b.aliases[host]; !ok {
		b.aliases[host] = nil
		b.order = append(b.order, host)
	}
}

// virtualHost reads one virtual host: name "<fqdn>:<port>" (the translator's and Istio's naming);
// domains hold the same FQDN, short names and possibly VIPs, with or without the port.
func (b *builder) virtualHost(vh *routev3.VirtualHost) {
	fqdn := ""
	if h, _, ok := cutPort(vh.GetName()); ok && isHostname(h) {
		fqdn = strings.ToLower(h)
	}
	if fqdn == "" {
		// No conventional name: the longest plain host name among the domains.
		for _, d := range vh.GetDomains() {
			if h := stripPort(d); isHostname(h) && len(h) > len(fqdn) {
				fqdn = strings.ToLower(h)
			}
		}
	}
	if fqdn == "" || !strings.Contains(fqdn, ".") {
		return
	}
	b.addHost(fqdn)
	for _, d := range vh.GetDomains() {
		h := stripPort(d)
		if a, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
			b.vips[fqdn] = append(b.vips[fqdn], a.Unmap())
			continue
		}
		if h = strings.ToLower(h); isHostname(h) && h != fqdn && !slices.Contains(b.aliases[fqdn], h) {
			b.aliases[fqdn] = append(b.aliases[fqdn], h)
		}
	}
}

// listener reads a per-service listener "<vip>_<port>" bound to the VIP: its TCP proxy's cluster
// names the service.
func (b *builder) listener(l *listenerv3.Listener) {
	ip, _, ok := strings.Cut(l.GetName(), "_")
	if !ok {
		return
	}
	vip, err := netip.ParseAddr(ip)
	if err != nil || vip.IsUnspecified() {
		return
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			tc := &tcpv3.TcpProxy{}
			if f.GetTypedConfig() == nil || f.GetTypedConfig().UnmarshalTo(tc) != nil {
				continue
			}
			if host, ok := outboundHost(tc.GetCluster()); ok {
				b.addHost(host)
				if !slices.Contains(b.vips[host], vip.Unmap()) {
					b.vips[host] = append(b.vips[host], vip.Unmap())
				}
			}
		}
	}
}

// outboundHost is the FQDN of an Istio outbound cluster name "outbound|9080|v1|reviews.default.svc.cluster.local".
func outboundHost(cluster string) (string, bool) {
	rest, ok := strings.CutPrefix(cluster, "outbound|")
	if !ok {
		return "", false
	}
	parts := strings.SplitN(rest, "|", 3)
	if len(parts) != 3 || !isHostname(parts[2]) || !strings.Contains(parts[2], ".") {
		return "", false
	}
	return strings.ToLower(parts[2]), true
}

// kubeAliases are the names Kubernetes search paths resolve for a service FQDN
// "name.ns.svc.<suffix>": "name.ns" and "name.ns.svc" everywhere, "name" in its own namespace.
func kubeAliases(fqdn, namespace, suffix string) []string {
	rest, ok := strings.CutSuffix(fqdn, ".svc."+suffix)
	if !ok {
		return nil
	}
	name, ns, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(ns, ".") {
		return nil
	}
	out := []string{rest, rest + ".svc"}
	if strings.EqualFold(ns, namespace) {
		out = append(out, name)
	}
	return out
}

func endpointAddrs(cla *endpointv3.ClusterLoadAssignment) []netip.Addr {
	var out []netip.Addr
	for _, le := range cla.GetEndpoints() {
		for _, lb := range le.GetLbEndpoints() {
			add := func(sa *corev3.SocketAddress) {
				if a, err := netip.ParseAddr(sa.GetAddress()); err == nil && !a.IsUnspecified() {
					out = append(out, a.Unmap())
				}
			}
			add(lb.GetEndpoint().GetAddress().GetSocketAddress())
			for _, extra := range lb.GetEndpoint().GetAdditionalAddresses() {
				add(extra.GetAddress().GetSocketAddress())
			}
		}
	}
	return out
}

func sortedUnique(addrs []netip.Addr) []netip.Addr {
	addrs = slices.Clone(addrs)
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(addrs)
}

// cutPort splits "host:port" (port numeric); IPv6 literals come bracketed.
func cutPort(s string) (host, port string, ok bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, "", false
	}
	if _, err := strconv.ParseUint(s[i+1:], 10, 16); err != nil {
		return s, "", false
	}
	if strings.Count(s[:i], ":") > 0 && !strings.HasSuffix(s[:i], "]") {
		return s, "", false // a bare IPv6 literal, no port
	}
	return s[:i], s[i+1:], true
}

func stripPort(s string) string {
	h, _, _ := cutPort(s)
	return h
}

// isHostname reports a plain DNS name: letters, digits, '-', '.', '_'; no wildcard, no IP.
func isHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}

// The xDS type URLs the table is built from.
const (
	listenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	routeType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	clusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	endpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// set replaces one type's resources with the complete set an xDS update carried. It builds new
// slices: tables already built keep theirs.
func (r *Resources) set(typeURL string, msgs []proto.Message) bool {
	switch typeURL {
	case listenerType:
		r.Listeners = only[*listenerv3.Listener](msgs)
	case routeType:
		r.Routes = only[*routev3.RouteConfiguration](msgs)
	case clusterType:
		r.Clusters = only[*clusterv3.Cluster](msgs)
	case endpointType:
		r.Endpoints = only[*endpointv3.ClusterLoadAssignment](msgs)
	default:
		return false
	}
	return true
}

func only[T proto.Message](msgs []proto.Message) []T {
	out := make([]T, 0, len(msgs))
	for _, m := range msgs {
		if t, ok := m.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

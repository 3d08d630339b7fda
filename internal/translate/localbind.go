package translate

import (
	"net/netip"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
)

// bindLocalSources makes a local-mode proxy connect to other local workloads from its own
// loopback address (upstream_bind_config), so the server side sees which workload called, as it
// would see a pod IP: ipBlocks policies and source addresses in logs then mean something. Only EDS
// clusters whose every endpoint is on loopback are bound; a loopback source cannot reach anything
// else.
func (e *env) bindLocalSources(res *Resources) {
	if !e.interceptNone() {
		return
	}
	src, err := netip.ParseAddr(e.proxy.IP)
	if err != nil || !src.IsLoopback() {
		return
	}
	loopbackOnly := map[string]bool{}
	for _, cla := range res.Endpoints {
		ok := len(cla.GetEndpoints()) > 0
		for _, loc := range cla.GetEndpoints() {
			for _, ep := range loc.GetLbEndpoints() {
				a, err := netip.ParseAddr(ep.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
				ok = ok && err == nil && a.IsLoopback()
			}
		}
		loopbackOnly[cla.GetClusterName()] = ok
	}
	for i, c := range res.Clusters {
		if c.GetType() != clusterv3.Cluster_EDS || !loopbackOnly[c.GetName()] {
			continue
		}
		// Outbound clusters are shared with other proxies (serviceClusters).
		c = proto.CloneOf(c)
		res.Clusters[i] = c
		c.UpstreamBindConfig = &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{
			Address:       src.String(),
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
		}}
	}
}

package translate

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	statspb "istio.io/api/envoy/extensions/stats"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// VirtualService tcp and tls routes become filter chains, as istiod builds them
// (buildSidecarOutboundTLSFilterChainOpts, buildSidecarOutboundTCPFilterChainOpts,
// buildOutboundNetworkFilters):
//
//   - A match's static predicates (sourceLabels, sourceNamespace, gateways, port) are decided here,
//     for this proxy and listener port; its runtime ones become the chain's filter_chain_match:
//     destinationSubnets → prefix_ranges, sniHosts → server_names (with the tls_inspector).
//   - A route with one destination is a tcp_proxy to its cluster; several are weighted_clusters,
//     destinations of weight 0 left out.
//   - tls routes apply to TLS and HTTPS ports only. Such a port with no tls match keeps a default
//     chain to its own cluster, matched by the service's host name as SNI when the listener has no
//     VIP of its own (several external HTTPS hosts share 0.0.0.0_443 this way).
//   - tcp routes: the first match without destinationSubnets (or a route without matches) ends
//     the list; otherwise the default chain to the service's cluster comes last.
//
// Each chain runs istio.stats (TCP metrics) before its tcp_proxy, as Istio's chains do.

const tlsInspectorFilterName = "envoy.filters.listener.tls_inspector"

// l4Chain is one filter chain to build: its runtime match and where it sends connections.
type l4Chain struct {
	sniHosts []string
	subnets  []string
	routes   []*networking.RouteDestination
	vsNS     string // the VirtualService's namespace, resolving short destination hosts
	// cluster, when routes is empty: the service's own cluster.
	cluster string
}

// isTLSProtocol reports the ports whose connections carry SNI: TLS and HTTPS.
func isTLSProtocol(p model.Protocol) bool { return p == "TLS" || p == "HTTPS" }

// l4VirtualServices are the VirtualServices with tcp or tls routes that name host and apply to
// gateway ("mesh" for sidecars, "namespace/name" for a Gateway): exact hosts first, then
// wildcards, each in namespace/name order.
func l4VirtualServices(all []*model.VirtualService, host string, gateway func(*model.VirtualService) bool) []*model.VirtualService {
	var exact, wild []*model.VirtualService
	for _, vs := range all {
		if len(vs.Spec.GetTcp()) == 0 && len(vs.Spec.GetTls()) == 0 || !gateway(vs) {
			continue
		}
		for _, h := range vs.Spec.GetHosts() {
			h = model.ResolveHost(h, vs.Namespace)
			if h == host {
				exact = append(exact, vs)
				break
			}
			if strings.HasPrefix(h, "*") && hostMatches(h, host) {
				wild = append(wild, vs)
				break
			}
		}
	}
	return append(exact, wild...)
}

// boundToMesh reports whether vs applies to sidecars: no gateways, or "mesh" among them.
func boundToMesh(vs *model.VirtualService) bool {
	gws := vs.Spec.GetGateways()
	return len(gws) == 0 || slices.Contains(gws, meshGateway)
}

// l4MatchApplies evaluates a match's static predicates for this proxy. gateways are the
// gateways the proxy serves for, as "namespace/name" or "mesh".
func (e *env) l4MatchApplies(vs *model.VirtualService, matchGateways []string, sourceLabels map[string]string,
	sourceNS string, port, listenPort uint32, gateways []string) bool {
	if len(matchGateways) > 0 {
		ok := false
		for _, g := range matchGateways {
			if g != meshGateway {
				g = qualifyGateway(g, vs.Namespace)
			}
			ok = ok || slices.Contains(gateways, g)
		}
		if !ok {
			return false
		}
	}
	for k, v := range sourceLabels {
		if e.labels[k] != v {
			return false
		}
	}
	if sourceNS != "" && sourceNS != e.proxy.Namespace {
		return false
	}
	return port == 0 || port == listenPort
}

// l4Chains lists the chains for one service port on one listener, in order. vip is the address
// the listener is bound to ("" for the wildcard).
func (e *env) l4Chains(svc *model.Service, port *model.Port, vip string, vss []*model.VirtualService, gateways []string) []l4Chain {
	own := OutboundClusterName(port.Number, "", svc.Hostname)
	var out []l4Chain
	if isTLSProtocol(port.Protocol) {
		handled := map[string]bool{}
		for _, vs := range vss {
			for _, r := range vs.Spec.GetTls() {
				for _, m := range r.GetMatch() {
					if !e.l4MatchApplies(vs, m.GetGateways(), m.GetSourceLabels(), m.GetSourceNamespace(), m.GetPort(), port.Number, gateways) {
						continue
					}
					key := strings.Join(m.GetSniHosts(), ",") + "|" + strings.Join(m.GetDestinationSubnets(), ",")
					if handled[key] {
						continue // an earlier match with the same runtime predicates wins
					}
					handled[key] = true
					out = append(out, l4Chain{sniHosts: m.GetSniHosts(), subnets: m.GetDestinationSubnets(), routes: r.GetRoute(), vsNS: vs.Namespace})
				}
			}
		}
		if len(out) == 0 {
			c := l4Chain{cluster: own}
			if vip == "" {
				c.sniHosts = []string{svc.Hostname}
			}
			out = append(out, c)
		}
	}
	for _, vs := range vss {
		for _, r := range vs.Spec.GetTcp() {
			if len(r.GetMatch()) == 0 {
				return append(out, l4Chain{routes: r.GetRoute(), vsNS: vs.Namespace})
			}
			var subnets []string
			for _, m := range r.GetMatch() {
				if !e.l4MatchApplies(vs, m.GetGateways(), m.GetSourceLabels(), m.GetSourceNamespace(), m.GetPort(), port.Number, gateways) {
					continue
				}
				if len(m.GetDestinationSubnets()) == 0 {
					return append(out, l4Chain{routes: r.GetRoute(), vsNS: vs.Namespace})
				}
				subnets = append(subnets, m.GetDestinationSubnets()...)
			}
			if len(subnets) > 0 {
				out = append(out, l4Chain{subnets: subnets, routes: r.GetRoute(), vsNS: vs.Namespace})
			}
		}
	}
	if isTLSProtocol(port.Protocol) {
		return out // the TLS default chain above already covers the port
	}
	return append(out, l4Chain{cluster: own})
}

// l4FilterChain builds c for a listener on listenPort. istio.stats reports as the listener's
// direction (outbound, on sidecars and gateways alike, as the HTTP chains do).
func (e *env) l4FilterChain(c l4Chain, listenPort uint32) (*listenerv3.FilterChain, error) {
	tp := &tcpproxyv3.TcpProxy{}
	switch {
	case len(c.routes) == 1:
		cl, err := e.destinationCluster(c.routes[0].GetDestination(), c.vsNS, listenPort)
		if err != nil {
			return nil, err
		}
		tp.StatPrefix = cl
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: cl}
	case len(c.routes) > 1:
		wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
		for i, r := range c.routes {
			if r.GetWeight() == 0 {
				continue
			}
			cl, err := e.destinationCluster(r.GetDestination(), c.vsNS, listenPort)
			if err != nil {
				return nil, fmt.Errorf("route[%d]: %w", i, err)
			}
			wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: cl, Weight: uint32(r.GetWeight())})
		}
		if len(wc.Clusters) == 0 {
			return nil, fmt.Errorf("route: every destination has weight 0")
		}
		tp.StatPrefix = model.ResolveHost(c.routes[0].GetDestination().GetHost(), c.vsNS) + "." + strconv.FormatUint(uint64(listenPort), 10)
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
	default:
		tp.StatPrefix = c.cluster
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: c.cluster}
	}
	tpAny, err := anypb.New(tp)
	if err != nil {
		return nil, err
	}
	stats, err := typedStruct(&statspb.PluginConfig{DisableHostHeaderFallback: true})
	if err != nil {
		return nil, fmt.Errorf("%s filter config: %w", istioStatsFilterName, err)
	}
	fc := &listenerv3.FilterChain{Filters: []*listenerv3.Filter{
		{Name: istioStatsFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: stats}},
		{Name: tcpProxyFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tpAny}},
	}}
	if len(c.sniHosts) > 0 || len(c.subnets) > 0 {
		m := &listenerv3.FilterChainMatch{ServerNames: c.sniHosts}
		for _, s := range c.subnets {
			p, err := parsePrefixOrAddr(s)
			if err != nil {
				return nil, fmt.Errorf("destinationSubnets: %q: %w", s, err)
			}
			m.PrefixRanges = append(m.PrefixRanges, &corev3.CidrRange{
				AddressPrefix: p.Masked().Addr().String(),
				PrefixLen:     wrapperspb.UInt32(uint32(p.Bits())),
			})
		}
		fc.FilterChainMatch = m
	}
	return fc, nil
}

// chainKey identifies a chain's match: two chains with equal keys are the same to Envoy, which
// rejects the listener, so the later is dropped (as Istio keeps the first).
func chainKey(fc *listenerv3.FilterChain) string {
	m := fc.GetFilterChainMatch()
	var b strings.Builder
	for _, n := range m.GetServerNames() {
		b.WriteString(strings.ToLower(n) + ",")
	}
	b.WriteString("|")
	for _, r := range m.GetPrefixRanges() {
		b.WriteString(r.GetAddressPrefix() + "/" + strconv.FormatUint(uint64(r.GetPrefixLen().GetValue()), 10) + ",")
	}
	return b.String()
}

// l4Listener collects the chains of one TCP listener, possibly from several services.
type l4Listener struct {
	l    *listenerv3.Listener
	keys map[string]bool
	tls  bool
}

func (l *l4Listener) add(chains []*listenerv3.FilterChain) {
	for _, fc := range chains {
		k := chainKey(fc)
		if l.keys[k] {
			continue
		}
		l.keys[k] = true
		l.l.FilterChains = append(l.l.FilterChains, fc)
	}
}

// finish adds the tls_inspector when some chain matches on SNI.
func (l *l4Listener) finish() error {
	if !l.tls {
		return nil
	}
	cfg, err := anypb.New(&tlsinspectorv3.TlsInspector{})
	if err != nil {
		return err
	}
	l.l.ListenerFilters = append(l.l.ListenerFilters, &listenerv3.ListenerFilter{
		Name:       tlsInspectorFilterName,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: cfg},
	})
	return nil
}

// outboundTCPListeners are the REDIRECT-mode listeners for non-HTTP service ports: <vip>_<port>
// for each service address, 0.0.0.0_<port> for services without one, shared between those.
// taken holds listener names already used by HTTP.
func (e *env) outboundTCPListeners(taken map[string]bool) ([]*listenerv3.Listener, error) {
	byName := map[string]*l4Listener{}
	var order []string
	for _, svc := range e.snap.Services {
		vss := l4VirtualServices(e.snap.Config.VirtualServices, svc.Hostname, boundToMesh)
		for _, port := range sortedPorts(svc.Ports) {
			if port.Protocol.IsHTTP() {
				continue
			}
			for _, ip := range serviceAddresses(svc) {
				lname := listenerName(ip, port.Number)
				if taken[lname] {
					continue
				}
				vip := ip
				if ip == "0.0.0.0" {
					vip = ""
				}
				var chains []*listenerv3.FilterChain
				for _, c := range e.l4Chains(svc, port, vip, vss, []string{meshGateway}) {
					fc, err := e.l4FilterChain(c, port.Number)
					if err != nil {
						return nil, fmt.Errorf("listener %s: %s: %w", lname, svc.Hostname, err)
					}
					chains = append(chains, fc)
				}
				ll := byName[lname]
				if ll == nil {
					if vip != "" {
						taken[lname] = true // the first service on an address:port has it, as in Istio
					}
					ll = &l4Listener{keys: map[string]bool{}, l: &listenerv3.Listener{
						Name:             lname,
						Address:          socketAddress(ip, port.Number),
						BindToPort:       wrapperspb.Bool(false),
						TrafficDirection: corev3.TrafficDirection_OUTBOUND,
					}}
					byName[lname] = ll
					order = append(order, lname)
				}
				ll.tls = ll.tls || isTLSProtocol(port.Protocol)
				ll.add(chains)
			}
		}
	}
	out := make([]*listenerv3.Listener, 0, len(order))
	for _, n := range order {
		if err := byName[n].finish(); err != nil {
			return nil, fmt.Errorf("listener %s: %w", n, err)
		}
		out = append(out, byName[n].l)
	}
	return out, nil
}

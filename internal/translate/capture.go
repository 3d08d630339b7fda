package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// REDIRECT mode (iptables capture, Istio's default) lays listeners out as Istio does:
//
//   - virtualOutbound, 0.0.0.0:15001 with use_original_dst, receives what the app sends out and hands
//     each connection to the listener without a socket on its original destination: 0.0.0.0_<port>
//     (HTTP: an HCM on RDS "<port>") or <vip>_<port> (TCP: tcp_proxy to the service). What none
//     takes falls to its default chain: PassthroughCluster (ORIGINAL_DST) under ALLOW_ANY,
//     BlackHoleCluster (no endpoints: the connection is closed) under REGISTRY_ONLY.
//   - virtualInbound, 0.0.0.0:15006 with the original_dst listener filter, receives what arrives for
//     the app: a chain per declared port (mtls.go's modes), and for every other port Istio's
//     passthrough chains to InboundPassthroughCluster (ORIGINAL_DST from 127.0.0.6), which obey
//     the workload's PeerAuthentication mode too.

// Istio's names for the capture clusters and chains.
const (
	PassthroughClusterName        = "PassthroughCluster"
	BlackHoleClusterName          = "BlackHoleCluster"
	InboundPassthroughClusterName = "InboundPassthroughCluster"

	// inboundPassthroughSource is where inbound passthrough connects from, so the app sees a
	// local peer and iptables (intercept.InboundPassthroughSource) lets it through uncaptured.
	inboundPassthroughSource = "127.0.0.6"

	tcpProxyFilterName    = "envoy.filters.network.tcp_proxy"
	originalDstFilterName = "envoy.filters.listener.original_dst"
)

// allowAny reports the outbound traffic policy: the Sidecar's, else MeshConfig's, else Istio's
// default ALLOW_ANY.
func (e *env) allowAny() bool {
	if sc := e.snap.SidecarFor(e.proxy.Namespace, e.labels); sc != nil && sc.Spec.GetOutboundTrafficPolicy() != nil {
		return sc.Spec.GetOutboundTrafficPolicy().GetMode() != networking.OutboundTrafficPolicy_REGISTRY_ONLY
	}
	p := e.snap.Config.Mesh.GetOutboundTrafficPolicy()
	return p == nil || p.GetMode() != meshv1alpha1.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY
}

// captureOutbound adds virtualOutbound, the per-port outbound listeners and their routes.
func (e *env) captureOutbound(res *Resources) error {
	unknown := PassthroughClusterName
	if !e.allowAny() {
		unknown = BlackHoleClusterName
	}
	def, err := tcpProxyChain("PassthroughFilterChain", unknown, unknown)
	if err != nil {
		return fmt.Errorf("listener %s: %w", OutboundListenerName, err)
	}
	// A connection sent to 15001 itself would loop back in forever.
	loop, err := tcpProxyChain("virtualOutbound-blackhole", BlackHoleClusterName, BlackHoleClusterName)
	if err != nil {
		return fmt.Errorf("listener %s: %w", OutboundListenerName, err)
	}
	loop.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(outboundPort)}
	res.Listeners = append(res.Listeners, &listenerv3.Listener{
		Name:               OutboundListenerName,
		Address:            socketAddress("0.0.0.0", outboundPort),
		UseOriginalDst:     wrapperspb.Bool(true),
		FilterChains:       []*listenerv3.FilterChain{loop},
		DefaultFilterChain: def,
		TrafficDirection:   corev3.TrafficDirection_OUTBOUND,
	})

	taken := map[string]bool{}
	for _, port := range e.outboundHTTPPorts() {
		name := strconv.FormatUint(uint64(port), 10)
		rc, err := e.outboundRouteConfig(name, port)
		if err != nil {
			return err
		}
		lname := listenerName("0.0.0.0", port)
		l, err := httpListener(lname, "0.0.0.0", port, corev3.TrafficDirection_OUTBOUND, hcmOptions{
			statPrefix: "outbound_" + lname,
			rds:        name,
		})
		if err != nil {
			return err
		}
		l.BindToPort = wrapperspb.Bool(false)
		taken[lname] = true
		res.Listeners = append(res.Listeners, l)
		res.Routes = append(res.Routes, rc)
	}
	tcp, err := e.outboundTCPListeners(taken) // tcproute.go
	if err != nil {
		return err
	}
	res.Listeners = append(res.Listeners, tcp...)
	res.Clusters = append(res.Clusters, e.captureClusters()...)
	return nil
}

// outboundHTTPPorts are the HTTP service ports, each once, in order.
func (e *env) outboundHTTPPorts() []uint32 {
	var out []uint32
	for _, svc := range e.snap.Services {
		for _, p := range svc.Ports {
			if p.Protocol.IsHTTP() && !slices.Contains(out, p.Number) {
				out = append(out, p.Number)
			}
		}
	}
	slices.Sort(out)
	return out
}

// serviceAddresses are the ServiceEntry's addresses (VIPs), or the wildcard when it has none.
func serviceAddresses(svc *model.Service) []string {
	var out []string
	for _, a := range svc.Entry.Spec.GetAddresses() {
		if ip, ok := plainIP(a); ok {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		out = []string{"0.0.0.0"}
	}
	return out
}

// addressDomains are the authorities naming svc by one of its addresses, as Istio adds them to
// per-port routes: captured apps often call an IP.
func addressDomains(svc *model.Service, port uint32) []string {
	var out []string
	for _, a := range svc.Entry.Spec.GetAddresses() {
		if ip, ok := plainIP(a); ok {
			out = append(out, hostPort(ip, port))
			if port == 80 {
				out = append(out, ip)
			}
		}
	}
	return out
}

// plainIP accepts a single-address ServiceEntry address (a /32 counts); CIDR ranges name no
// one host.
func plainIP(a string) (string, bool) {
	if p, err := parsePrefixOrAddr(a); err == nil && p.IsSingleIP() && p.Addr().Is4() {
		return p.Addr().String(), true
	}
	return "", false
}

// unknownHostVirtualHost is Istio's last virtual host of a per-port route: allow_any sends
// requests for hosts no service has to where they were going, block_all answers 502.
func (e *env) unknownHostVirtualHost() *routev3.VirtualHost {
	if !e.allowAny() {
		return &routev3.VirtualHost{
			Name:    "block_all",
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:   "block_all",
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 502}},
			}},
		}
	}
	r := defaultRoute(PassthroughClusterName)
	r.Name = "allow_any"
	return &routev3.VirtualHost{Name: "allow_any", Domains: []string{"*"}, Routes: []*routev3.Route{r}}
}

// captureClusters are Istio's PassthroughCluster, BlackHoleCluster and InboundPassthroughCluster.
func (e *env) captureClusters() []*clusterv3.Cluster {
	origDst := func(name string) *clusterv3.Cluster {
		return &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
			LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
			ConnectTimeout:       e.connectTimeout(nil),
		}
	}
	inbound := origDst(InboundPassthroughClusterName)
	inbound.UpstreamBindConfig = &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{
		Address:       inboundPassthroughSource,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
	}}
	return []*clusterv3.Cluster{
		origDst(PassthroughClusterName),
		{
			Name:                 BlackHoleClusterName,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			ConnectTimeout:       e.connectTimeout(nil),
		},
		inbound,
	}
}

// inboundCaptureChains are virtualInbound's chains for traffic no declared port takes: a black
// hole for 15006 itself (a loop), and the passthrough to the original destination, secured by the
// workload's PeerAuthentication mode (STRICT: mTLS only; PERMISSIVE: both; DISABLE: plaintext).
func (e *env) inboundCaptureChains() (chains []*listenerv3.FilterChain, inspect bool, err error) {
	loop, err := tcpProxyChain("virtualInbound-blackhole", BlackHoleClusterName, BlackHoleClusterName)
	if err != nil {
		return nil, false, err
	}
	loop.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(inboundPort)}
	pass, err := tcpProxyChain("virtualInbound-passthrough", InboundPassthroughClusterName, InboundPassthroughClusterName)
	if err != nil {
		return nil, false, err
	}
	secured, inspect, err := e.secureInboundChains(pass, 0) // port 0: the workload-wide mode
	if err != nil {
		return nil, false, err
	}
	return append([]*listenerv3.FilterChain{loop}, secured...), inspect, nil
}

// addOriginalDstFilter puts Envoy's original_dst listener filter first on l.
func addOriginalDstFilter(l *listenerv3.Listener) error {
	cfg, err := anypb.New(&originaldstv3.OriginalDst{})
	if err != nil {
		return fmt.Errorf("%s: %w", originalDstFilterName, err)
	}
	l.ListenerFilters = append([]*listenerv3.ListenerFilter{{
		Name:       originalDstFilterName,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: cfg},
	}}, l.ListenerFilters...)
	return nil
}

// tcpProxyChain is a filter chain proxying whole connections to cluster.
func tcpProxyChain(name, statPrefix, cluster string) (*listenerv3.FilterChain, error) {
	cfg, err := anypb.New(&tcpproxyv3.TcpProxy{
		StatPrefix:       statPrefix,
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
	})
	if err != nil {
		return nil, fmt.Errorf("tcp proxy %s: %w", cluster, err)
	}
	return &listenerv3.FilterChain{Name: name, Filters: []*listenerv3.Filter{{
		Name:       tcpProxyFilterName,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg},
	}}}, nil
}

// parsePrefixOrAddr reads "10.0.0.1" or "10.0.0.0/24".
func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.ParsePrefix(s)
}

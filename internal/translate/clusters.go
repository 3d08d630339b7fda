package translate

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// defaultConnectTimeout is Istio's MeshConfig.connectTimeout default.
const defaultConnectTimeout = 10 * time.Second

// upstreamHTTPOptionsName is the key Envoy looks up upstream HTTP protocol
// options under in typed_extension_protocol_options.
const upstreamHTTPOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// OutboundClusterName is Istio's name for the cluster of one service port,
// optionally narrowed to a DestinationRule subset.
func OutboundClusterName(port uint32, subset, host string) string {
	return "outbound|" + strconv.FormatUint(uint64(port), 10) + "|" + subset + "|" + host
}

// InboundClusterName is Istio's name for the cluster that reaches the local
// application behind an inbound port.
func InboundClusterName(port uint32) string {
	return "inbound|" + strconv.FormatUint(uint64(port), 10) + "||"
}

// outboundClusters builds a cluster per service port, plus one per
// DestinationRule subset, and the load assignments of those served by EDS.
// Every service the proxy may see is included (scope.go).
func (e *env) outboundClusters() ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment, error) {
	return e.outboundClustersOf(e.snap.Services, true)
}

// outboundClustersOf builds the clusters of services; without tls the
// clusters lack their transport sockets, which load assignments never
// depend on (BuildEndpoints).
func (e *env) outboundClustersOf(services []*model.Service, tls bool) ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment, error) {
	var clusters []*clusterv3.Cluster
	var clas []*endpointv3.ClusterLoadAssignment
	for _, svc := range services {
		b := e.serviceClusters(svc, e.destinationRule(svc.Hostname), tls)
		if b.err != nil {
			return nil, nil, b.err
		}
		clusters = append(clusters, b.clusters...)
		clas = append(clas, b.clas...)
	}
	return clusters, clas, nil
}

// serviceClusters are svc's clusters under dr and their load assignments,
// built once per snapshot for all the proxies that see svc with dr from
// the same locality. The proxies of a mesh's namespaces are each their
// own class (their routes differ), yet most get the same clusters, and
// building and encoding 1000 services' clusters once per namespace was
// most of the control plane's work to converge. Whatever else a cluster
// depends on (the mesh config, PeerAuthentications, workloads) is the same
// in every view of one snapshot (model.Snapshot.View). The results are
// shared: no caller may modify them (localbind.go clones what it changes).
func (e *env) serviceClusters(svc *model.Service, dr *model.DestinationRule, tls bool) *builtClusters {
	key := clusterMemoKey{svc: svc, dr: dr, locality: e.locality(), tls: tls}
	return e.snap.Memo(key, func() any { return e.buildServiceClusters(svc, dr, tls) }).(*builtClusters)
}

// clusterMemoKey is everything serviceClusters' result depends on that
// differs between the proxies translated from one snapshot.
type clusterMemoKey struct {
	svc      *model.Service
	dr       *model.DestinationRule // as chosen for the proxy's namespace
	locality string                 // locality load balancing is relative to the proxy
	tls      bool
}

type builtClusters struct {
	clusters []*clusterv3.Cluster
	clas     []*endpointv3.ClusterLoadAssignment
	err      error
}

// buildServiceClusters builds a cluster per port of svc, plus one per
// subset of dr; without tls the clusters lack their transport sockets,
// which load assignments never depend on (BuildEndpoints).
func (e *env) buildServiceClusters(svc *model.Service, dr *model.DestinationRule, tls bool) *builtClusters {
	build := e.outboundCluster
	if !tls {
		build = e.outboundClusterPlain
	}
	out := &builtClusters{}
	add := func(c *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment) {
		out.clusters = append(out.clusters, c)
		if cla != nil {
			out.clas = append(out.clas, cla)
		}
	}
	var top *networking.TrafficPolicy
	var subsets []*networking.Subset
	if dr != nil {
		top = dr.Spec.GetTrafficPolicy()
		subsets = dr.Spec.GetSubsets()
		if err := checkSubsets(dr); err != nil {
			return &builtClusters{err: err}
		}
	}
	for _, port := range svc.Ports {
		c, cla, err := build(svc, port, "", nil, top)
		if err != nil {
			return &builtClusters{err: err}
		}
		add(c, cla)
		for _, ss := range subsets {
			c, cla, err := build(svc, port, ss.GetName(), ss.GetLabels(), mergeTrafficPolicy(top, ss.GetTrafficPolicy()))
			if err != nil {
				return &builtClusters{err: fmt.Errorf("%s: subset %s: %w", dr.Key(), ss.GetName(), err)}
			}
			add(c, cla)
		}
	}
	return out
}

// checkSubsets rejects what would produce unnamed or duplicate clusters.
func checkSubsets(dr *model.DestinationRule) error {
	seen := map[string]bool{}
	for i, ss := range dr.Spec.GetSubsets() {
		switch {
		case ss.GetName() == "":
			return fmt.Errorf("%s (%s): subsets[%d].name: must not be empty", dr.Key(), dr.Source, i)
		case seen[ss.GetName()]:
			return fmt.Errorf("%s (%s): subsets[%d].name: duplicate subset %q", dr.Key(), dr.Source, i, ss.GetName())
		}
		seen[ss.GetName()] = true
	}
	return nil
}

// outboundCluster builds the cluster for one service port (and subset). It
// returns a load assignment too when the cluster's endpoints come over EDS.
func (e *env) outboundCluster(svc *model.Service, port *model.Port, subset string, subsetLabels map[string]string, policy *networking.TrafficPolicy) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	c, cla, err := e.outboundClusterPlain(svc, port, subset, subsetLabels, policy)
	if err != nil {
		return nil, nil, err
	}
	// mtls.go: auto-mTLS or the DestinationRule's tls.
	if err := e.applyClientTLS(c, svc, port, subset); err != nil {
		return nil, nil, err
	}
	return c, cla, nil
}

func (e *env) outboundClusterPlain(svc *model.Service, port *model.Port, subset string, subsetLabels map[string]string, policy *networking.TrafficPolicy) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	name := OutboundClusterName(port.Number, subset, svc.Hostname)
	policy = policyForPort(policy, port.Number)
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: e.connectTimeout(policy),
	}
	idle := applyConnectionPool(c, policy.GetConnectionPool())
	if err := setUpstreamProtocol(c, port.Protocol, idle); err != nil {
		return nil, nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	applyOutlierDetection(c, policy.GetOutlierDetection())
	passthrough := applyLoadBalancer(c, policy.GetLoadBalancer())
	locality := e.localitySetting(policy.GetLoadBalancer().GetLocalityLbSetting())

	if passthrough {
		// PASSTHROUGH sends each connection to the address the client
		// asked for, whatever the registry says (Istio does the same).
		setOriginalDst(c)
		return c, nil, nil
	}
	switch svc.Resolution {
	case networking.ServiceEntry_STATIC:
		return e.edsCluster(c, svc, port, subsetLabels, locality)
	case networking.ServiceEntry_NONE:
		if len(svc.Endpoints) > 0 {
			return e.edsCluster(c, svc, port, subsetLabels, locality)
		}
		setOriginalDst(c)
		return c, nil, nil
	case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN:
		if err := e.dnsCluster(c, svc, port, subsetLabels); err != nil {
			return nil, nil, fmt.Errorf("cluster %s: %w", name, err)
		}
		e.applyLocality(c, c.LoadAssignment.Endpoints, locality)
		return c, nil, nil
	}
	return nil, nil, fmt.Errorf("cluster %s: %s: resolution %v is not supported", name, serviceRef(svc), svc.Resolution)
}

func (e *env) edsCluster(c *clusterv3.Cluster, svc *model.Service, port *model.Port, subsetLabels map[string]string, locality *networking.LocalityLoadBalancerSetting) (*clusterv3.Cluster, *endpointv3.ClusterLoadAssignment, error) {
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{
		EdsConfig:   adsConfigSource(),
		ServiceName: c.Name,
	}
	cla, err := e.loadAssignment(c.Name, svc, port, subsetLabels)
	if err != nil {
		return nil, nil, err
	}
	e.applyLocality(c, cla.Endpoints, locality)
	return c, cla, nil
}

// dnsCluster makes Envoy resolve the endpoints' host names itself: STRICT_DNS
// for DNS resolution, LOGICAL_DNS (one host) for DNS_ROUND_ROBIN, as Istio.
func (e *env) dnsCluster(c *clusterv3.Cluster, svc *model.Service, port *model.Port, subsetLabels map[string]string) error {
	c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
	var groups []*endpointv3.LocalityLbEndpoints
	if len(svc.Endpoints) == 0 {
		// No endpoints: the service's own host name is what to resolve.
		if strings.HasPrefix(svc.Hostname, "*") {
			return fmt.Errorf("%s: resolution DNS needs endpoints for wildcard host %q", serviceRef(svc), svc.Hostname)
		}
		groups = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{
			lbEndpoint(socketAddress(svc.Hostname, (&model.Endpoint{}).PortFor(port)), 0), // targetPort, as Istio
		}}}
	} else {
		var err error
		if groups, err = e.localityEndpoints(svc, port, subsetLabels); err != nil {
			return err
		}
	}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	if first := firstEndpointOnly(groups); svc.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN && first != nil {
		// Envoy accepts exactly one host in a LOGICAL_DNS cluster; a subset
		// selecting none stays STRICT_DNS, which may be empty.
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}
		groups = first
	}
	c.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: c.Name, Endpoints: groups}
	return nil
}

func firstEndpointOnly(groups []*endpointv3.LocalityLbEndpoints) []*endpointv3.LocalityLbEndpoints {
	for _, g := range groups {
		if len(g.LbEndpoints) > 0 {
			return []*endpointv3.LocalityLbEndpoints{{
				Locality:    g.Locality,
				LbEndpoints: g.LbEndpoints[:1],
			}}
		}
	}
	return nil
}

// setOriginalDst makes c forward to each connection's original
// destination; Envoy then picks the host itself, so any load balancer
// setting is dropped, as in Istio.
func setOriginalDst(c *clusterv3.Cluster) {
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
	c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
	c.LbConfig = nil
	if c.CommonLbConfig != nil {
		c.CommonLbConfig.LocalityConfigSpecifier = nil
	}
}

// inboundCluster reaches the local application at addr.
func (e *env) inboundCluster(port uint32, protocol model.Protocol, addr *corev3.Address) (*clusterv3.Cluster, error) {
	name := InboundClusterName(port)
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       e.connectTimeout(nil),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(addr, 0)},
			}},
		},
	}
	applyConnectionPool(c, nil)
	if err := setUpstreamProtocol(c, protocol, nil); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	return c, nil
}

// connectTimeout follows Istio's precedence: the DestinationRule's
// connectionPool.tcp.connectTimeout (port-level settings already
// flattened in), the mesh-wide connectTimeout, then Istio's 10s default.
func (e *env) connectTimeout(policy *networking.TrafficPolicy) *durationpb.Duration {
	for _, d := range []*durationpb.Duration{
		policy.GetConnectionPool().GetTcp().GetConnectTimeout(),
		e.snap.Config.Mesh.GetConnectTimeout(),
	} {
		// Envoy requires a positive timeout; config validation rejects
		// others, so one slipping through falls back rather than NACKs.
		if d.IsValid() && d.AsDuration() > 0 {
			// A copy: resources must not share messages with the snapshot.
			return durationpb.New(d.AsDuration())
		}
	}
	return durationpb.New(defaultConnectTimeout)
}

// portPolicy returns the portLevelSettings entry for port, or nil.
func portPolicy(policy *networking.TrafficPolicy, port uint32) *networking.TrafficPolicy_PortTrafficPolicy {
	for _, pl := range policy.GetPortLevelSettings() {
		if pl.GetPort().GetNumber() == port {
			return pl
		}
	}
	return nil
}

// mergeTrafficPolicy overlays a subset's policy on the rule's top-level one
// the way Istio does: each top-level setting the subset gives replaces the
// rule's, whole. Neither input is modified.
func mergeTrafficPolicy(top, subset *networking.TrafficPolicy) *networking.TrafficPolicy {
	if subset == nil {
		return top
	}
	if top == nil {
		return subset
	}
	merged := &networking.TrafficPolicy{
		LoadBalancer:      top.GetLoadBalancer(),
		ConnectionPool:    top.GetConnectionPool(),
		OutlierDetection:  top.GetOutlierDetection(),
		Tls:               top.GetTls(),
		PortLevelSettings: top.GetPortLevelSettings(),
	}
	if subset.GetLoadBalancer() != nil {
		merged.LoadBalancer = subset.GetLoadBalancer()
	}
	if subset.GetConnectionPool() != nil {
		merged.ConnectionPool = subset.GetConnectionPool()
	}
	if subset.GetOutlierDetection() != nil {
		merged.OutlierDetection = subset.GetOutlierDetection()
	}
	if subset.GetTls() != nil {
		merged.Tls = subset.GetTls()
	}
	if len(subset.GetPortLevelSettings()) > 0 {
		merged.PortLevelSettings = subset.GetPortLevelSettings()
	}
	return merged
}

// setUpstreamProtocol makes the cluster speak HTTP/2 upstream for ports
// declared HTTP2 or gRPC; everything else uses Envoy's HTTP/1.1 default.
// An idle timeout (connectionPool idleTimeout) goes into the same HTTP
// protocol options, which then name HTTP/1.1 explicitly, as Istio's do.
func setUpstreamProtocol(c *clusterv3.Cluster, p model.Protocol, idle *durationpb.Duration) error {
	opts := &upstreamhttpv3.HttpProtocolOptions{}
	switch p {
	case "HTTP2", "GRPC", "GRPC-WEB":
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		}
	default:
		if idle == nil || !p.IsHTTP() {
			return nil
		}
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
					HttpProtocolOptions: &corev3.Http1ProtocolOptions{},
				},
			},
		}
	}
	if idle != nil {
		opts.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: idle}
	}
	a, err := anypb.New(opts)
	if err != nil {
		return fmt.Errorf("http protocol options: %w", err)
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{upstreamHTTPOptionsName: a}
	return nil
}

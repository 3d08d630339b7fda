package translate

import (
	"math"
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// DestinationRule traffic policies, applied to clusters the way Istio's
// pilot does (pilot/pkg/networking/core/cluster_traffic_policy.go and
// loadbalancer/); tls is mtls.go's. Not applied:
// loadBalancer.warmupDurationSecs (trellis-proxy has no slow start),
// localityLbSetting.failoverPriority, connectionPool.http.
// maxRequestsPerConnection, maxConcurrentStreams, h2UpgradePolicy,
// useClientProtocol, tcp.maxConnectionDuration and tcpKeepalive, and
// proxyProtocol. retries.retryRemoteLocalities is not applied either.

// policyForPort flattens a traffic policy for one port: each setting the
// port's portLevelSettings entry gives replaces the policy's, whole, as in
// Istio's MergeTrafficPolicy. nil in, nil out.
func policyForPort(policy *networking.TrafficPolicy, port uint32) *networking.TrafficPolicy {
	pl := portPolicy(policy, port)
	if pl == nil {
		return policy
	}
	out := &networking.TrafficPolicy{
		LoadBalancer:     policy.GetLoadBalancer(),
		ConnectionPool:   policy.GetConnectionPool(),
		OutlierDetection: policy.GetOutlierDetection(),
		Tls:              policy.GetTls(),
	}
	if pl.GetLoadBalancer() != nil {
		out.LoadBalancer = pl.GetLoadBalancer()
	}
	if pl.GetConnectionPool() != nil {
		out.ConnectionPool = pl.GetConnectionPool()
	}
	if pl.GetOutlierDetection() != nil {
		out.OutlierDetection = pl.GetOutlierDetection()
	}
	if pl.GetTls() != nil {
		out.Tls = pl.GetTls()
	}
	return out
}

// clusterPolicy is the traffic policy of the cluster for host, subset and
// port: the DestinationRule's, the subset's overlaid, then the port's.
func (e *env) clusterPolicy(host, subset string, port uint32) *networking.TrafficPolicy {
	dr := e.destinationRule(host)
	if dr == nil {
		return nil
	}
	policy := dr.Spec.GetTrafficPolicy()
	if subset != "" {
		for _, ss := range dr.Spec.GetSubsets() {
			if ss.GetName() == subset {
				policy = mergeTrafficPolicy(policy, ss.GetTrafficPolicy())
				break
			}
		}
	}
	return policyForPort(policy, port)
}

// hashPolicy is the route hash policy for requests to host/subset:port when
// its DestinationRule asks for consistent hashing (Istio puts it on every
// route to the cluster); nil otherwise. It reads the same policy as the
// cluster's lb_policy, so the two never disagree.
func (e *env) hashPolicy(host, subset string, port uint32) *routev3.RouteAction_HashPolicy {
	ch := e.clusterPolicy(host, subset, port).GetLoadBalancer().GetConsistentHash()
	switch k := ch.GetHashKey().(type) {
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: k.HttpHeaderName},
		}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		c := &routev3.RouteAction_HashPolicy_Cookie{Name: k.HttpCookie.GetName(), Path: k.HttpCookie.GetPath()}
		if t := k.HttpCookie.GetTtl(); t != nil {
			c.Ttl = durationpb.New(t.AsDuration())
		}
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
		if !k.UseSourceIp {
			return nil
		}
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true},
		}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		return &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{
			QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: k.HttpQueryParameterName},
		}}
	}
	return nil
}

// applyLoadBalancer sets lb_policy from loadBalancer.simple or
// consistentHash (Istio's applyLoadBalancer and ApplyRingHashLoadBalancer).
// It reports PASSTHROUGH, which is a cluster type in Envoy, not a policy.
func applyLoadBalancer(c *clusterv3.Cluster, lb *networking.LoadBalancerSettings) (passthrough bool) {
	switch lb.GetSimple() {
	//lint:ignore SA1019 existing Istio YAML still says LEAST_CONN; it must keep working.
	case networking.LoadBalancerSettings_LEAST_REQUEST, networking.LoadBalancerSettings_LEAST_CONN:
		// Istio maps the deprecated LEAST_CONN to LEAST_REQUEST too.
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	case networking.LoadBalancerSettings_RANDOM:
		c.LbPolicy = clusterv3.Cluster_RANDOM
	case networking.LoadBalancerSettings_PASSTHROUGH:
		c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
		return true
	default:
		// Istio's default is LEAST_REQUEST since 1.14; Trellis keeps round
		// robin, which behaves the same for the small local meshes it runs.
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	}
	ch := lb.GetConsistentHash()
	if ch == nil {
		return false
	}
	switch {
	case ch.GetMaglev() != nil:
		c.LbPolicy = clusterv3.Cluster_MAGLEV
		if size := ch.GetMaglev().GetTableSize(); size != 0 {
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{
				TableSize: wrapperspb.UInt64(size),
			}}
		}
	case ch.GetRingHash() != nil:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		if size := ch.GetRingHash().GetMinimumRingSize(); size != 0 {
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(size),
			}}
		}
	default:
		// The deprecated top-level minimumRingSize; 1024 is Envoy's default,
		// which Istio spells out.
		size := uint64(1024)
		//lint:ignore SA1019 users' existing DestinationRules still set the deprecated field; Istio honours it.
		if ch.GetMinimumRingSize() != 0 {
			//lint:ignore SA1019 see above.
			size = ch.GetMinimumRingSize()
		}
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			MinimumRingSize: wrapperspb.UInt64(size),
		}}
	}
	return false
}

// defaultThresholds are Istio's circuit breaker defaults: no limits (Envoy's
// own, 1024 connections and 3 concurrent retries, trip too early for a
// mesh), with the remaining counts tracked.
func defaultThresholds() *clusterv3.CircuitBreakers_Thresholds {
	return &clusterv3.CircuitBreakers_Thresholds{
		MaxConnections:     wrapperspb.UInt32(math.MaxUint32),
		MaxPendingRequests: wrapperspb.UInt32(math.MaxUint32),
		MaxRequests:        wrapperspb.UInt32(math.MaxUint32),
		MaxRetries:         wrapperspb.UInt32(math.MaxUint32),
		TrackRemaining:     true,
	}
}

// applyConnectionPool is Istio's applyConnectionPool: circuit breakers
// from the limits (a zero limit means "unset", Istio cannot tell them
// apart), and the upstream idle timeout. It returns the idle timeout for
// the cluster's HTTP protocol options, nil when none is set.
func applyConnectionPool(c *clusterv3.Cluster, cp *networking.ConnectionPoolSettings) (idle *durationpb.Duration) {
	t := defaultThresholds()
	if h := cp.GetHttp(); h != nil {
		if v := h.GetHttp2MaxRequests(); v > 0 {
			t.MaxRequests = wrapperspb.UInt32(uint32(v))
		}
		if v := h.GetHttp1MaxPendingRequests(); v > 0 {
			t.MaxPendingRequests = wrapperspb.UInt32(uint32(v))
		}
		if v := h.GetMaxRetries(); v > 0 {
			t.MaxRetries = wrapperspb.UInt32(uint32(v))
		}
		if d := h.GetIdleTimeout(); d != nil {
			idle = durationpb.New(d.AsDuration())
		}
	}
	if tcp := cp.GetTcp(); tcp != nil {
		if v := tcp.GetMaxConnections(); v > 0 {
			t.MaxConnections = wrapperspb.UInt32(uint32(v))
		}
		if d := tcp.GetIdleTimeout(); d != nil && idle == nil {
			idle = durationpb.New(d.AsDuration())
		}
	}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
	return idle
}

// applyOutlierDetection is Istio's applyOutlierDetection: success-rate
// ejection off, the consecutive error detectors enforced fully when set,
// and the panic threshold set from minHealthPercent (0 by default, which
// disables Envoy's panic mode: with few endpoints per service it would
// send traffic to ejected hosts).
func applyOutlierDetection(c *clusterv3.Cluster, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	out := &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0)}
	enforcing := func(v uint32) *wrapperspb.UInt32Value {
		if v > 0 {
			v = 100
		}
		return wrapperspb.UInt32(v)
	}
	if e := od.GetConsecutive_5XxErrors(); e != nil {
		out.Consecutive_5Xx = wrapperspb.UInt32(e.GetValue())
		out.EnforcingConsecutive_5Xx = enforcing(e.GetValue())
	}
	if e := od.GetConsecutiveGatewayErrors(); e != nil {
		out.ConsecutiveGatewayFailure = wrapperspb.UInt32(e.GetValue())
		out.EnforcingConsecutiveGatewayFailure = enforcing(e.GetValue())
	}
	if d := od.GetInterval(); d != nil {
		out.Interval = durationpb.New(d.AsDuration())
	}
	if d := od.GetBaseEjectionTime(); d != nil {
		out.BaseEjectionTime = durationpb.New(d.AsDuration())
	}
	if p := od.GetMaxEjectionPercent(); p > 0 {
		out.MaxEjectionPercent = wrapperspb.UInt32(uint32(p))
	}
	if od.GetSplitExternalLocalOriginErrors() {
		out.SplitExternalLocalOriginErrors = true
		if v := od.GetConsecutiveLocalOriginFailures().GetValue(); v > 0 {
			out.ConsecutiveLocalOriginFailure = wrapperspb.UInt32(v)
			out.EnforcingConsecutiveLocalOriginFailure = wrapperspb.UInt32(100)
		}
		out.EnforcingLocalOriginSuccessRate = wrapperspb.UInt32(0)
	}
	c.OutlierDetection = out
	if c.CommonLbConfig == nil {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
	}
	c.CommonLbConfig.HealthyPanicThreshold = &typev3.Percent{Value: float64(max(od.GetMinHealthPercent(), 0))}
}

// localitySetting is the locality load balancing in force: the
// DestinationRule's, else the mesh's, else an empty (enabled) one, since
// Istio's default MeshConfig enables locality load balancing; nil when
// disabled.
func (e *env) localitySetting(lb *networking.LocalityLoadBalancerSetting) *networking.LocalityLoadBalancerSetting {
	s := lb
	if s == nil {
		s = e.snap.Config.Mesh.GetLocalityLbSetting()
	}
	if s == nil {
		return &networking.LocalityLoadBalancerSetting{}
	}
	if s.GetEnabled() != nil && !s.GetEnabled().GetValue() {
		return nil
	}
	return s
}

// applyLocality is Istio's applyLocalityLoadBalancer: it turns on
// locality-weighted load balancing when weights are distributed (or
// failover is configured, which needs outlier detection to ever fail
// over), and sets the endpoint groups' weights or priorities as seen from
// this proxy's locality. A proxy whose workload has no locality gets
// neither, as in Istio.
func (e *env) applyLocality(c *clusterv3.Cluster, groups []*endpointv3.LocalityLbEndpoints, setting *networking.LocalityLoadBalancerSetting) {
	if setting == nil {
		return // disabled
	}
	failover := c.GetOutlierDetection() != nil
	weighted := setting.GetDistribute() != nil ||
		(failover && (setting.GetFailover() != nil || setting.GetFailoverPriority() != nil))
	if weighted {
		if c.CommonLbConfig == nil {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
		}
		c.CommonLbConfig.LocalityConfigSpecifier = &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
			LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
		}
		// Envoy gives a locality without a weight no traffic at all under
		// locality-weighted balancing; Istio's EDS always sets it to the
		// sum of its endpoints' weights.
		for _, g := range groups {
			var sum uint32
			for _, ep := range g.GetLbEndpoints() {
				sum += max(ep.GetLoadBalancingWeight().GetValue(), 1)
			}
			if sum > 0 {
				g.LoadBalancingWeight = wrapperspb.UInt32(sum)
			}
		}
	}
	local := parseLocality(e.locality())
	if local == nil {
		return
	}
	switch {
	case setting.GetDistribute() != nil:
		applyLocalityWeights(local, groups, setting.GetDistribute())
	case failover:
		applyLocalityFailover(local, groups, setting.GetFailover())
	}
}

// locality is the proxy's own "region/zone/subzone", from its WorkloadEntry.
func (e *env) locality() string {
	if e.workload == nil {
		return ""
	}
	return e.workload.Spec.GetLocality()
}

// applyLocalityWeights is Istio's: the first distribute rule whose from
// matches the proxy's locality splits traffic between the to localities
// (a wildcard's weight shared among the groups it covers, by their own
// weights); groups in no to locality get no traffic.
func applyLocalityWeights(local *corev3.Locality, groups []*endpointv3.LocalityLbEndpoints, rules []*networking.LocalityLoadBalancerSetting_Distribute) {
	for _, rule := range rules {
		if !localityMatch(local, rule.GetFrom()) {
			continue
		}
		unmatched := map[int]bool{}
		for i := range groups {
			unmatched[i] = true
		}
		for _, to := range sortedKeys(rule.GetTo()) {
			weight := rule.GetTo()[to]
			matched := map[int]uint32{}
			var total uint32
			for i, g := range groups {
				if unmatched[i] && localityMatch(g.GetLocality(), to) {
					delete(unmatched, i)
					matched[i] = max(g.GetLoadBalancingWeight().GetValue(), 1)
					total += matched[i]
				}
			}
			for i, w := range matched {
				if share := float64(w*weight) / float64(total); share > 0 {
					groups[i].LoadBalancingWeight = wrapperspb.UInt32(uint32(math.Ceil(share)))
				}
			}
		}
		for i := range unmatched {
			groups[i].LbEndpoints = nil
			groups[i].LoadBalancingWeight = nil
		}
		return
	}
}

// applyLocalityFailover is Istio's: priority 0 for the proxy's own
// subzone, 1 its zone, 2 its region, 3 other regions, except that a
// failover rule from the proxy's region sends everything but its to
// region to 4. Priorities are then renumbered to have no gaps, as Envoy
// requires.
func applyLocalityFailover(local *corev3.Locality, groups []*endpointv3.LocalityLbEndpoints, rules []*networking.LocalityLoadBalancerSetting_Failover) {
	byPriority := map[uint32][]int{}
	for i, g := range groups {
		p := lbPriority(local, g.GetLocality())
		if p == 3 {
			for _, rule := range rules {
				if rule.GetFrom() == local.GetRegion() {
					if g.GetLocality().GetRegion() != rule.GetTo() {
						p = 4
					}
					break
				}
			}
		}
		byPriority[p] = append(byPriority[p], i)
	}
	levels := make([]uint32, 0, len(byPriority))
	for p := range byPriority {
		levels = append(levels, p)
	}
	sort.Slice(levels, func(i, j int) bool { return levels[i] < levels[j] })
	for n, p := range levels {
		for _, i := range byPriority[p] {
			groups[i].Priority = uint32(n)
		}
	}
}

func lbPriority(local, ep *corev3.Locality) uint32 {
	switch {
	case local.GetRegion() != ep.GetRegion():
		return 3
	case local.GetZone() != ep.GetZone():
		return 2
	case local.GetSubZone() != ep.GetSubZone():
		return 1
	}
	return 0
}

// localityMatch is Istio's util.LocalityMatch: rule is "region/zone/subzone"
// where any part may be "*" and zone and subzone may be left out.
func localityMatch(l *corev3.Locality, rule string) bool {
	parts := strings.SplitN(rule, "/", 3)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	region, zone, subzone := parts[0], parts[1], parts[2]
	return (region == "*" || l.GetRegion() == region) &&
		(zone == "*" || zone == "" || l.GetZone() == zone) &&
		(subzone == "*" || subzone == "" || l.GetSubZone() == subzone)
}

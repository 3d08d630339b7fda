package upstream

import (
	"net/netip"
	"time"
)

// DiscoveryType is how a cluster learns its endpoints (Envoy's Cluster.type).
type DiscoveryType int

const (
	// Static endpoints come from the cluster's own load assignment.
	Static DiscoveryType = iota
	// StrictDNS endpoints are host names from the load assignment, resolved on each connect.
	StrictDNS
	// LogicalDNS is like StrictDNS; Envoy's difference (one resolved address at a time) does not
	// show when resolution happens per connection.
	LogicalDNS
	// EDS endpoints come from a ClusterLoadAssignment named EDSServiceName.
	EDS
	// OriginalDst sends each request to the address it was originally sent to (the downstream
	// connection's local address, or the x-envoy-original-dst-host header when allowed).
	OriginalDst
)

var discoveryNames = [...]string{"STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST"}

func (d DiscoveryType) String() string {
	if int(d) < len(discoveryNames) {
		return discoveryNames[d]
	}
	return "UNKNOWN"
}

// LBPolicy chooses among a cluster's healthy hosts.
type LBPolicy int

const (
	// RoundRobin cycles through hosts, honouring weights (smooth weighted round robin).
	RoundRobin LBPolicy = iota
	// LeastRequest picks the least busy of ChoiceCount random hosts (power of two choices by
	// default); with unequal weights it schedules by weight/(active+1)^ActiveRequestBias (Envoy).
	LeastRequest
	// Random picks a host at random, honouring weights.
	Random
	// RingHash maps the request's hash onto a consistent-hash ring of hosts (Ketama style).
	RingHash
	// Maglev looks the request's hash up in a Maglev table: consistent, and more even than a ring.
	Maglev
)

var lbNames = [...]string{"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"}

func (p LBPolicy) String() string {
	if int(p) < len(lbNames) {
		return lbNames[p]
	}
	return "UNKNOWN"
}

// LBConfig tunes the load balancer. Zero values mean Envoy's defaults (see withDefaults).
type LBConfig struct {
	// ChoiceCount is how many random hosts least request compares (least_request_lb_config).
	ChoiceCount uint32
	// ActiveRequestBias is the exponent of (active+1) dividing a host's weight in weighted least
	// request; HasActiveRequestBias distinguishes an explicit 0 (weights only) from the default 1.
	ActiveRequestBias    float64
	HasActiveRequestBias bool
	// MinRingSize and MaxRingSize bound the ring hash ring (1024 and 8M by default).
	MinRingSize, MaxRingSize uint64
	// MaglevTableSize is the Maglev lookup table's size, a prime (65537 by default).
	MaglevTableSize uint64
	// LocalityWeighted picks a locality by its load_balancing_weight first, then a host in it
	// (common_lb_config.locality_weighted_lb_config).
	LocalityWeighted bool
	// PanicThreshold is the healthy percentage of a priority level under which its load balancer
	// uses all its hosts, healthy or not (healthy_panic_threshold, 50 by default; 0 disables).
	PanicThreshold    float64
	HasPanicThreshold bool
}

// Envoy's load balancer defaults.
const (
	DefaultChoiceCount            = 2
	DefaultMinRingSize            = 1024
	DefaultMaxRingSize            = 8 * 1024 * 1024
	DefaultMaglevTableSize        = 65537
	DefaultPanicThreshold         = 50.0
	DefaultOverprovisioningFactor = 140
)

func (l LBConfig) withDefaults() LBConfig {
	if l.ChoiceCount == 0 {
		l.ChoiceCount = DefaultChoiceCount
	}
	if !l.HasActiveRequestBias {
		l.ActiveRequestBias = 1
	}
	if l.MinRingSize == 0 {
		l.MinRingSize = DefaultMinRingSize
	}
	if l.MaxRingSize == 0 {
		l.MaxRingSize = DefaultMaxRingSize
	}
	if l.MaglevTableSize == 0 {
		l.MaglevTableSize = DefaultMaglevTableSize
	}
	if !l.HasPanicThreshold {
		l.PanicThreshold = DefaultPanicThreshold
	}
	return l
}

// Protocol is the HTTP version spoken to a cluster's endpoints.
type Protocol int

const (
	// HTTP1 is HTTP/1.1 with keep-alive.
	HTTP1 Protocol = iota
	// HTTP2 is cleartext HTTP/2 with prior knowledge.
	HTTP2
	// UseDownstream speaks whatever the downstream request used.
	UseDownstream
)

// Config is a cluster's immutable configuration.
type Config struct {
	Name string
	// StatName, when set, replaces Name in stat names (Envoy's alt_stat_name).
	StatName string
	Type     DiscoveryType
	// EDSServiceName is the ClusterLoadAssignment to use for EDS clusters (Envoy defaults it to Name).
	EDSServiceName string
	LB             LBPolicy
	LBConfig       LBConfig
	ConnectTimeout time.Duration
	// SourceIP is upstream_bind_config.source_address: the local address TCP connections to the
	// cluster's hosts are made from; invalid (the zero value) lets the kernel choose.
	SourceIP netip.Addr
	// IdleTimeout closes pooled connections unused for this long.
	IdleTimeout time.Duration
	Protocol    Protocol
	// Endpoints is the inline load assignment (STATIC and DNS clusters).
	Endpoints []Endpoint
	// OriginalDstFromHeader lets x-envoy-original-dst-host choose an ORIGINAL_DST cluster's target.
	OriginalDstFromHeader bool
	// TLS, when set, originates TLS to every endpoint (transport_socket UpstreamTlsContext), or to
	// those no TransportMatches entry picks.
	TLS *TLS
	// TransportMatches are transport_socket_matches: an endpoint uses the transport of the first
	// whose Match its TransportSocketMatch metadata contains (TLS nil: plaintext), else TLS. Hosts
	// with different transports never share a connection pool.
	TransportMatches []TransportMatch

	// CircuitBreakers limit connections and requests (circuit_breakers); zero values are Envoy's
	// defaults.
	CircuitBreakers CircuitBreakers
	// Outlier, when set, ejects hosts that fail (outlier_detection).
	Outlier *OutlierConfig
	// HealthCheck, when set, checks every host actively (health_checks[0]).
	HealthCheck *HealthCheck
	// IgnoreHealthOnHostRemoval drops hosts EDS removes at once even while they pass active health
	// checks (ignore_health_on_host_removal); otherwise they stay until they fail one, as in Envoy.
	IgnoreHealthOnHostRemoval bool
}

// UnixPrefix starts the Address of an endpoint that is a Unix domain socket ("unix:/run/app.sock";
// "unix:@name" for the abstract namespace).
const UnixPrefix = "unix:"

// Endpoint is one upstream address.
type Endpoint struct {
	Address  string // host:port, or UnixPrefix + socket path
	Weight   uint32 // 0 means 1
	Priority uint32
	// Healthy is false for endpoints EDS reports UNHEALTHY, DRAINING or TIMEOUT: they are listed but
	// picked only in panic mode.
	Healthy bool
	// Degraded is EDS's DEGRADED: used only when the healthy hosts cannot take the load.
	Degraded bool

	Locality Locality
	// LocalityWeight is the locality's load_balancing_weight (used with LocalityWeighted).
	LocalityWeight uint32
	Hostname       string
	// IstioWorkload is the endpoint's filter_metadata["istio"]["workload"] (Istio's
	// "name;namespace;canonical-service;revision;cluster"), which telemetry reads.
	IstioWorkload string
	// HealthCheckPort, when set, is the port active health checks use instead of the endpoint's.
	HealthCheckPort uint32
	// TransportSocketMatch is the endpoint's filter_metadata["envoy.transport_socket_match"], each
	// value in the canonical form TransportMatch.Match uses (strings as they are).
	TransportSocketMatch map[string]string
	// Overprovisioning is the load assignment's overprovisioning_factor (0 means Envoy's 140); it is
	// the same on every endpoint of one assignment.
	Overprovisioning uint32
}

// Defaults for a cluster that leaves them unset. The connect timeout is Envoy's; the idle timeout is
// shorter than Envoy's hour so pools of replaced clusters do not linger.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultIdleTimeout    = time.Minute
)

// TransportMatch is one transport_socket_matches entry.
type TransportMatch struct {
	Name string
	// Match must be contained in an endpoint's TransportSocketMatch metadata; empty matches all.
	Match map[string]string
	// TLS is the transport: nil for raw_buffer.
	TLS *TLS
}

// transportFor is the index of the transport an endpoint with metadata md uses: 0 for the cluster's
// own transport_socket, i+1 for TransportMatches[i].
func (c *Config) transportFor(md map[string]string) int {
	for i, m := range c.TransportMatches {
		ok := true
		for k, v := range m.Match {
			if got, has := md[k]; !has || got != v {
				ok = false
				break
			}
		}
		if ok {
			return i + 1
		}
	}
	return 0
}

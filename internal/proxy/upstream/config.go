package upstream

import "time"

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
	// LeastRequest picks the less busy of two random hosts (power of two choices); with unequal
	// weights it falls back to weighted round robin.
	LeastRequest
	// Random picks a host at random, honouring weights.
	Random
)

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
	ConnectTimeout time.Duration
	// IdleTimeout closes pooled connections unused for this long.
	IdleTimeout time.Duration
	Protocol    Protocol
	// Endpoints is the inline load assignment (STATIC and DNS clusters).
	Endpoints []Endpoint
	// OriginalDstFromHeader lets x-envoy-original-dst-host choose an ORIGINAL_DST cluster's target.
	OriginalDstFromHeader bool
	// TLS, when set, originates TLS to every endpoint (transport_socket UpstreamTlsContext).
	TLS *TLS
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
	// never picked.
	Healthy bool
}

// Defaults for a cluster that leaves them unset. The connect timeout is Envoy's; the idle timeout is
// shorter than Envoy's hour so pools of replaced clusters do not linger.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultIdleTimeout    = time.Minute
)

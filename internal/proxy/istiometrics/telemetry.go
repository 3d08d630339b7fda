package istiometrics

import (
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// Reporter says which side of a request a proxy reports as: the client's sidecar or gateway
// ("source") or the server's ("destination").
type Reporter uint8

// Reporters.
const (
	ReporterSource Reporter = iota
	ReporterDestination
)

func (r Reporter) String() string {
	if r == ReporterDestination {
		return "destination"
	}
	return "source"
}

// Protocol is request_protocol.
type Protocol uint8

// Protocols.
const (
	ProtocolHTTP Protocol = iota
	ProtocolGRPC
	ProtocolTCP
)

func (p Protocol) String() string {
	switch p {
	case ProtocolGRPC:
		return "grpc"
	case ProtocolTCP:
		return "tcp"
	}
	return "http"
}

// Security is connection_security_policy.
type Security uint8

// Security policies. A source reporter cannot know what the server enforced: Istio reports
// "unknown" there.
const (
	SecurityUnknown Security = iota
	SecurityNone
	SecurityMutualTLS
)

func (s Security) String() string {
	switch s {
	case SecurityNone:
		return "none"
	case SecurityMutualTLS:
		return "mutual_tls"
	}
	return Unknown
}

// Service is the destination service of a request: its FQDN, short name and namespace.
type Service struct {
	Host, Name, Namespace string
}

// Peers are a request's two sides: Source and Destination may be nil (unknown); Service too.
type Peers struct {
	Reporter            Reporter
	Source, Destination *Identity
	Service             *Service
	Security            Security
	// SourcePrincipal, when set, is the source's identity as its mTLS certificate proved it (the
	// URI SAN), which wins over the one derived from the source's metadata.
	SourcePrincipal string
}

// HTTPKey identifies one series of the HTTP metrics. It is comparable and holds no string built per
// request, so a lookup costs no allocation.
type HTTPKey struct {
	Peers
	Protocol   Protocol
	Code       int32
	GRPCStatus int32 // -1 when there is none
	Flags      streaminfo.Flags
}

// TCPKey identifies one series of the TCP metrics.
type TCPKey struct {
	Peers
	Flags streaminfo.Flags
}

// The peer labels, in Istio's order.
var peerLabels = []string{
	"reporter",
	"source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
	"source_principal", "source_app", "source_version", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
	"request_protocol",
}

var (
	httpLabels = append(slices.Clone(peerLabels), "response_code", "grpc_response_status", "response_flags", "connection_security_policy")
	tcpLabels  = append(slices.Clone(peerLabels), "response_flags", "connection_security_policy")
)

// TrustDomain is the SPIFFE trust domain of principals.
const TrustDomain = "cluster.local"

func (p *Peers) values(proto Protocol) []string {
	src, dst := p.Source, p.Destination
	if src == nil {
		src = &Identity{}
	}
	if dst == nil {
		dst = &Identity{}
	}
	svc := p.Service
	if svc == nil {
		svc = &Service{}
	}
	// Principals are what mTLS proves; in plaintext nobody proved anything.
	srcPrincipal, dstPrincipal := "", ""
	if p.Security == SecurityMutualTLS {
		srcPrincipal, dstPrincipal = src.Principal(TrustDomain), dst.Principal(TrustDomain)
		if p.SourcePrincipal != "" {
			srcPrincipal = p.SourcePrincipal
		}
	}
	v := []string{
		p.Reporter.String(),
		src.Workload, src.CanonicalService, src.Revision, src.Namespace, srcPrincipal, src.App, src.Version, src.Cluster,
		dst.Workload, dst.Namespace, dstPrincipal, dst.App, dst.Version,
		svc.Host, svc.Name, svc.Namespace, dst.CanonicalService, dst.Revision, dst.Cluster,
		proto.String(),
	}
	for i := range v {
		if v[i] == "" {
			v[i] = Unknown
		}
	}
	return v
}

// The metrics' indexes in their sets.
const (
	RequestsTotal = iota
	RequestDuration
	RequestBytes
	ResponseBytes
)

// TCP metrics' indexes.
const (
	TCPOpened = iota
	TCPClosed
	TCPSent
	TCPReceived
)

// Telemetry is one proxy's Istio telemetry: its identity, what it tells peers, and its metrics.
type Telemetry struct {
	Self *Identity
	// ExchangeValue and ExchangeID are the x-envoy-peer-metadata(-id) header values this proxy
	// sends, as shared one-element slices (never modified) so that setting them costs nothing.
	ExchangeValue, ExchangeID []string
	// Peers caches peers decoded from exchange headers, Workloads those from endpoint metadata.
	Peers, Workloads *PeerCache

	Registry Registry
	HTTP     *Set[HTTPKey]
	TCP      *Set[TCPKey]

	svcMu    sync.RWMutex
	services map[string]*Service
}

// New returns the telemetry of a proxy with identity self.
func New(self *Identity) *Telemetry {
	t := &Telemetry{
		Self:          self,
		ExchangeValue: []string{ExchangeValue(self)},
		ExchangeID:    []string{self.NodeID},
		Peers:         NewPeerCache(0),
		Workloads:     NewPeerCache(0),
		services:      make(map[string]*Service),
	}
	t.HTTP = NewSet(&t.Registry, httpLabels, func(k HTTPKey) []string {
		grpc := "" // not gRPC: Istio leaves it empty rather than unknown
		if k.GRPCStatus >= 0 {
			grpc = strconv.Itoa(int(k.GRPCStatus))
		}
		code := "0" // no response at all, as Istio
		if k.Code > 0 {
			code = strconv.Itoa(int(k.Code))
		}
		return append(k.values(k.Protocol), code, grpc, k.Flags.String(), k.Security.String())
	},
		Metric{Name: "istio_requests_total", Help: "Requests, by Istio's standard labels."},
		Metric{Name: "istio_request_duration_milliseconds", Help: "Request duration in milliseconds.", Histogram: true, Buckets: DurationBuckets},
		Metric{Name: "istio_request_bytes", Help: "Request body size in bytes.", Histogram: true, Buckets: BytesBuckets},
		Metric{Name: "istio_response_bytes", Help: "Response body size in bytes.", Histogram: true, Buckets: BytesBuckets},
	)
	t.TCP = NewSet(&t.Registry, tcpLabels, func(k TCPKey) []string {
		return append(k.values(ProtocolTCP), k.Flags.String(), k.Security.String())
	},
		Metric{Name: "istio_tcp_connections_opened_total", Help: "TCP connections opened."},
		Metric{Name: "istio_tcp_connections_closed_total", Help: "TCP connections closed."},
		Metric{Name: "istio_tcp_sent_bytes_total", Help: "Bytes sent to the downstream (response direction)."},
		Metric{Name: "istio_tcp_received_bytes_total", Help: "Bytes received from the downstream (request direction)."},
	)
	return t
}

// ServiceOf is the destination service a request to cluster (or, without an outbound cluster,
// with Host header host) is for. Istio's cluster name "outbound|9080|v1|reviews.default.svc.cluster.local"
// gives the FQDN; "<name>.<namespace>.svc.<domain>" hosts give name and namespace. A bare host
// name is taken as a service of ns (the reporting proxy's namespace), as Kubernetes' search path
// resolves it. Results are cached by their input; nil when neither says anything.
func (t *Telemetry) ServiceOf(cluster, host, ns string) *Service {
	key := cluster
	if h, ok := outboundHost(cluster); ok {
		host = h
	} else {
		if host == "" {
			return nil
		}
		key = host
	}
	t.svcMu.RLock()
	svc, ok := t.services[key]
	t.svcMu.RUnlock()
	if ok {
		return svc
	}
	svc = parseService(host, ns)
	t.svcMu.Lock()
	if len(t.services) >= 4096 {
		clear(t.services) // bounds a flood of made-up Host headers
	}
	t.services[strings.Clone(key)] = svc
	t.svcMu.Unlock()
	return svc
}

func outboundHost(cluster string) (string, bool) {
	rest, ok := strings.CutPrefix(cluster, "outbound|")
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, "|")
	if len(parts) != 3 || parts[2] == "" {
		return "", false
	}
	return parts[2], true
}

func parseService(host, ns string) *Service {
	if h, _, ok := strings.Cut(host, ":"); ok && !strings.Contains(h, "]") {
		host = h
	}
	host = strings.ToLower(host)
	labels := strings.Split(host, ".")
	switch {
	case len(labels) == 1 && ns != "":
		host = host + "." + ns + ".svc.cluster.local"
		return &Service{Host: host, Name: labels[0], Namespace: ns}
	case len(labels) >= 4 && labels[2] == "svc":
		return &Service{Host: host, Name: labels[0], Namespace: labels[1]}
	}
	// A ServiceEntry host or an external name: Istio names the service by its host.
	return &Service{Host: host, Name: host}
}

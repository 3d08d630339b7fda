package xdsclient

import (
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
)

// Type URLs of the resources this client handles. Defined here rather than taken from
// go-control-plane's pkg/resource/v3, which belongs to the server side of the library.
const (
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// HealthInfoType is the type URL of Istio's application health report (SetHealth): a
// DiscoveryRequest with no resource names, error_detail set when the application is unhealthy.
// istiod reads it to set the Healthy condition of an auto-registered WorkloadEntry and never
// answers it.
const HealthInfoType = "type.googleapis.com/istio.v1.HealthInformation"

// requestOrder is the order of the first requests on a stream: Envoy's make-before-break order, so a
// server answering in request order sends clusters before the endpoints and listeners that use them.
var requestOrder = []string{ClusterType, EndpointType, ListenerType, RouteType}

// isWildcard reports whether typeURL is subscribed to as a whole (LDS, CDS) rather than by name.
func isWildcard(typeURL string) bool { return typeURL == ListenerType || typeURL == ClusterType }

func knownType(typeURL string) bool {
	switch typeURL {
	case ListenerType, RouteType, ClusterType, EndpointType:
		return true
	}
	return false
}

// shortType names a type URL in logs and errors ("Cluster" for the CDS type URL).
func shortType(typeURL string) string {
	switch typeURL {
	case ListenerType:
		return "Listener"
	case RouteType:
		return "RouteConfiguration"
	case ClusterType:
		return "Cluster"
	case EndpointType:
		return "ClusterLoadAssignment"
	}
	return typeURL
}

// Watcher receives resources. OnResources gets the complete current set for typeURL (state of the
// world: every Listener/Cluster for the LDS/CDS wildcard subscriptions; the subscribed names for
// RDS/EDS), sorted by name and already unmarshalled into *listenerv3.Listener,
// *routev3.RouteConfiguration, *clusterv3.Cluster or *endpointv3.ClusterLoadAssignment. The messages
// are shared with the client's cache: treat them as read-only.
//
// A non-nil error NACKs the response (error_detail = err.Error(), version_info stays the last ACKed
// version) and the watcher must keep its previous config in force.
//
// OnResources is called from the client's stream goroutine, one call at a time; it may call
// Subscribe, and should return promptly since the stream waits for it.
type Watcher interface {
	OnResources(typeURL string, resources []proto.Message) error
}

// Config configures a Client.
type Config struct {
	Address string // host:port of the control plane (plaintext gRPC for now)
	Node    *corev3.Node
	Watcher Watcher
	Logger  *slog.Logger // nil means slog.Default()
}

// Status is a snapshot of the client's state, for the admin API.
type Status struct {
	Address string
	// Connected is true while a stream to the control plane is open.
	Connected bool
	// LastStreamError says why the most recent stream ended or could not be opened; empty before any
	// failure.
	LastStreamError string
	// Types is keyed by type URL and always holds the four types this client handles.
	Types map[string]TypeStatus
}

// TypeStatus is the state of one resource type.
type TypeStatus struct {
	// AckedVersion is the version_info of the last accepted response; empty before the first one.
	AckedVersion string
	// LastAccepted is when that response was accepted.
	LastAccepted time.Time
	// Subscribed is the RDS/EDS name set given to Subscribe; nil for the wildcard types LDS/CDS.
	Subscribed []string
	// NACKed is true when the most recent response of this type was rejected.
	NACKed bool
	// LastNACK is the most recent rejection, kept after later accepted responses; nil if none.
	LastNACK *NACK
}

// NACK describes a rejected response.
type NACK struct {
	Version string // version_info of the rejected response
	Nonce   string
	Message string // the error_detail message sent to the control plane
	Time    time.Time
}

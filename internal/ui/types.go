package ui

// The JSON documents of the console API. Field names are the contract's;
// see docs/console.md.

// Graph is GET /api/graph.
type Graph struct {
	GeneratedAt   string  `json:"generatedAt"`
	WindowSeconds float64 `json:"windowSeconds"`
	Nodes         []Node  `json:"nodes"`
	Edges         []Edge  `json:"edges"`
}

// Node kinds.
const (
	KindWorkload = "workload"
	KindService  = "service" // a destination without workloads
	KindUnknown  = "unknown" // an unidentified source
)

// Node is a workload, a workload-less service, or "unknown".
type Node struct {
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	App       string `json:"app"`
	Version   string `json:"version"`
	Service   string `json:"service"`
	Kind      string `json:"kind"`
}

// Edge is the traffic from one node to another over the window.
type Edge struct {
	ID        string  `json:"id"`
	Source    string  `json:"source"`
	Target    string  `json:"target"`
	Protocol  string  `json:"protocol"`
	RPS       float64 `json:"rps"`
	ErrorRate float64 `json:"errorRate"`
	P99Ms     float64 `json:"p99Ms"`
	MTLS      string  `json:"mtls"`
	// BytesPerSecond is sent plus received, for TCP edges.
	BytesPerSecond float64 `json:"bytesPerSecond,omitempty"`
}

// Edge mTLS values.
const (
	MTLSMutual = "mutual_tls"
	MTLSNone   = "none"
	MTLSMixed  = "mixed"
)

// Service is one entry of GET /api/services.
type Service struct {
	Namespace string        `json:"namespace"`
	Name      string        `json:"name"`
	Host      string        `json:"host"`
	Ports     []ServicePort `json:"ports"`
	Workloads []string      `json:"workloads"`
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Number   uint32 `json:"number"`
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
}

// ServiceView is GET /api/services/{namespace}/{name}.
type ServiceView struct {
	Service          Service           `json:"service"`
	VirtualServices  []VirtualService  `json:"virtualServices"`
	DestinationRules []DestinationRule `json:"destinationRules"`
}

// VirtualService is a VirtualService's HTTP routes as the console edits them.
type VirtualService struct {
	Namespace string      `json:"namespace"`
	Name      string      `json:"name"`
	Source    string      `json:"source"`
	Editable  bool        `json:"editable"`
	HTTP      []HTTPRoute `json:"http"`
}

// HTTPRoute is one entry of a VirtualService's spec.http.
type HTTPRoute struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	// Match summarises the match conditions; "" for a catch-all.
	Match string             `json:"match"`
	Route []RouteDestination `json:"route"`
}

// RouteDestination is one weighted destination of an HTTPRoute.
type RouteDestination struct {
	Host   string `json:"host"`
	Subset string `json:"subset"`
	Port   uint32 `json:"port"`
	Weight int32  `json:"weight"`
}

// DestinationRule lists a rule's subsets.
type DestinationRule struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Source    string   `json:"source"`
	Subsets   []Subset `json:"subsets"`
}

// Subset is one DestinationRule subset.
type Subset struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
}

// WeightsRequest is the body of PUT .../http/{index}/weights.
type WeightsRequest struct {
	Weights []int64 `json:"weights"`
}

// Validation is GET /api/validation.
type Validation struct {
	OK       bool                `json:"ok"`
	Messages []ValidationMessage `json:"messages"`
}

// ValidationMessage is one error of the latest rejected config, or one
// warning of the current one.
type ValidationMessage struct {
	Level    string `json:"level"` // "error" or "warning"
	Source   string `json:"source"`
	Resource string `json:"resource"`
	Field    string `json:"field"`
	Reason   string `json:"reason"`
	Text     string `json:"text"`
}

// Proxy is one entry of GET /api/proxies.
type Proxy struct {
	ID          string               `json:"id"`
	Name        string               `json:"name"`
	Namespace   string               `json:"namespace"`
	ConnectedAt string               `json:"connectedAt"`
	Connected   bool                 `json:"connected"`
	Types       map[string]TypeState `json:"types"`
	LastNack    *Nack                `json:"lastNack"`
	LastError   string               `json:"lastError"`
}

// TypeState is one xDS type's sync state for a proxy.
type TypeState struct {
	Sent   string `json:"sent"`
	Acked  string `json:"acked"`
	Status string `json:"status"` // "SYNCED", "STALE" or "NOT SENT"
}

// Nack is the latest rejection a proxy sent.
type Nack struct {
	Type    string `json:"type"`
	Message string `json:"message"`
	At      string `json:"at"`
}

// apiError is every error reply's body.
type apiError struct {
	Error string `json:"error"`
}

package model

import (
	"fmt"
	"net/netip"
	"strings"
)

// NodeType is the first field of an Istio node ID.
type NodeType string

const (
	SidecarProxy NodeType = "sidecar"
	Router       NodeType = "router" // gateways
)

// InterceptionMode says how application traffic reaches the proxy; the
// values are Istio's node metadata INTERCEPTION_MODE values.
type InterceptionMode string

const (
	InterceptRedirect InterceptionMode = "REDIRECT" // iptables; Istio's default
	// InterceptNone: no iptables. Apps use the proxy as an explicit HTTP
	// proxy and the proxy binds its own address (local mode).
	InterceptNone InterceptionMode = "NONE"
)

// Proxy is one connected data-plane instance as the control plane sees it.
type Proxy struct {
	ID           string
	Type         NodeType
	IP           string
	Name         string // pod or workload name
	Namespace    string
	DNSDomain    string
	Interception InterceptionMode
	Labels       map[string]string
}

// ParseProxy parses an Istio node ID,
// "sidecar~10.0.0.1~reviews-v1-abc.default~default.svc.cluster.local".
func ParseProxy(id string) (*Proxy, error) {
	parts := strings.Split(id, "~")
	if len(parts) != 4 {
		return nil, fmt.Errorf("node ID %q: want 4 fields type~ip~name.namespace~domain, got %d", id, len(parts))
	}
	p := &Proxy{ID: id, Type: NodeType(parts[0]), IP: parts[1], DNSDomain: parts[3], Interception: InterceptRedirect}
	if p.Type != SidecarProxy && p.Type != Router {
		return nil, fmt.Errorf("node ID %q: type %q: want sidecar or router", id, parts[0])
	}
	if _, err := netip.ParseAddr(p.IP); err != nil {
		return nil, fmt.Errorf("node ID %q: ip: %w", id, err)
	}
	name, ns, ok := strings.Cut(parts[2], ".")
	if !ok || name == "" || ns == "" {
		return nil, fmt.Errorf("node ID %q: %q: want name.namespace", id, parts[2])
	}
	p.Name, p.Namespace = name, ns
	return p, nil
}

package translate

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Inbound is HTTP only for now: Sidecar ingress entries and service ports
// with other protocols get no listener of their own (TCP proxying is a later
// issue); in REDIRECT mode they reach the app through the passthrough chain.

const (
	// InboundListenerName is the REDIRECT-mode listener iptables sends
	// inbound traffic to (Istio's name and port).
	InboundListenerName = "virtualInbound"
	inboundPort         = 15006
)

// inboundPortInfo is one port the proxy accepts traffic on for its workload.
type inboundPortInfo struct {
	port     uint32
	protocol model.Protocol
	bind     string          // address to bind in NONE mode
	app      *corev3.Address // where the application listens
}

// inbound builds the listeners and clusters that deliver traffic to the
// proxy's own application.
func (e *env) inbound() ([]*listenerv3.Listener, []*clusterv3.Cluster, error) {
	ports, err := e.inboundPorts()
	if err != nil {
		return nil, nil, err
	}
	var listeners []*listenerv3.Listener
	var clusters []*clusterv3.Cluster
	var chains []*listenerv3.FilterChain
	needInspector := false
	for _, p := range ports {
		c, err := e.inboundCluster(p.port, p.protocol, p.app)
		if err != nil {
			return nil, nil, err
		}
		clusters = append(clusters, c)
		if e.interceptNone() {
			name := listenerName(p.bind, p.port)
			l, err := httpListener(name, p.bind, p.port, corev3.TrafficDirection_INBOUND, hcmOptions{
				statPrefix: "inbound_" + name,
				inline:     inboundRouteConfig(p.port),
			})
			if err != nil {
				return nil, nil, err
			}
			if err := e.secureInboundListener(l, p.port); err != nil { // mtls.go
				return nil, nil, err
			}
			listeners = append(listeners, l)
			continue
		}
		h, err := httpConnectionManager(hcmOptions{
			statPrefix: "inbound_" + listenerName("0.0.0.0", p.port),
			inline:     inboundRouteConfig(p.port),
			direction:  corev3.TrafficDirection_INBOUND,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("listener %s: %w", InboundListenerName, err)
		}
		fc, err := hcmFilterChain(h)
		if err != nil {
			return nil, nil, fmt.Errorf("listener %s: %w", InboundListenerName, err)
		}
		fc.Name = listenerName("0.0.0.0", p.port)
		fc.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(p.port)}
		secured, inspect, err := e.secureInboundChains(fc, p.port) // mtls.go
		if err != nil {
			return nil, nil, fmt.Errorf("listener %s: %w", InboundListenerName, err)
		}
		chains = append(chains, secured...)
		needInspector = needInspector || inspect
	}
	if e.interceptNone() {
		return listeners, clusters, nil
	}
	// iptables sends inbound traffic to 15006; the original_dst listener
	// filter makes the original port what chains match (capture.go).
	capture, inspect, err := e.inboundCaptureChains()
	if err != nil {
		return nil, nil, fmt.Errorf("listener %s: %w", InboundListenerName, err)
	}
	l := &listenerv3.Listener{
		Name:             InboundListenerName,
		Address:          socketAddress("0.0.0.0", inboundPort),
		FilterChains:     append(chains, capture...),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
	}
	if err := addOriginalDstFilter(l); err != nil {
		return nil, nil, fmt.Errorf("listener %s: %w", InboundListenerName, err)
	}
	if needInspector || inspect {
		if err := addTLSInspector(l); err != nil {
			return nil, nil, fmt.Errorf("listener %s: %w", InboundListenerName, err)
		}
	}
	listeners = append(listeners, l)
	return listeners, clusters, nil
}

// inboundRouteConfig sends every request on port to the local app.
func inboundRouteConfig(port uint32) *routev3.RouteConfiguration {
	cluster := InboundClusterName(port)
	return &routev3.RouteConfiguration{
		Name:             cluster,
		ValidateClusters: wrapperspb.Bool(false),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "inbound|http|" + strconv.FormatUint(uint64(port), 10),
			Domains: []string{"*"},
			Routes:  []*routev3.Route{defaultRoute(cluster)},
		}},
	}
}

// inboundPorts lists the ports to accept traffic on: the Sidecar's ingress
// entries when it has any, else every HTTP port of the services selecting
// the proxy's workload, at the port the workload serves it on.
func (e *env) inboundPorts() ([]inboundPortInfo, error) {
	sc := e.snap.SidecarFor(e.proxy.Namespace, e.labels)
	if sc != nil && len(sc.Spec.GetIngress()) > 0 {
		return e.sidecarIngressPorts(sc)
	}
	if e.workload == nil {
		return nil, nil
	}
	seen := map[uint32]bool{}
	var out []inboundPortInfo
	for _, svc := range e.snap.ServicesOf(e.workload) {
		ep := endpointOf(svc, e.workload)
		for _, port := range sortedPorts(svc.Ports) {
			if !port.Protocol.IsHTTP() {
				continue
			}
			n := ep.PortFor(port)
			if seen[n] {
				continue
			}
			seen[n] = true
			out = append(out, inboundPortInfo{
				port:     n,
				protocol: port.Protocol,
				bind:     e.proxy.IP,
				app:      socketAddress("127.0.0.1", n),
			})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].port < out[j].port })
	return out, nil
}

func (e *env) sidecarIngressPorts(sc *model.Sidecar) ([]inboundPortInfo, error) {
	seen := map[uint32]bool{}
	var out []inboundPortInfo
	for i, in := range sc.Spec.GetIngress() {
		path := fmt.Sprintf("%s (%s): ingress[%d]", sc.Key(), sc.Source, i)
		n := in.GetPort().GetNumber()
		if n == 0 || n > 65535 {
			return nil, fmt.Errorf("%s.port.number: %d: want 1-65535", path, n)
		}
		proto := model.Protocol(strings.ToUpper(in.GetPort().GetProtocol()))
		if proto == "" {
			proto = "HTTP"
		}
		if !proto.IsHTTP() || seen[n] {
			continue
		}
		seen[n] = true
		bind := in.GetBind()
		if bind == "" {
			bind = e.proxy.IP
		} else if net.ParseIP(bind) == nil {
			return nil, fmt.Errorf("%s.bind: %q: want an IP address", path, bind)
		}
		ep := in.GetDefaultEndpoint()
		if ep == "" {
			ep = "127.0.0.1:" + strconv.FormatUint(uint64(n), 10)
		}
		addr, err := endpointAddress(ep, e.proxy.IP)
		if err != nil {
			return nil, fmt.Errorf("%s.defaultEndpoint: %w", path, err)
		}
		out = append(out, inboundPortInfo{port: n, protocol: proto, bind: bind, app: addr})
	}
	return out, nil
}

// endpointOf is the service's endpoint backed by we. ServicesOf only
// returns services that have one.
func endpointOf(svc *model.Service, we *model.WorkloadEntry) *model.Endpoint {
	if ep := svc.EndpointOf(we); ep != nil {
		return ep
	}
	return &model.Endpoint{}
}

package translate

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/model"
)

const (
	// OutboundListenerName is the sidecar's listener for traffic its app
	// sends out (Istio's name and port).
	OutboundListenerName = "virtualOutbound"
	outboundPort         = 15001
	// OutboundRouteName is the route configuration of virtualOutbound: one
	// virtual host per HTTP service port, so a single listener serves
	// every destination (requests carry host:port in their authority).
	OutboundRouteName = "15001"
)

// outboundListener is virtualOutbound and its route configuration in local
// mode (INTERCEPTION_MODE NONE): it binds the proxy's own IP and is used by
// the app as an explicit HTTP proxy. REDIRECT mode is capture.go's.
func (e *env) outboundListener() (*listenerv3.Listener, *routev3.RouteConfiguration, error) {
	rc, err := e.outboundRouteConfig(OutboundRouteName, 0)
	if err != nil {
		return nil, nil, err
	}
	ip := e.bindIP()
	l, err := httpListener(OutboundListenerName, ip, outboundPort, corev3.TrafficDirection_OUTBOUND, hcmOptions{
		statPrefix:    "outbound_" + listenerName(ip, outboundPort),
		rds:           OutboundRouteName,
		explicitProxy: true,
	})
	if err != nil {
		return nil, nil, err
	}
	return l, rc, nil
}

// outboundRouteConfig has one virtual host per (HTTP service, port), routed
// by the first VirtualService bound to the mesh that names the host. With
// onlyPort set it covers that port only (a REDIRECT-mode per-port route),
// and also answers to the services' addresses and, for destinations it does
// not know, with Istio's allow_any or block_all virtual host.
func (e *env) outboundRouteConfig(name string, onlyPort uint32) (*routev3.RouteConfiguration, error) {
	meshVS := meshVirtualServices(e.snap.Config.VirtualServices)
	used := map[string]bool{} // Envoy rejects a domain in two virtual hosts
	rc := &routev3.RouteConfiguration{
		Name: name,
		// Routes may name clusters of services that do not exist (yet);
		// those requests get 503 instead of the whole config being rejected.
		ValidateClusters: wrapperspb.Bool(false),
		// Room for VirtualService directResponse bodies, as Istio gives.
		MaxDirectResponseBodySizeBytes: wrapperspb.UInt32(MaxDirectResponseBody),
	}
	for _, svc := range e.snap.Services {
		for _, port := range sortedPorts(svc.Ports) {
			if !port.Protocol.IsHTTP() || onlyPort != 0 && port.Number != onlyPort {
				continue // TCP services get no virtual host; TCP routing is a later issue
			}
			var domains []string
			candidates := e.outboundDomains(svc.Hostname, port.Number)
			if onlyPort != 0 {
				candidates = append(candidates, addressDomains(svc, port.Number)...)
			}
			for _, d := range candidates {
				if !used[d] {
					used[d] = true
					domains = append(domains, d)
				}
			}
			if len(domains) == 0 {
				continue
			}
			var routes []*routev3.Route
			if vs := virtualServiceFor(meshVS, svc.Hostname); vs != nil {
				var err error
				if routes, err = e.virtualServiceRoutes(vs, e.scope(port.Number, meshGateway)); err != nil {
					return nil, fmt.Errorf("route %s: virtual host %s: %w", name, hostPort(svc.Hostname, port.Number), err)
				}
			} else {
				routes = []*routev3.Route{e.defaultOutboundRoute(svc, port.Number)}
			}
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{
				Name:    hostPort(svc.Hostname, port.Number),
				Domains: domains,
				Routes:  routes,
			})
		}
	}
	if onlyPort != 0 {
		rc.VirtualHosts = append(rc.VirtualHosts, e.unknownHostVirtualHost())
	}
	return rc, nil
}

// outboundDomains are the authorities an app may use for host:port: the
// full name, and the short names Kubernetes DNS search paths allow for
// services in the proxy's own namespace. Port 80 may be left out, since
// clients omit the default port from the authority.
func (e *env) outboundDomains(host string, port uint32) []string {
	names := []string{host}
	if short, ok := strings.CutSuffix(host, "."+e.proxy.Namespace+"."+model.DomainSuffix); ok && short != "" && !strings.Contains(short, ".") {
		ns := e.proxy.Namespace
		names = append(names, short, short+"."+ns, short+"."+ns+".svc")
	}
	var out []string
	for _, n := range names {
		out = append(out, hostPort(n, port))
		if port == 80 {
			out = append(out, n)
		}
	}
	return out
}

// meshVirtualServices are those routing HTTP for sidecars: no gateways
// listed, or the reserved "mesh" among them. Order (namespace/name) is
// kept. One with only tcp or tls routes does not take over an HTTP port.
func meshVirtualServices(all []*model.VirtualService) []*model.VirtualService {
	var out []*model.VirtualService
	for _, vs := range all {
		if len(vs.Spec.GetHttp()) == 0 {
			continue
		}
		gws := vs.Spec.GetGateways()
		if len(gws) == 0 {
			out = append(out, vs)
			continue
		}
		for _, g := range gws {
			if g == meshGateway {
				out = append(out, vs)
				break
			}
		}
	}
	return out
}

// virtualServiceFor returns the first VirtualService naming host exactly,
// else the first whose wildcard host covers it, else nil. Istio merges
// several VirtualServices for one host; here the first wins (later issue).
func virtualServiceFor(vss []*model.VirtualService, host string) *model.VirtualService {
	var wildcard *model.VirtualService
	for _, vs := range vss {
		for _, h := range vs.Spec.GetHosts() {
			h = model.ResolveHost(h, vs.Namespace)
			if h == host {
				return vs
			}
			if wildcard == nil && strings.HasPrefix(h, "*") && hostMatches(h, host) {
				wildcard = vs
			}
		}
	}
	return wildcard
}

func sortedPorts(ports []*model.Port) []*model.Port {
	out := append([]*model.Port(nil), ports...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out
}

func hostPort(host string, port uint32) string {
	return host + ":" + strconv.FormatUint(uint64(port), 10)
}

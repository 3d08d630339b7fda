package translate

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Gateway servers translated: plain HTTP (HTTP, HTTP2, GRPC), with the
// VirtualServices for one host merged as Istio merges them on gateways, and
// TCP and TLS passthrough servers (gatewaytcp.go). HTTPS servers and
// tls.httpsRedirect are later issues; such servers are skipped.

// GatewayRouteName is the route configuration of a gateway's HTTP servers
// on port, Istio's "http.<port>".
func GatewayRouteName(port uint32) string {
	return "http." + strconv.FormatUint(uint64(port), 10)
}

// gatewayServer is one HTTP server of a Gateway that selects this proxy.
type gatewayServer struct {
	gw     *model.Gateway
	index  int // in gw.Spec.Servers, for error messages
	server *networking.Server
}

// gatewayListeners builds, for each port with HTTP servers, a listener per
// bind address and the shared route configuration "http.<port>".
func (e *env) gatewayListeners() ([]*listenerv3.Listener, []*routev3.RouteConfiguration, error) {
	byPort := map[uint32][]gatewayServer{}
	for _, gw := range e.snap.Config.Gateways {
		if !model.LabelsMatch(gw.Spec.GetSelector(), e.labels) {
			continue
		}
		for i, srv := range gw.Spec.GetServers() {
			proto := model.Protocol(strings.ToUpper(srv.GetPort().GetProtocol()))
			if !proto.IsHTTP() {
				continue // HTTPS, TLS, TCP: later issue
			}
			n := srv.GetPort().GetNumber()
			if n == 0 || n > 65535 {
				return nil, nil, fmt.Errorf("%s (%s): servers[%d].port.number: %d: want 1-65535", gw.Key(), gw.Source, i, n)
			}
			if b := srv.GetBind(); b != "" && net.ParseIP(b) == nil {
				return nil, nil, fmt.Errorf("%s (%s): servers[%d].bind: %q: want an IP address", gw.Key(), gw.Source, i, b)
			}
			byPort[n] = append(byPort[n], gatewayServer{gw: gw, index: i, server: srv})
		}
	}
	ports := make([]uint32, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, p)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })

	var listeners []*listenerv3.Listener
	var routes []*routev3.RouteConfiguration
	for _, port := range ports {
		servers := byPort[port]
		rc, err := e.gatewayRouteConfig(port, servers)
		if err != nil {
			return nil, nil, err
		}
		routes = append(routes, rc)
		bound := map[string]bool{}
		for _, s := range servers {
			ip := s.server.GetBind()
			if ip == "" {
				ip = e.bindIP()
			}
			if bound[ip] {
				continue
			}
			bound[ip] = true
			name := listenerName(ip, port)
			l, err := httpListener(name, ip, port, corev3.TrafficDirection_OUTBOUND, hcmOptions{
				statPrefix:       "outbound_" + name,
				rds:              rc.Name,
				useRemoteAddress: true,
			})
			if err != nil {
				return nil, nil, err
			}
			listeners = append(listeners, l)
		}
	}
	httpPorts := make(map[uint32]bool, len(ports))
	for _, p := range ports {
		httpPorts[p] = true
	}
	l4, err := e.gatewayL4Listeners(httpPorts) // gatewaytcp.go
	if err != nil {
		return nil, nil, err
	}
	return append(listeners, l4...), routes, nil
}

// gatewayRouteConfig has a virtual host for each host of a VirtualService
// bound to one of the servers' Gateways that the server's hosts admit.
func (e *env) gatewayRouteConfig(port uint32, servers []gatewayServer) (*routev3.RouteConfiguration, error) {
	rc := &routev3.RouteConfiguration{
		Name:                           GatewayRouteName(port),
		ValidateClusters:               wrapperspb.Bool(false),
		MaxDirectResponseBodySizeBytes: wrapperspb.UInt32(MaxDirectResponseBody),
	}
	vhosts := map[string]*routev3.VirtualHost{}
	merged := map[string]bool{} // "vhost VirtualService" pairs already in
	usedDomains := map[string]bool{}
	for _, s := range servers {
		gwRef := s.gw.Namespace + "/" + s.gw.Name
		for _, vs := range e.snap.Config.VirtualServices {
			if len(vs.Spec.GetHttp()) == 0 || !boundToGateway(vs, s.gw) {
				continue
			}
			for _, h := range vs.Spec.GetHosts() {
				host, ok := serverAdmits(s.server.GetHosts(), s.gw.Namespace, vs.Namespace, model.ResolveHost(h, vs.Namespace))
				if !ok {
					continue
				}
				name := hostPort(host, port)
				if merged[name+" "+vs.Key()] {
					continue
				}
				merged[name+" "+vs.Key()] = true
				vh := vhosts[name]
				if vh == nil {
					var domains []string
					for _, d := range gatewayDomains(host, port) {
						if !usedDomains[d] {
							usedDomains[d] = true
							domains = append(domains, d)
						}
					}
					if len(domains) == 0 {
						continue
					}
					vh = &routev3.VirtualHost{Name: name, Domains: domains}
					vhosts[name] = vh
					rc.VirtualHosts = append(rc.VirtualHosts, vh)
				}
				r, err := e.virtualServiceRoutes(vs, e.scope(port, gwRef))
				if err != nil {
					return nil, fmt.Errorf("route %s: virtual host %s: %w", rc.Name, name, err)
				}
				// Several VirtualServices for one host on a gateway merge,
				// as in Istio: routes in resource order (Istio's is
				// creation time; here namespace/name), catch-alls last.
				vh.Routes = append(vh.Routes, r...)
			}
		}
	}
	for _, vh := range rc.VirtualHosts {
		vh.Routes = catchAllsLast(vh.Routes)
	}
	sort.SliceStable(rc.VirtualHosts, func(i, j int) bool { return rc.VirtualHosts[i].Name < rc.VirtualHosts[j].Name })
	return rc, nil
}

// catchAllsLast is Istio's SortVHostRoutes: routes matching every
// request move to the end, the others keeping their order, so that one
// VirtualService's catch-all does not hide another's specific routes.
func catchAllsLast(routes []*routev3.Route) []*routev3.Route {
	out := make([]*routev3.Route, 0, len(routes))
	var last []*routev3.Route
	for _, r := range routes {
		if isCatchAll(r.GetMatch()) {
			last = append(last, r)
		} else {
			out = append(out, r)
		}
	}
	return append(out, last...)
}

// boundToGateway reports whether vs lists gw in its gateways, as
// "namespace/name" or, from gw's own namespace, as "name".
func boundToGateway(vs *model.VirtualService, gw *model.Gateway) bool {
	want := gw.Namespace + "/" + gw.Name
	for _, g := range vs.Spec.GetGateways() {
		if g != meshGateway && qualifyGateway(g, vs.Namespace) == want {
			return true
		}
	}
	return false
}

// serverAdmits checks a VirtualService host against a server's hosts
// ("host", "*", "*.suffix", each optionally "namespace/" prefixed, with
// "*" for any namespace and "." for the Gateway's own). It returns the
// host to serve: the narrower of the two when either is a wildcard.
func serverAdmits(serverHosts []string, gwNamespace, vsNamespace, vsHost string) (string, bool) {
	for _, sh := range serverHosts {
		ns, host, ok := strings.Cut(sh, "/")
		if !ok {
			ns, host = "*", sh
		}
		switch ns {
		case "*":
		case ".":
			if vsNamespace != gwNamespace {
				continue
			}
		default:
			if vsNamespace != ns {
				continue
			}
		}
		switch {
		case hostMatches(host, vsHost):
			return vsHost, true
		case hostMatches(vsHost, host):
			return host, true
		}
	}
	return "", false
}

// gatewayDomains: clients may or may not put the port in the authority.
func gatewayDomains(host string, port uint32) []string {
	if host == "*" {
		return []string{"*"}
	}
	return []string{host, hostPort(host, port)}
}

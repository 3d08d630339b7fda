package translate

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Gateway servers of protocol TCP, and TLS with tls.mode PASSTHROUGH, as istiod builds them
// (buildGatewayNetworkFiltersFromTCPRoutes / FromTLSRoutes):
//
//   - TCP: one chain per server, to the first tcp route of a VirtualService bound to the Gateway
//     (hosts admitted by the server's) whose match applies to the server's port and Gateway.
//   - TLS PASSTHROUGH: a chain per tls match, by SNI (the match's sniHosts the server admits), with
//     the tls_inspector; the TLS session goes through to the destination untouched.
//
// A server with no route gets no chain, and a port with no chain no listener, as in Istio.
// Servers terminating TLS (SIMPLE, MUTUAL, ISTIO_MUTUAL, OPTIONAL_MUTUAL) and AUTO_PASSTHROUGH
// are refused by internal/config's validation.

// isL4GatewayServer reports the servers this file translates.
func isL4GatewayServer(srv *networking.Server) bool {
	switch strings.ToUpper(srv.GetPort().GetProtocol()) {
	case "TCP":
		return true
	case "TLS":
		return srv.GetTls().GetMode() == networking.ServerTLSSettings_PASSTHROUGH
	}
	return false
}

// gatewayL4Listeners builds a listener per (bind address, port) with TCP or TLS passthrough
// servers, leaving out ports that HTTP servers have.
func (e *env) gatewayL4Listeners(httpPorts map[uint32]bool) ([]*listenerv3.Listener, error) {
	byPort := map[uint32][]gatewayServer{}
	for _, gw := range e.snap.Config.Gateways {
		if !model.LabelsMatch(gw.Spec.GetSelector(), e.labels) {
			continue
		}
		for i, srv := range gw.Spec.GetServers() {
			if !isL4GatewayServer(srv) {
				continue
			}
			n := srv.GetPort().GetNumber()
			if n == 0 || n > 65535 {
				return nil, fmt.Errorf("%s (%s): servers[%d].port.number: %d: want 1-65535", gw.Key(), gw.Source, i, n)
			}
			if b := srv.GetBind(); b != "" && net.ParseIP(b) == nil {
				return nil, fmt.Errorf("%s (%s): servers[%d].bind: %q: want an IP address", gw.Key(), gw.Source, i, b)
			}
			if httpPorts[n] {
				continue // an HTTP server has the port; Istio also keeps one protocol per port
			}
			byPort[n] = append(byPort[n], gatewayServer{gw: gw, index: i, server: srv})
		}
	}
	ports := make([]uint32, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, p)
	}
	slices.Sort(ports)

	byName := map[string]*l4Listener{}
	var order []string
	for _, port := range ports {
		for _, s := range byPort[port] {
			ip := s.server.GetBind()
			if ip == "" {
				ip = e.bindIP()
			}
			name := listenerName(ip, port)
			chains, err := e.gatewayServerChains(s, port)
			if err != nil {
				return nil, fmt.Errorf("listener %s: %s servers[%d]: %w", name, s.gw.Key(), s.index, err)
			}
			ll := byName[name]
			if ll == nil {
				ll = &l4Listener{keys: map[string]bool{}, l: &listenerv3.Listener{
					Name:             name,
					Address:          socketAddress(ip, port),
					TrafficDirection: corev3.TrafficDirection_OUTBOUND,
				}}
				byName[name] = ll
				order = append(order, name)
			}
			ll.tls = ll.tls || strings.EqualFold(s.server.GetPort().GetProtocol(), "TLS")
			ll.add(chains)
		}
	}
	sort.Strings(order)
	var out []*listenerv3.Listener
	for _, n := range order {
		ll := byName[n]
		if len(ll.l.FilterChains) == 0 {
			continue
		}
		if err := ll.finish(); err != nil {
			return nil, fmt.Errorf("listener %s: %w", n, err)
		}
		out = append(out, ll.l)
	}
	return out, nil
}

// gatewayServerChains are one server's chains, from the VirtualServices bound to its Gateway.
func (e *env) gatewayServerChains(s gatewayServer, port uint32) ([]*listenerv3.FilterChain, error) {
	gwRef := []string{s.gw.Namespace + "/" + s.gw.Name}
	tls := strings.EqualFold(s.server.GetPort().GetProtocol(), "TLS")
	var chains []l4Chain
	handled := map[string]bool{}
	for _, vs := range e.snap.Config.VirtualServices {
		if !boundToGateway(vs, s.gw) || !e.serverAdmitsAny(s, vs) {
			continue
		}
		if !tls {
			for _, r := range vs.Spec.GetTcp() {
				applies := len(r.GetMatch()) == 0
				for _, m := range r.GetMatch() {
					applies = applies || e.l4MatchApplies(vs, m.GetGateways(), m.GetSourceLabels(), m.GetSourceNamespace(), m.GetPort(), port, gwRef)
				}
				if applies {
					chains = append(chains, l4Chain{routes: r.GetRoute(), vsNS: vs.Namespace})
					return e.buildL4Chains(chains, port) // the first route that applies has the server
				}
			}
			continue
		}
		for _, r := range vs.Spec.GetTls() {
			for _, m := range r.GetMatch() {
				if !e.l4MatchApplies(vs, m.GetGateways(), m.GetSourceLabels(), m.GetSourceNamespace(), m.GetPort(), port, gwRef) {
					continue
				}
				var sni []string
				for _, h := range m.GetSniHosts() {
					if host, ok := serverAdmits(s.server.GetHosts(), s.gw.Namespace, vs.Namespace, h); ok {
						sni = append(sni, host)
					}
				}
				if len(sni) == 0 {
					continue
				}
				key := strings.Join(sni, ",") + "|" + strings.Join(m.GetDestinationSubnets(), ",")
				if handled[key] {
					continue
				}
				handled[key] = true
				chains = append(chains, l4Chain{sniHosts: sni, subnets: m.GetDestinationSubnets(), routes: r.GetRoute(), vsNS: vs.Namespace})
			}
		}
	}
	return e.buildL4Chains(chains, port)
}

// serverAdmitsAny reports whether one of vs's hosts is admitted by the server's hosts.
func (e *env) serverAdmitsAny(s gatewayServer, vs *model.VirtualService) bool {
	for _, h := range vs.Spec.GetHosts() {
		if _, ok := serverAdmits(s.server.GetHosts(), s.gw.Namespace, vs.Namespace, model.ResolveHost(h, vs.Namespace)); ok {
			return true
		}
	}
	return false
}

func (e *env) buildL4Chains(chains []l4Chain, port uint32) ([]*listenerv3.FilterChain, error) {
	out := make([]*listenerv3.FilterChain, 0, len(chains))
	for _, c := range chains {
		fc, err := e.l4FilterChain(c, port)
		if err != nil {
			return nil, err
		}
		out = append(out, fc)
	}
	return out, nil
}

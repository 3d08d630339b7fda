package translate

import (
	"fmt"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/internal/model"
)

// loadAssignment is the EDS resource of one cluster: the service's
// endpoints that carry the subset's labels. A cluster with no endpoints
// still gets an empty one, so the proxy does not wait for it forever.
func (e *env) loadAssignment(cluster string, svc *model.Service, port *model.Port, subsetLabels map[string]string) (*endpointv3.ClusterLoadAssignment, error) {
	groups, err := e.localityEndpoints(svc, port, subsetLabels)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cluster, err)
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: groups}, nil
}

// localityEndpoints groups the matching endpoints by locality, localities
// sorted by their "region/zone/subzone" string, endpoints in registry order.
func (e *env) localityEndpoints(svc *model.Service, port *model.Port, subsetLabels map[string]string) ([]*endpointv3.LocalityLbEndpoints, error) {
	byLocality := map[string]*endpointv3.LocalityLbEndpoints{}
	var keys []string
	for i, ep := range svc.Endpoints {
		if !model.LabelsMatch(subsetLabels, ep.Labels) {
			continue
		}
		addr, err := endpointSocket(ep, port)
		if err != nil {
			return nil, fmt.Errorf("%s: endpoints[%d]: %w", serviceRef(svc), i, err)
		}
		g, ok := byLocality[ep.Locality]
		if !ok {
			g = &endpointv3.LocalityLbEndpoints{Locality: parseLocality(ep.Locality)}
			byLocality[ep.Locality] = g
			keys = append(keys, ep.Locality)
		}
		lb := lbEndpoint(addr, ep.Weight)
		lb.Metadata = istioEndpointMetadata(ep)
		addTLSModeMetadata(lb, e.snap, ep, ep.PortFor(port)) // mtls.go
		g.LbEndpoints = append(g.LbEndpoints, lb)
	}
	sort.Strings(keys)
	out := make([]*endpointv3.LocalityLbEndpoints, 0, len(keys))
	for _, k := range keys {
		out = append(out, byLocality[k])
	}
	return out, nil
}

// endpointSocket is where a proxy reaches ep for the service port: the
// WorkloadEntry address (in local mode, that workload's own proxy) at the
// port the endpoint serves it on.
func endpointSocket(ep *model.Endpoint, port *model.Port) (*corev3.Address, error) {
	if path, ok := strings.CutPrefix(ep.Address, "unix://"); ok {
		if path == "" {
			return nil, fmt.Errorf("address %q: empty unix socket path", ep.Address)
		}
		return pipeAddress(path), nil
	}
	if ep.Address == "" {
		return nil, fmt.Errorf("address: must not be empty")
	}
	return socketAddress(ep.Address, ep.PortFor(port)), nil
}

func lbEndpoint(addr *corev3.Address, weight uint32) *endpointv3.LbEndpoint {
	lb := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
		Endpoint: &endpointv3.Endpoint{Address: addr},
	}}
	if weight > 0 {
		lb.LoadBalancingWeight = wrapperspb.UInt32(weight)
	}
	return lb
}

// parseLocality reads Istio's "region/zone/subzone" (any suffix may be
// missing); nil for an empty string.
func parseLocality(s string) *corev3.Locality {
	if s == "" {
		return nil
	}
	parts := strings.SplitN(s, "/", 3)
	l := &corev3.Locality{Region: parts[0]}
	if len(parts) > 1 {
		l.Zone = parts[1]
	}
	if len(parts) > 2 {
		l.SubZone = parts[2]
	}
	return l
}

// serviceRef names the resource a service came from, for error messages.
func serviceRef(svc *model.Service) string {
	if svc.Entry == nil {
		return "service " + svc.Hostname
	}
	return fmt.Sprintf("%s (%s)", svc.Entry.Key(), svc.Entry.Source)
}

package xdsclient

import (
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// resourceWrapperType is the envelope a server may put around each resource (it carries TTLs and
// per-resource versions); the client unwraps it and judges the resource inside.
const resourceWrapperType = "type.googleapis.com/envoy.service.discovery.v3.Resource"

func newResource(typeURL string) proto.Message {
	switch typeURL {
	case ListenerType:
		return &listenerv3.Listener{}
	case RouteType:
		return &routev3.RouteConfiguration{}
	case ClusterType:
		return &clusterv3.Cluster{}
	case EndpointType:
		return &endpointv3.ClusterLoadAssignment{}
	}
	return nil
}

// ResourceName is the name xDS identifies a resource by: cluster_name for a
// ClusterLoadAssignment, name for the others; "" for other types.
func ResourceName(m proto.Message) string {
	switch r := m.(type) {
	case *listenerv3.Listener:
		return r.GetName()
	case *routev3.RouteConfiguration:
		return r.GetName()
	case *clusterv3.Cluster:
		return r.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	}
	return ""
}

// decode unmarshals and validates every resource of a typeURL response, keyed by name. Any problem
// rejects the whole response, as Envoy does: applying part of a state-of-the-world update would
// leave the proxy in a state the control plane never described.
func decode(typeURL string, anys []*anypb.Any) (map[string]proto.Message, error) {
	if !knownType(typeURL) {
		return nil, fmt.Errorf("unsupported resource type %q", typeURL)
	}
	kind := shortType(typeURL)
	out := make(map[string]proto.Message, len(anys))
	for i, a := range anys {
		if a.GetTypeUrl() == resourceWrapperType {
			var wrapper discoveryv3.Resource
			if err := anypb.UnmarshalTo(a, &wrapper, proto.UnmarshalOptions{}); err != nil {
				return nil, fmt.Errorf("%s response: resource %d: unmarshal Resource wrapper: %w", kind, i, err)
			}
			if wrapper.GetResource() == nil {
				return nil, fmt.Errorf("%s response: resource %d (%q): Resource wrapper without a resource", kind, i, wrapper.GetName())
			}
			a = wrapper.GetResource()
		}
		if a.GetTypeUrl() != typeURL {
			return nil, fmt.Errorf("%s response: resource %d has type %q", kind, i, a.GetTypeUrl())
		}
		m := newResource(typeURL)
		if err := anypb.UnmarshalTo(a, m, proto.UnmarshalOptions{}); err != nil {
			return nil, fmt.Errorf("%s response: resource %d: unmarshal: %w", kind, i, err)
		}
		name := ResourceName(m)
		if name == "" {
			return nil, fmt.Errorf("%s response: resource %d has no name", kind, i)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s response: duplicate %s %q", kind, kind, name)
		}
		// The generated protoc-gen-validate rules are what Envoy checks before it accepts a resource.
		if v, ok := m.(interface{ Validate() error }); ok {
			if err := v.Validate(); err != nil {
				return nil, fmt.Errorf("%s %q: %w", kind, name, err)
			}
		}
		out[name] = m
	}
	return out, nil
}

// sameResources reports whether two name→resource sets hold equal resources.
func sameResources(a, b map[string]proto.Message) bool {
	if len(a) != len(b) {
		return false
	}
	for name, m := range a {
		other, ok := b[name]
		if !ok || !proto.Equal(m, other) {
			return false
		}
	}
	return true
}

// sortedResources lists a set by name, so the Watcher sees a stable order.
func sortedResources(set map[string]proto.Message) []proto.Message {
	names := make([]string, 0, len(set))
	for name := range set {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make([]proto.Message, len(names))
	for i, name := range names {
		out[i] = set[name]
	}
	return out
}

// normalizeNames sorts and dedupes a subscription, dropping empty names, so equal sets compare equal.
func normalizeNames(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if n != "" {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		return nil
	}
	return out
}

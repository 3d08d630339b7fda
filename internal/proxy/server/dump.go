package server

import (
	"fmt"
	"slices"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ConfigDump returns the proxy's configuration in the shape of Envoy's /config_dump: bootstrap,
// clusters, listeners, routes and endpoints sections, static and dynamic, with each dynamic
// resource's version and time of last update, and the last rejected version of LDS/CDS resources
// as error_state.
func (p *Proxy) ConfigDump() (*adminv3.ConfigDump, error) {
	// Versions come from the xDS client; ask before taking our lock so the two never nest.
	versions := map[string]string{}
	if p.versions != nil {
		for _, t := range []string{ListenerType, RouteType, ClusterType, EndpointType} {
			versions[t] = p.versions(t)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	sections := []proto.Message{
		p.bootstrapDumpLocked(),
		p.clustersDumpLocked(versions[ClusterType]),
		p.listenersDumpLocked(versions[ListenerType]),
		p.routesDumpLocked(versions[RouteType]),
		p.endpointsDumpLocked(versions[EndpointType]),
	}
	if p.secretsDump != nil {
		// Envoy's order puts secrets last.
		sections = append(sections, p.secretsDump())
	}
	out := &adminv3.ConfigDump{}
	for _, s := range sections {
		a, err := anypb.New(s)
		if err != nil {
			return nil, fmt.Errorf("config dump: %w", err)
		}
		out.Configs = append(out.Configs, a)
	}
	return out, nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// mustAny wraps a resource proto; they are all registered types, so this cannot fail.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("config dump: %v", err))
	}
	return a
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (p *Proxy) bootstrapDumpLocked() *adminv3.BootstrapConfigDump {
	b := p.bootstrap
	if b == nil {
		b = &bootstrapv3.Bootstrap{}
	}
	return &adminv3.BootstrapConfigDump{Bootstrap: b, LastUpdated: ts(p.bootLoaded)}
}

func (p *Proxy) failureState(typeURL, name string) *adminv3.UpdateFailureState {
	f := p.failures[typeURL][name]
	if f == nil {
		return nil
	}
	return &adminv3.UpdateFailureState{
		FailedConfiguration: mustAny(f.raw),
		LastUpdateAttempt:   ts(f.at),
		Details:             f.details,
	}
}

func (p *Proxy) clustersDumpLocked(version string) *adminv3.ClustersConfigDump {
	d := &adminv3.ClustersConfigDump{VersionInfo: version}
	for _, name := range sortedKeys(p.static.clusters) {
		e := p.static.clusters[name]
		d.StaticClusters = append(d.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{
			Cluster: mustAny(e.raw), LastUpdated: ts(e.updated),
		})
	}
	for _, name := range sortedKeys(p.dynamic.clusters) {
		e := p.dynamic.clusters[name]
		d.DynamicActiveClusters = append(d.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: version, Cluster: mustAny(e.raw), LastUpdated: ts(e.updated),
			ErrorState: p.failureState(ClusterType, name),
		})
	}
	return d
}

func (p *Proxy) listenersDumpLocked(version string) *adminv3.ListenersConfigDump {
	d := &adminv3.ListenersConfigDump{VersionInfo: version}
	for _, name := range sortedKeys(p.static.listeners) {
		e := p.static.listeners[name]
		d.StaticListeners = append(d.StaticListeners, &adminv3.ListenersConfigDump_StaticListener{
			Listener: mustAny(e.raw), LastUpdated: ts(e.updated),
		})
	}
	names := sortedKeys(p.dynamic.listeners)
	for name := range p.failures[ListenerType] {
		if _, ok := p.dynamic.listeners[name]; !ok {
			names = append(names, name) // rejected before it was ever accepted
		}
	}
	slices.Sort(names)
	for _, name := range names {
		dl := &adminv3.ListenersConfigDump_DynamicListener{Name: name, ErrorState: p.failureState(ListenerType, name)}
		if e := p.dynamic.listeners[name]; e != nil {
			dl.ActiveState = &adminv3.ListenersConfigDump_DynamicListenerState{
				VersionInfo: version, Listener: mustAny(e.raw), LastUpdated: ts(e.updated),
			}
		}
		d.DynamicListeners = append(d.DynamicListeners, dl)
	}
	return d
}

func (p *Proxy) routesDumpLocked(version string) *adminv3.RoutesConfigDump {
	d := &adminv3.RoutesConfigDump{}
	// Inline route configs of listeners are Envoy's static route configs.
	for _, set := range []map[string]*listenerEntry{p.static.listeners, p.dynamic.listeners} {
		for _, name := range sortedKeys(set) {
			e := set[name]
			for _, fc := range e.raw.GetFilterChains() {
				for _, f := range fc.GetFilters() {
					var h hcmv3.HttpConnectionManager
					if f.GetTypedConfig().UnmarshalTo(&h) != nil || h.GetRouteConfig() == nil {
						continue
					}
					d.StaticRouteConfigs = append(d.StaticRouteConfigs, &adminv3.RoutesConfigDump_StaticRouteConfig{
						RouteConfig: mustAny(h.GetRouteConfig()), LastUpdated: ts(e.updated),
					})
				}
			}
		}
	}
	for _, name := range sortedKeys(p.dynamic.routes) {
		e := p.dynamic.routes[name]
		d.DynamicRouteConfigs = append(d.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
			VersionInfo: version, RouteConfig: mustAny(e.raw), LastUpdated: ts(e.updated),
		})
	}
	return d
}

func (p *Proxy) endpointsDumpLocked(version string) *adminv3.EndpointsConfigDump {
	d := &adminv3.EndpointsConfigDump{}
	for _, name := range sortedKeys(p.static.clusters) {
		e := p.static.clusters[name]
		la := e.raw.GetLoadAssignment()
		if la == nil {
			continue
		}
		if la.GetClusterName() != name {
			la = proto.Clone(la).(*endpointv3.ClusterLoadAssignment)
			la.ClusterName = name
		}
		d.StaticEndpointConfigs = append(d.StaticEndpointConfigs, &adminv3.EndpointsConfigDump_StaticEndpointConfig{
			EndpointConfig: mustAny(la), LastUpdated: ts(e.updated),
		})
	}
	for _, name := range sortedKeys(p.dynamic.endpoints) {
		e := p.dynamic.endpoints[name]
		d.DynamicEndpointConfigs = append(d.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
			VersionInfo: version, EndpointConfig: mustAny(e.raw), LastUpdated: ts(e.updated),
		})
	}
	return d
}

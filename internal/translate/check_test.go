package translate

import (
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

type validator interface{ Validate() error }

// proxyAccepts feeds every resource to trellis-proxy's own xDS conversion,
// which NACKs whatever the proxy cannot honour: a golden file must never
// bless config the mesh's data plane would reject.
func proxyAccepts(t *testing.T, r *Resources) {
	t.Helper()
	for _, l := range r.Listeners {
		if _, err := xdsconfig.ParseListener(l); err != nil {
			t.Errorf("trellis-proxy rejects listener %s: %v", l.GetName(), err)
		}
	}
	for _, rc := range r.Routes {
		if _, err := xdsconfig.ParseRouteConfiguration(rc); err != nil {
			t.Errorf("trellis-proxy rejects route %s: %v", rc.GetName(), err)
		}
	}
	for _, c := range r.Clusters {
		if _, err := xdsconfig.ParseCluster(c); err != nil {
			t.Errorf("trellis-proxy rejects cluster %s: %v", c.GetName(), err)
		}
	}
	for _, cla := range r.Endpoints {
		if _, err := xdsconfig.ParseLoadAssignment(cla); err != nil {
			t.Errorf("trellis-proxy rejects endpoints %s: %v", cla.GetClusterName(), err)
		}
	}
}

// validateAll runs go-control-plane's Validate() on every resource and on
// the typed configs packed inside them (Validate does not look into Any).
func validateAll(t *testing.T, r *Resources) {
	t.Helper()
	check := func(what string, m proto.Message) {
		t.Helper()
		v, ok := m.(validator)
		if !ok {
			t.Fatalf("%s: %T has no Validate method", what, m)
		}
		if err := v.Validate(); err != nil {
			t.Errorf("%s: Validate: %v", what, err)
		}
	}
	unpack := func(what string, a *anypb.Any) proto.Message {
		t.Helper()
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("%s: unpack %s: %v", what, a.GetTypeUrl(), err)
		}
		check(what, m)
		return m
	}
	for _, l := range r.Listeners {
		check("listener "+l.GetName(), l)
		for _, lf := range l.GetListenerFilters() {
			unpack("listener "+l.GetName()+" listener filter "+lf.GetName(), lf.GetTypedConfig())
		}
		for _, fc := range l.GetFilterChains() {
			if ts := fc.GetTransportSocket(); ts != nil {
				unpack("listener "+l.GetName()+" transport socket", ts.GetTypedConfig())
			}
			for _, f := range fc.GetFilters() {
				m := unpack("listener "+l.GetName()+" filter "+f.GetName(), f.GetTypedConfig())
				h, ok := m.(*hcmv3.HttpConnectionManager)
				if !ok {
					continue
				}
				for _, hf := range h.GetHttpFilters() {
					unpack("listener "+l.GetName()+" http filter "+hf.GetName(), hf.GetTypedConfig())
				}
			}
		}
	}
	for _, rc := range r.Routes {
		check("route "+rc.GetName(), rc)
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				for name, a := range rt.GetTypedPerFilterConfig() {
					unpack("route "+rc.GetName()+" "+vh.GetName()+" "+rt.GetName()+" "+name, a)
				}
			}
		}
	}
	for _, c := range r.Clusters {
		check("cluster "+c.GetName(), c)
		if ts := c.GetTransportSocket(); ts != nil {
			unpack("cluster "+c.GetName()+" transport socket", ts.GetTypedConfig())
		}
		for _, m := range c.GetTransportSocketMatches() {
			unpack("cluster "+c.GetName()+" transport socket match "+m.GetName(), m.GetTransportSocket().GetTypedConfig())
		}
		for name, a := range c.GetTypedExtensionProtocolOptions() {
			unpack("cluster "+c.GetName()+" "+name, a)
		}
	}
	for _, cla := range r.Endpoints {
		check("endpoints "+cla.GetClusterName(), cla)
	}
}

// checkConsistent asserts what Envoy (and go-control-plane's
// Snapshot.Consistent) needs beyond per-resource validity: unique names,
// RDS names that exist, route clusters that exist, and a load assignment
// for each EDS cluster and only for those.
func checkConsistent(t *testing.T, r *Resources) {
	t.Helper()
	// The xDS server runs the same check before a snapshot is served.
	snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{
		resource.ListenerType: resourcesOf(r.Listeners),
		resource.RouteType:    resourcesOf(r.Routes),
		resource.ClusterType:  resourcesOf(r.Clusters),
		resource.EndpointType: resourcesOf(r.Endpoints),
	})
	if err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	if err := snap.Consistent(); err != nil {
		t.Errorf("go-control-plane Snapshot.Consistent: %v", err)
	}

	routes := map[string]*routev3.RouteConfiguration{}
	for _, rc := range r.Routes {
		if routes[rc.GetName()] != nil {
			t.Errorf("route config %q appears twice", rc.GetName())
		}
		routes[rc.GetName()] = rc
	}
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range r.Clusters {
		if clusters[c.GetName()] != nil {
			t.Errorf("cluster %q appears twice", c.GetName())
		}
		clusters[c.GetName()] = c
	}
	clas := map[string]bool{}
	for _, cla := range r.Endpoints {
		name := cla.GetClusterName()
		if clas[name] {
			t.Errorf("load assignment %q appears twice", name)
		}
		clas[name] = true
		if c := clusters[name]; c == nil || c.GetType() != clusterv3.Cluster_EDS {
			t.Errorf("load assignment %q names no EDS cluster", name)
		}
	}
	for _, c := range r.Clusters {
		if c.GetType() != clusterv3.Cluster_EDS {
			continue
		}
		if sn := c.GetEdsClusterConfig().GetServiceName(); sn != c.GetName() || !clas[sn] {
			t.Errorf("EDS cluster %q: service_name %q has no load assignment", c.GetName(), sn)
		}
	}

	checkRoutes := func(rc *routev3.RouteConfiguration) {
		t.Helper()
		domains := map[string]string{}
		for _, vh := range rc.GetVirtualHosts() {
			for _, d := range vh.GetDomains() {
				if other, dup := domains[d]; dup {
					t.Errorf("route %s: domain %q in virtual hosts %s and %s", rc.GetName(), d, other, vh.GetName())
				}
				domains[d] = vh.GetName()
			}
			for _, rt := range vh.GetRoutes() {
				a := rt.GetRoute()
				if a == nil {
					continue // a redirect or direct response names no cluster
				}
				names := []string{a.GetCluster()}
				if wc := a.GetWeightedClusters(); wc != nil {
					names = nil
					for _, cw := range wc.GetClusters() {
						names = append(names, cw.GetName())
					}
				}
				for _, mp := range a.GetRequestMirrorPolicies() {
					names = append(names, mp.GetCluster())
				}
				for _, n := range names {
					if clusters[n] == nil {
						t.Errorf("route %s: virtual host %s: route %q: cluster %q does not exist", rc.GetName(), vh.GetName(), rt.GetName(), n)
					}
				}
			}
		}
	}
	referenced := map[string]bool{}
	for _, l := range r.Listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				h := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().MessageIs(h) {
					if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
						t.Fatal(err)
					}
				}
				if inline := h.GetRouteConfig(); inline != nil {
					checkRoutes(inline)
				}
				if name := h.GetRds().GetRouteConfigName(); name != "" {
					referenced[name] = true
					if routes[name] == nil {
						t.Errorf("listener %s: RDS route config %q does not exist", l.GetName(), name)
					}
				}
			}
		}
	}
	for _, rc := range r.Routes {
		checkRoutes(rc)
		if !referenced[rc.GetName()] {
			t.Errorf("route config %q is not used by any listener", rc.GetName())
		}
	}
}

func resourcesOf[M types.Resource](in []M) []types.Resource {
	out := make([]types.Resource, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

package xds

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// stubTranslator is a tiny stand-in for internal/translate: one EDS cluster
// per service port, one outbound listener and route config, with switches
// to make it fail for chosen proxies.
type stubTranslator struct {
	mu      sync.Mutex
	failFor map[string]error // proxy ID → error to return
	badFor  map[string]bool  // proxy ID → emit a cluster that fails Validate()
	block   chan struct{}    // if set, every call waits on it
	calls   atomic.Int64
}

func newStub() *stubTranslator {
	return &stubTranslator{failFor: map[string]error{}, badFor: map[string]bool{}}
}

func (st *stubTranslator) setFail(id string, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if err == nil {
		delete(st.failFor, id)
	} else {
		st.failFor[id] = err
	}
}

func (st *stubTranslator) setBad(id string, bad bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.badFor[id] = bad
}

func (st *stubTranslator) translate(snap *model.Snapshot, p *model.Proxy) (*Resources, error) {
	st.calls.Add(1)
	st.mu.Lock()
	err, bad, block := st.failFor[p.ID], st.badFor[p.ID], st.block
	st.mu.Unlock()
	if block != nil {
		<-block
	}
	if err != nil {
		return nil, err
	}
	res := &Resources{}
	vhosts := []*routev3.VirtualHost{}
	for _, svc := range snap.Services {
		for _, port := range svc.Ports {
			name := fmt.Sprintf("outbound|%d||%s", port.Number, svc.Hostname)
			res.Clusters = append(res.Clusters, edsCluster(name))
			res.Endpoints = append(res.Endpoints, stubCLA(svc, port))
			vhosts = append(vhosts, &routev3.VirtualHost{
				Name:    fmt.Sprintf("%s:%d", svc.Hostname, port.Number),
				Domains: []string{fmt.Sprintf("%s:%d", svc.Hostname, port.Number)},
				Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}},
				}},
			})
		}
	}
	if bad {
		c := edsCluster("outbound|1||bad.default.svc.cluster.local")
		c.ConnectTimeout = durationpb.New(-time.Second)
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		c.EdsClusterConfig = nil
		res.Clusters = append(res.Clusters, c)
	}
	res.Routes = []*routev3.RouteConfiguration{{Name: "15001", VirtualHosts: vhosts}}
	res.Listeners = []*listenerv3.Listener{outboundListener(p.IP)}
	return res, nil
}

// stubCLA is the stub's endpoints of one service port.
func stubCLA(svc *model.Service, port *model.Port) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: fmt.Sprintf("outbound|%d||%s", port.Number, svc.Hostname)}
	var lbs []*endpointv3.LbEndpoint
	for _, ep := range svc.Endpoints {
		lbs = append(lbs, lbEndpoint(ep.Address, ep.PortFor(port)))
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
	return cla
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
	}
}

func lbEndpoint(ip string, port uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: socketAddress(ip, port),
	}}}
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func outboundListener(ip string) *listenerv3.Listener {
	router, _ := anypb.New(&routerv3.Router{})
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "outbound_0.0.0.0_15001",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource(), RouteConfigName: "15001",
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: wellknown.Router, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		panic(err)
	}
	return &listenerv3.Listener{
		Name:    "virtualOutbound",
		Address: socketAddress(ip, 15001),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       wellknown.HTTPConnectionManager,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}}}},
	}
}

// meshSnapshot builds a mesh of reviews and ratings services; the extra
// reviews endpoint IPs let a test change one service only.
func meshSnapshot(reviewsIPs ...string) *model.Snapshot {
	se := func(host string, ips ...string) *model.ServiceEntry {
		spec := &networking.ServiceEntry{
			Hosts:      []string{host},
			Location:   networking.ServiceEntry_MESH_INTERNAL,
			Resolution: networking.ServiceEntry_STATIC,
			Ports:      []*networking.ServicePort{{Name: "http", Number: 9080, Protocol: "HTTP"}},
		}
		for _, ip := range ips {
			spec.Endpoints = append(spec.Endpoints, &networking.WorkloadEntry{Address: ip})
		}
		return &model.ServiceEntry{Meta: model.Meta{Kind: "ServiceEntry", Namespace: "default", Name: host}, Spec: spec}
	}
	return model.NewSnapshot(&model.Config{ServiceEntries: []*model.ServiceEntry{
		se("ratings.default.svc.cluster.local", "127.0.1.5"),
		se("reviews.default.svc.cluster.local", reviewsIPs...),
	}})
}

var errStub = errors.New("stub: translation refused")

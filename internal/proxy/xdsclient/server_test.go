package xdsclient

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

const testNodeID = "sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local"

// xdsServer is a real go-control-plane ADS server on a loopback port, recording what it sees.
type xdsServer struct {
	addr  string
	cache cachev3.SnapshotCache
	grpc  *grpc.Server

	mu        sync.Mutex
	requests  []*discoveryv3.DiscoveryRequest  // as the server's callbacks see them
	wire      []*discoveryv3.DiscoveryRequest  // as they came over the wire
	responses []*discoveryv3.DiscoveryResponse // as sent
}

// recordingStream captures requests before go-control-plane fills in the node they may lack.
type recordingStream struct {
	grpc.ServerStream
	s *xdsServer
}

func (r recordingStream) RecvMsg(m any) error {
	err := r.ServerStream.RecvMsg(m)
	if req, ok := m.(*discoveryv3.DiscoveryRequest); ok && err == nil {
		r.s.mu.Lock()
		r.s.wire = append(r.s.wire, proto.Clone(req).(*discoveryv3.DiscoveryRequest))
		r.s.mu.Unlock()
	}
	return err
}

// startServer serves cache on addr ("127.0.0.1:0" for a fresh port); it is stopped at test end.
func startServer(t *testing.T, addr string, cache cachev3.SnapshotCache) *xdsServer {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	s := &xdsServer{addr: lis.Addr().String(), cache: cache}
	s.grpc = grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, recordingStream{ServerStream: ss, s: s})
	}))
	ctx, cancel := context.WithCancel(context.Background())
	srv := serverv3.NewServer(ctx, cache, serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, req *discoveryv3.DiscoveryRequest) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.requests = append(s.requests, proto.Clone(req).(*discoveryv3.DiscoveryRequest))
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.responses = append(s.responses, proto.Clone(resp).(*discoveryv3.DiscoveryResponse))
		},
	})
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.grpc, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.grpc.Serve(lis)
	}()
	t.Cleanup(func() {
		s.stop()
		cancel()
		<-done
	})
	return s
}

func (s *xdsServer) stop() { s.grpc.Stop() }

func (s *xdsServer) setSnapshot(t *testing.T, snap *cachev3.Snapshot) {
	t.Helper()
	if err := s.cache.SetSnapshot(context.Background(), testNodeID, snap); err != nil {
		t.Fatalf("set snapshot: %v", err)
	}
}

func (s *xdsServer) seenRequests() []*discoveryv3.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

func (s *xdsServer) wireRequests() []*discoveryv3.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.wire)
}

// firstNonceOf returns the nonce of the first response of typeURL at version, or "".
func (s *xdsServer) firstNonceOf(typeURL, version string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.responses {
		if r.GetTypeUrl() == typeURL && r.GetVersionInfo() == version {
			return r.GetNonce()
		}
	}
	return ""
}

// nonceOf returns the nonce of the last response of typeURL at version, or "".
func (s *xdsServer) nonceOf(typeURL, version string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.responses) - 1; i >= 0; i-- {
		r := s.responses[i]
		if r.GetTypeUrl() == typeURL && r.GetVersionInfo() == version {
			return r.GetNonce()
		}
	}
	return ""
}

// findRequest returns the index of the first request matching match, or -1.
func (s *xdsServer) findRequest(match func(*discoveryv3.DiscoveryRequest) bool) int {
	return slices.IndexFunc(s.seenRequests(), match)
}

// isACK matches the ACK of the response of typeURL at version.
func (s *xdsServer) isACK(typeURL, version string) func(*discoveryv3.DiscoveryRequest) bool {
	return func(r *discoveryv3.DiscoveryRequest) bool {
		nonce := s.nonceOf(typeURL, version)
		return r.GetTypeUrl() == typeURL && r.GetVersionInfo() == version && nonce != "" &&
			r.GetResponseNonce() == nonce && r.GetErrorDetail() == nil
	}
}

// waitFor polls cond until it holds, failing the test after a few seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mesh describes a snapshot: clusters (each with a CLA of one endpoint on port), and one listener
// using route config "r1".
type mesh struct {
	version  string
	clusters []string
	port     uint32
	// extraClusters are added to CDS as they are (an invalid one, say).
	extraClusters []types.Resource
}

func (m mesh) snapshot(t *testing.T) *cachev3.Snapshot {
	t.Helper()
	port := m.port
	if port == 0 {
		port = 9080
	}
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	var clusters, clas []types.Resource
	for _, name := range m.clusters {
		clusters = append(clusters, &clusterv3.Cluster{
			Name:                 name,
			ConnectTimeout:       durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
		})
		clas = append(clas, &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: socketAddress("127.0.1.2", port),
				}},
			}}}},
		})
	}
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		t.Fatal(err)
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "outbound",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: "r1", ConfigSource: ads,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	listeners := []types.Resource{&listenerv3.Listener{
		Name:    "virtualOutbound",
		Address: socketAddress("127.0.1.3", 15001),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}}}},
	}}
	clusters = append(clusters, m.extraClusters...)
	route := &routev3.RouteConfiguration{Name: "r1", VirtualHosts: []*routev3.VirtualHost{{
		Name: "reviews", Domains: []string{"reviews:9080"},
		Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c1"}}},
		}},
	}}}
	snap, err := cachev3.NewSnapshot(m.version, map[string][]types.Resource{
		ClusterType:  clusters,
		EndpointType: clas,
		ListenerType: listeners,
		RouteType:    {route},
	})
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return snap
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

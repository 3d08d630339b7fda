package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
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
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// The end-to-end test runs a real go-control-plane ADS server (test code only: the proxy itself must
// not depend on it) and checks a proxy started with Run follows its pushes.

const e2eNode = "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local"

func startControlPlane(t *testing.T) (cachev3.SnapshotCache, string) {
	t.Helper()
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	srv := serverv3.NewServer(ctx, cache, nil)
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(func() {
		g.Stop()
		cancel()
	})
	return cache, ln.Addr().String()
}

func sockAddr(hostport string) *corev3.Address {
	host, port, _ := net.SplitHostPort(hostport)
	n, _ := strconv.Atoi(port)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}
}

// meshSnapshot is what a control plane would send a sidecar in local mode: virtualOutbound on
// listenerAddr, RDS "15001" sending reviews:9080 to the cluster of the given version.
func meshSnapshot(t *testing.T, version, listenerAddr, reviewsVersion string, backends map[string]string) *cachev3.Snapshot {
	t.Helper()
	router, _ := anypb.New(&routerv3.Router{})
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "outbound_0.0.0.0_15001",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "15001",
			ConfigSource: &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	l := &listenerv3.Listener{Name: "virtualOutbound", Address: sockAddr(listenerAddr),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}}}
	var clusters, endpoints []types.Resource
	for _, v := range []string{"v1", "v2"} {
		name := "outbound|9080|" + v + "|reviews.default.svc.cluster.local"
		clusters = append(clusters, &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}})
		endpoints = append(endpoints, &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(backends[v])}}}},
		}}})
	}
	rc := &routev3.RouteConfiguration{Name: "15001", VirtualHosts: []*routev3.VirtualHost{{
		Name: "reviews.default.svc.cluster.local:9080", Domains: []string{"reviews.default.svc.cluster.local:9080", "reviews:9080"},
		Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{
				Cluster: "outbound|9080|" + reviewsVersion + "|reviews.default.svc.cluster.local"}}}}},
	}}}
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {l}, resourcev3.RouteType: {rc}, resourcev3.ClusterType: clusters, resourcev3.EndpointType: endpoints,
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestProxyFollowsControlPlanePushes(t *testing.T) {
	cache, xdsAddr := startControlPlane(t)
	backends := map[string]string{}
	for _, v := range []string{"v1", "v2"} {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "reviews-"+v) })}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		backends[v] = ln.Addr().String()
	}
	// A fixed port for the listener, since the control plane names it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listenerAddr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			XDSAddress: xdsAddr, NodeID: e2eNode, Metadata: map[string]string{"INTERCEPTION_MODE": "NONE"},
			AdminAddress: "127.0.0.1:0", DrainDuration: time.Second, Logger: slog.New(slog.DiscardHandler),
			OnStarted: func(a string) { started <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	admin := <-started
	if code, _ := getBody(t, "http://"+admin+"/ready"); code != 503 {
		t.Fatalf("/ready before any config: %d", code)
	}
	if err := cache.SetSnapshot(ctx, e2eNode, meshSnapshot(t, "1", listenerAddr, "v1", backends)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { code, _ := getBody(t, "http://"+admin+"/ready"); return code == 200 })

	proxyURL, _ := url.Parse("http://" + listenerAddr)
	proxyTransport := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
	t.Cleanup(proxyTransport.CloseIdleConnections)
	client := &http.Client{Transport: proxyTransport, Timeout: 5 * time.Second}
	fetch := func() string {
		resp, err := client.Get("http://reviews:9080/reviews/1")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprint(resp.StatusCode, " ", string(b))
	}
	waitFor(t, func() bool { return fetch() == "200 reviews-v1" })

	if err := cache.SetSnapshot(ctx, e2eNode, meshSnapshot(t, "2", listenerAddr, "v2", backends)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return fetch() == "200 reviews-v2" })

	// The new routes can serve before the LDS response of the same push is applied (xDS types
	// arrive on their own), so the listener's version is awaited, not read once.
	var dl []*adminv3.ListenersConfigDump_DynamicListener
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := getBody(t, "http://"+admin+"/config_dump")
		var dump adminv3.ConfigDump
		var listeners adminv3.ListenersConfigDump
		if err := protojson.Unmarshal([]byte(body), &dump); err != nil {
			t.Fatal(err)
		}
		if err := dump.GetConfigs()[2].UnmarshalTo(&listeners); err != nil {
			t.Fatal(err)
		}
		dl = listeners.GetDynamicListeners()
		if len(dl) == 1 && dl[0].GetName() == "virtualOutbound" && dl[0].GetActiveState().GetVersionInfo() == "2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listeners config dump: %v", dl)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, stats := getBody(t, "http://"+admin+"/stats")
	if !strings.Contains(stats, "control_plane.connected_state: 1\n") {
		t.Fatalf("stats:\n%s", stats)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

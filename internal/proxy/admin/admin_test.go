package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy"
	"github.com/trellis-mesh/trellis/internal/proxy/admin"
	"github.com/trellis-mesh/trellis/internal/proxy/server"
)

func addr(hostport string) *corev3.Address {
	host, port, _ := net.SplitHostPort(hostport)
	n, _ := strconv.Atoi(port)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}
}

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type fixture struct {
	proxy     *server.Proxy
	adminBase string
	listener  string
	quit      chan struct{}
	levels    *proxy.LogLevels
}

func setup(t *testing.T) *fixture {
	t.Helper()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(backend.Close)
	log := slog.New(slog.DiscardHandler)
	p := server.New(server.Options{Logger: log, WaitForLDS: true, WaitForCDS: true, Versions: func(typeURL string) string { return "v1" }})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	f := &fixture{proxy: p, quit: make(chan struct{})}
	f.levels = proxy.NewLogLevels(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug - 4}), slog.LevelInfo)
	srv := admin.New(admin.Config{Address: "127.0.0.1:0", Source: p, Stats: p.Stats(), Logger: log, Quit: func() { close(f.quit) },
		Logging: f.levels})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	f.adminBase = "http://" + srv.Addr()

	if code, body := f.get(t, "/ready"); code != 503 || body != "PRE_INITIALIZING\n" {
		t.Fatalf("/ready before config: %d %q", code, body)
	}
	if err := p.ApplyBootstrap(&bootstrapv3.Bootstrap{Node: &corev3.Node{Id: "sidecar~127.0.0.1~a.default~default.svc.cluster.local"}}); err != nil {
		t.Fatal(err)
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "outbound_0.0.0.0_15001",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "15001",
			ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})}}},
	}
	must := func(typeURL string, m ...proto.Message) {
		if err := p.OnResources(typeURL, m); err != nil {
			t.Fatal(err)
		}
	}
	must(server.ClusterType, &clusterv3.Cluster{Name: "outbound|80||backend", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}})
	must(server.EndpointType, &endpointv3.ClusterLoadAssignment{ClusterName: "outbound|80||backend", Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr(backend.Listener.Addr().String())}}}},
	}}})
	must(server.ListenerType, &listenerv3.Listener{Name: "virtualOutbound", Address: addr("127.0.0.1:0"),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}}}}}})
	must(server.RouteType, &routev3.RouteConfiguration{Name: "15001", VirtualHosts: []*routev3.VirtualHost{{Name: "backend", Domains: []string{"*"},
		Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "outbound|80||backend"}}}}}}}})
	f.listener = "http://" + p.Listeners()[0].Address
	return f
}

func (f *fixture) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(f.adminBase + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadyIsLiveOnceLDSAndCDSAreApplied(t *testing.T) {
	f := setup(t)
	if code, body := f.get(t, "/ready"); code != 200 || body != "LIVE\n" {
		t.Fatalf("/ready: %d %q", code, body)
	}
}

func TestConfigDumpHasEnvoysShape(t *testing.T) {
	f := setup(t)
	code, body := f.get(t, "/config_dump")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	// Envoy's JSON field names, checked on the raw text before the round trip through protos.
	for _, want := range []string{`"type.googleapis.com/envoy.admin.v3.ListenersConfigDump"`, `"dynamic_listeners"`,
		`"active_state"`, `"version_info"`, `"dynamic_active_clusters"`, `"dynamic_route_configs"`, `"dynamic_endpoint_configs"`} {
		if !strings.Contains(body, want) {
			t.Errorf("config dump lacks %s", want)
		}
	}
	var dump adminv3.ConfigDump
	if err := protojson.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatal(err)
	}
	var (
		listeners adminv3.ListenersConfigDump
		clusters  adminv3.ClustersConfigDump
		routes    adminv3.RoutesConfigDump
		endpoints adminv3.EndpointsConfigDump
		boot      adminv3.BootstrapConfigDump
	)
	for i, m := range []proto.Message{&boot, &clusters, &listeners, &routes, &endpoints} {
		if err := dump.Configs[i].UnmarshalTo(m); err != nil {
			t.Fatalf("configs[%d]: %v", i, err)
		}
	}
	var l listenerv3.Listener
	if err := listeners.DynamicListeners[0].GetActiveState().GetListener().UnmarshalTo(&l); err != nil || l.GetName() != "virtualOutbound" {
		t.Fatalf("listener %v %v", l.GetName(), err)
	}
	if listeners.DynamicListeners[0].GetName() != "virtualOutbound" || listeners.DynamicListeners[0].GetActiveState().GetVersionInfo() != "v1" {
		t.Fatalf("dynamic listener %v", listeners.DynamicListeners[0])
	}
	if len(clusters.DynamicActiveClusters) != 1 || len(routes.DynamicRouteConfigs) != 1 || len(endpoints.DynamicEndpointConfigs) != 1 {
		t.Fatalf("sections: %d clusters %d routes %d endpoints", len(clusters.DynamicActiveClusters), len(routes.DynamicRouteConfigs), len(endpoints.DynamicEndpointConfigs))
	}
	if boot.GetBootstrap().GetNode().GetId() == "" {
		t.Fatal("bootstrap node missing")
	}
}

func TestStatsCountersMoveWithTraffic(t *testing.T) {
	f := setup(t)
	for range 3 {
		resp, err := http.Get(f.listener + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	_, body := f.get(t, "/stats")
	for _, want := range []string{
		"cluster.outbound|80||backend.upstream_rq_total: 3\n",
		"cluster.outbound|80||backend.upstream_rq_2xx: 3\n",
		"cluster.outbound|80||backend.upstream_cx_total: 1\n",
		"http.outbound_0.0.0.0_15001.downstream_rq_total: 3\n",
		"http.outbound_0.0.0.0_15001.downstream_rq_2xx: 3\n",
		"listener_manager.listener_added: 1\n",
		"listener_manager.lds.update_success: 1\n",
		"cluster_manager.cds.update_success: 1\n",
		"control_plane.rds.update_success: 1\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/stats lacks %q", want)
		}
	}
	_, js := f.get(t, "/stats?format=json&filter=upstream_rq_total")
	var parsed struct {
		Stats []struct {
			Name  string
			Value int64
		}
	}
	if err := json.Unmarshal([]byte(js), &parsed); err != nil || len(parsed.Stats) != 1 || parsed.Stats[0].Value != 3 {
		t.Fatalf("json stats %s (%v)", js, err)
	}
}

func TestClustersAndListenersEndpoints(t *testing.T) {
	f := setup(t)
	_, body := f.get(t, "/clusters")
	if !strings.Contains(body, "outbound|80||backend::127.0.0.1:") || !strings.Contains(body, "::health_flags::healthy") {
		t.Fatalf("/clusters:\n%s", body)
	}
	_, body = f.get(t, "/clusters?format=json")
	var cs adminv3.Clusters
	if err := protojson.Unmarshal([]byte(body), &cs); err != nil || len(cs.ClusterStatuses) != 1 {
		t.Fatalf("/clusters?format=json: %v\n%s", err, body)
	}
	_, body = f.get(t, "/listeners")
	if !strings.HasPrefix(body, "virtualOutbound::127.0.0.1:") {
		t.Fatalf("/listeners: %q", body)
	}
}

func TestQuitQuitQuitRequiresPost(t *testing.T) {
	f := setup(t)
	if code, _ := f.get(t, "/quitquitquit"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /quitquitquit: %d", code)
	}
	resp, err := http.Post(f.adminBase+"/quitquitquit", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case <-f.quit:
	case <-time.After(5 * time.Second):
		t.Fatal("quit not called")
	}
}

func TestPrometheusStatsCarryEnvoyTagsAfterTraffic(t *testing.T) {
	f := setup(t)
	for range 2 {
		resp, err := http.Get(f.listener + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	resp, err := http.Get(f.adminBase + "/stats/prometheus?usedonly")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	for _, want := range []string{
		"# TYPE envoy_cluster_upstream_rq_xx counter\n",
		`envoy_cluster_upstream_rq_xx{envoy_cluster_name="outbound|80||backend",envoy_response_code_class="2"} 2` + "\n",
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|80||backend"} 2` + "\n",
		"# TYPE envoy_listener_manager_listener_added counter\nenvoy_listener_manager_listener_added 1\n",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/stats/prometheus lacks %q", want)
		}
	}
	// usedonly: the 5xx class never counted.
	if strings.Contains(string(body), `envoy_response_code_class="5"`) {
		t.Errorf("usedonly shows an unused counter:\n%s", body)
	}
	if code, _ := f.get(t, "/stats?format=xml"); code != http.StatusBadRequest {
		t.Errorf("/stats?format=xml: %d, want 400", code)
	}
}

func (f *fixture) post(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Post(f.adminBase+path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestGracefulDrainListenersReportsDrainingAndClosesConnections(t *testing.T) {
	f := setup(t)
	if code, _ := f.get(t, "/drain_listeners"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /drain_listeners: %d", code)
	}
	if code, body := f.post(t, "/drain_listeners?graceful"); code != 200 || body != "OK\n" {
		t.Fatalf("POST /drain_listeners?graceful: %d %q", code, body)
	}
	if code, body := f.get(t, "/ready"); code != 503 || body != "DRAINING\n" {
		t.Fatalf("/ready while draining: %d %q", code, body)
	}
	// Within the drain period (the server's default, 5s) the listener still serves, closing each
	// connection after its response.
	resp, err := http.Get(f.listener + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("request during the drain period: %d, Connection: close %v", resp.StatusCode, resp.Close)
	}
}

func TestDrainListenersInboundOnlyLeavesOutboundServing(t *testing.T) {
	f := setup(t)
	// Add an inbound listener beside virtualOutbound, with the same connection manager.
	var outbound, inbound *listenerv3.Listener
	{
		var dump adminv3.ConfigDump
		_, body := f.get(t, "/config_dump")
		if err := protojson.Unmarshal([]byte(body), &dump); err != nil {
			t.Fatal(err)
		}
		var ls adminv3.ListenersConfigDump
		if err := dump.Configs[2].UnmarshalTo(&ls); err != nil {
			t.Fatal(err)
		}
		outbound = &listenerv3.Listener{}
		if err := ls.DynamicListeners[0].GetActiveState().GetListener().UnmarshalTo(outbound); err != nil {
			t.Fatal(err)
		}
		inbound = proto.Clone(outbound).(*listenerv3.Listener)
		inbound.Name, inbound.TrafficDirection = "virtualInbound", corev3.TrafficDirection_INBOUND
	}
	if err := f.proxy.OnResources(server.ListenerType, []proto.Message{outbound, inbound}); err != nil {
		t.Fatal(err)
	}
	var inboundAddr string
	for _, l := range f.proxy.Listeners() {
		if l.Name == "virtualInbound" {
			inboundAddr = l.Address
		}
	}
	if inboundAddr == "" {
		t.Fatal("inbound listener not running")
	}
	if code, _ := f.post(t, "/drain_listeners?inboundonly"); code != 200 {
		t.Fatalf("POST /drain_listeners?inboundonly: %d", code)
	}
	if _, err := net.DialTimeout("tcp", inboundAddr, time.Second); err == nil {
		t.Fatal("inbound listener still accepts after /drain_listeners?inboundonly")
	}
	// virtualOutbound has no traffic_direction INBOUND, so it keeps serving without closing.
	resp, err := http.Get(f.listener + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("outbound listener after inboundonly drain: %d close=%v", resp.StatusCode, resp.Close)
	}
	if code, _ := f.post(t, "/drain_listeners?bogus"); code != http.StatusBadRequest {
		t.Fatalf("unknown parameter: %d", code)
	}
	if code, _ := f.post(t, "/drain_listeners"); code != 200 {
		t.Fatal("drain all")
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(f.listener, "http://"), time.Second); err == nil {
		t.Fatal("listener still accepts after /drain_listeners")
	}
}

func TestLoggingListsAndSetsComponentLevels(t *testing.T) {
	f := setup(t)
	code, body := f.get(t, "/logging")
	if code != 200 || !strings.HasPrefix(body, "active loggers:\n  admin: info\n  config: info\n") {
		t.Fatalf("GET /logging: %d %q", code, body)
	}
	if code, body = f.post(t, "/logging?level=warning&upstream=debug"); code != 200 ||
		!strings.Contains(body, "  http: warning\n") || !strings.Contains(body, "  upstream: debug\n") {
		t.Fatalf("POST /logging: %d %q", code, body)
	}
	if !f.levels.Logger("upstream").Enabled(context.Background(), slog.LevelDebug) ||
		f.levels.Logger("http").Enabled(context.Background(), slog.LevelInfo) {
		t.Fatal("levels not applied to the loggers")
	}
	code, body = f.post(t, "/logging?level=loud")
	if code != 400 || !strings.Contains(body, "trace, debug, info, warning, error, critical, off") {
		t.Fatalf("bad level: %d %q", code, body)
	}
	code, body = f.post(t, "/logging?nosuch=debug")
	if code != 400 || !strings.Contains(body, "admin, config, conn_handler, dns, healthcheck, http, main, router, secret, upstream") {
		t.Fatalf("bad component: %d %q", code, body)
	}
}

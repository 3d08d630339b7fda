package xdsconfig

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

func fromYAML[T proto.Message](t *testing.T, m T, src string) T {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		t.Fatalf("%v\n%s", err, src)
	}
	return m
}

const hcmHeader = `
name: ingress
address: {socket_address: {address: 127.0.0.1, port_value: 8080}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: ingress_http
`

const routerFilter = `
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`

func TestListenerWithRDSConverts(t *testing.T) {
	l := fromYAML(t, &listenerv3.Listener{}, hcmHeader+`
      rds: {route_config_name: "15001", config_source: {ads: {}}}
      strip_matching_host_port: true
`+routerFilter)
	got, err := ParseListener(l)
	if err != nil {
		t.Fatal(err)
	}
	hcm := got.FilterChains[0].HTTP
	if got.Address != "127.0.0.1:8080" || !got.BindToPort || hcm.RDSName != "15001" ||
		hcm.StatPrefix != "ingress_http" || hcm.ServerName != "envoy" || !hcm.GenerateRequestID ||
		hcm.StripPortIfMatches != 8080 || hcm.IdleTimeout != time.Hour || hcm.Codec != CodecAuto {
		t.Fatalf("got %+v / %+v", got, hcm)
	}
}

func TestListenerWithInlineRoutesConverts(t *testing.T) {
	l := fromYAML(t, &listenerv3.Listener{}, hcmHeader+`
      route_config:
        name: local
        virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
          - match: {prefix: "/"}
            route: {cluster: "inbound|9080||", timeout: 0s}
`+routerFilter)
	got, err := ParseListener(l)
	if err != nil {
		t.Fatal(err)
	}
	_, rt := got.FilterChains[0].HTTP.Routes.Select(&route.Request{Authority: "x", Path: "/a"})
	if rt == nil || rt.Action.Cluster != "inbound|9080||" || rt.Action.Timeout != 0 {
		t.Fatalf("route %+v", rt)
	}
}

func TestUnsupportedConfigIsRejectedNamingTheField(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown HTTP filter", hcmHeader + `
      rds: {route_config_name: r, config_source: {ads: {}}}
      http_filters:
      - name: envoy.filters.http.buffer
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 10}
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`, `Listener "ingress": filter_chains[0].filters[0] (http_connection_manager).http_filters[0] ("envoy.filters.http.buffer"): HTTP filter "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer": not supported`},
		{"redirect from file", hcmHeader + `
      route_config:
        virtual_hosts:
        - name: vh
          domains: ["*"]
          routes:
          - name: dr
            match: {prefix: "/"}
            direct_response: {status: 200, body: {filename: /etc/passwd}}
` + routerFilter, `routes[0] ("dr").direct_response.body: *corev3.DataSource_Filename: only inline_string and inline_bytes are not supported`},
		{"TLS", `
name: tls
address: {socket_address: {address: 127.0.0.1, port_value: 8443}}
filter_chains:
- transport_socket: {name: envoy.transport_sockets.tls}
  filters: []
`, `Listener "tls": filter_chains[0].transport_socket.typed_config: the TLS transport socket needs its TLS context`},
		{"tcp proxy tunneling", `
name: tcp
address: {socket_address: {address: 127.0.0.1, port_value: 9000}}
filter_chains:
- filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c, tunneling_config: {hostname: x}}
`, `Listener "tcp": filter_chains[0].filters[0] (tcp_proxy).tunneling_config: not supported`},
		{"header command", hcmHeader + `
      route_config:
        request_headers_to_add: [{header: {key: x-peer, value: "%DOWNSTREAM_REMOTE_ADDRESS%"}}]
` + routerFilter, `route_config: request_headers_to_add[0].header.value`},
		{"router not last", hcmHeader + `
      rds: {route_config_name: r, config_source: {ads: {}}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
      - name: opt
        is_optional: true
`, `the router must be the last HTTP filter`},
		{"bad regex", hcmHeader + `
      route_config:
        virtual_hosts:
        - name: vh
          domains: ["*"]
          routes:
          - match: {safe_regex: {regex: "(unclosed"}}
            route: {cluster: c}
` + routerFilter, `routes[0].match.safe_regex: regex "(unclosed"`},
		{"duplicate domain", hcmHeader + `
      route_config:
        virtual_hosts:
        - {name: a, domains: ["x"], routes: []}
        - {name: b, domains: ["x"], routes: []}
` + routerFilter, `virtual_hosts[1] ("b"): domains[0] "x": domain appears in more than one place`},
	} {
		l := fromYAML(t, &listenerv3.Listener{}, tc.yaml)
		_, err := ParseListener(l)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got  %v\n want …%s…", tc.name, err, tc.want)
		}
	}
}

func TestRouteConfigurationSimulation(t *testing.T) {
	rc := fromYAML(t, &routev3.RouteConfiguration{}, `
name: "15001"
virtual_hosts:
- name: reviews.default.svc.cluster.local:9080
  domains: ["reviews.default.svc.cluster.local:9080", "reviews:9080", "reviews.default:9080"]
  routes:
  - name: jason
    match:
      prefix: /
      headers: [{name: end-user, string_match: {exact: jason}}]
    route: {cluster: "outbound|9080|v2|reviews.default.svc.cluster.local"}
  - name: split
    match: {prefix: /}
    route:
      weighted_clusters:
        clusters:
        - {name: "outbound|9080|v1|reviews.default.svc.cluster.local", weight: 90}
        - {name: "outbound|9080|v3|reviews.default.svc.cluster.local", weight: 10}
      timeout: 2s
- name: ratings
  domains: ["ratings:9080"]
  routes:
  - match: {path: /ratings, case_sensitive: false}
    route: {cluster: ratings, prefix_rewrite: /api/ratings}
    request_headers_to_add: [{header: {key: x-route, value: ratings}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
  - match:
      prefix: /
      query_parameters: [{name: v, string_match: {prefix: "2"}}]
    route: {cluster: ratings-v2}
`)
	tbl, err := ParseRouteConfiguration(rc)
	if err != nil {
		t.Fatal(err)
	}
	type hdrs map[string]string
	for _, tc := range []struct {
		authority, path string
		headers         hdrs
		want            string
	}{
		{"reviews:9080", "/reviews/1", hdrs{"End-User": "jason"}, "jason"},
		{"reviews.default:9080", "/reviews/1", nil, "split"},
		{"ratings:9080", "/RATINGS", nil, "ratings"},
		{"ratings:9080", "/x?v=2.1", nil, "ratings-v2"},
		{"ratings:9080", "/x?v=1", nil, ""},
		{"reviews", "/", nil, ""},
	} {
		h := getter(tc.headers)
		_, rt := tbl.Select(&route.Request{Authority: tc.authority, Path: tc.path, Headers: h})
		got := ""
		if rt != nil {
			got = rt.Name
			if got == "" {
				got = rt.Action.Cluster
			}
		}
		if got != tc.want {
			t.Errorf("%s%s %v: got %q, want %q", tc.authority, tc.path, tc.headers, got, tc.want)
		}
	}
	_, split := tbl.Select(&route.Request{Authority: "reviews:9080", Path: "/", Headers: getter(nil)})
	if split.Action.Timeout != 2*time.Second || len(split.Action.Weighted) != 2 {
		t.Fatalf("split action %+v", split.Action)
	}
	_, rr := tbl.Select(&route.Request{Authority: "ratings:9080", Path: "/ratings?x", Headers: getter(nil)})
	if p, _ := rr.RewritePath("/ratings?x"); p != "/api/ratings?x" || rr.Action.Timeout != DefaultRouteTimeout {
		t.Fatalf("rewrite %q timeout %v", p, rr.Action.Timeout)
	}
	if a := rr.RequestHeaders.Add[0]; a.Name != "X-Route" || a.Action != route.OverwriteIfExistsOrAdd {
		t.Fatalf("header %+v", a)
	}
}

type getter map[string]string

func (g getter) Get(name string) (string, bool) {
	v, ok := g[name]
	return v, ok
}

func TestClusterConversion(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		check      func(upstream.Config) bool
		wantErr    string
	}{
		{"eds default service name", `{name: "outbound|9080||reviews", type: EDS, eds_cluster_config: {eds_config: {ads: {}}}, connect_timeout: 1s}`,
			func(c upstream.Config) bool {
				return c.Type == upstream.EDS && c.EDSServiceName == "outbound|9080||reviews" && c.ConnectTimeout == time.Second
			}, ""},
		{"static with weights", `
name: inbound
type: STATIC
lb_policy: RING_HASH
load_assignment:
  cluster_name: inbound
  endpoints:
  - lb_endpoints:
    - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 19083}}}
      load_balancing_weight: 3
    - endpoint: {address: {socket_address: {address: 127.0.0.2, port_value: 19083}}}
      health_status: DRAINING`,
			func(c upstream.Config) bool {
				return c.Type == upstream.Static && c.LB == upstream.RingHash && len(c.Endpoints) == 2 &&
					c.Endpoints[0].Weight == 3 && c.Endpoints[0].Healthy && !c.Endpoints[1].Healthy &&
					c.ConnectTimeout == upstream.DefaultConnectTimeout
			}, ""},
		{"http2", `
name: xds-grpc
type: STRICT_DNS
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: {http2_protocol_options: {}}
load_assignment:
  cluster_name: xds-grpc
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: localhost, port_value: 15010}}}}]}]`,
			func(c upstream.Config) bool {
				return c.Type == upstream.StrictDNS && c.Protocol == upstream.HTTP2 && c.Endpoints[0].Address == "localhost:15010"
			}, ""},
		{"original dst", `{name: PassthroughCluster, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, original_dst_lb_config: {use_http_header: true}}`,
			func(c upstream.Config) bool { return c.Type == upstream.OriginalDst && c.OriginalDstFromHeader }, ""},
		{"tls", `{name: c, type: EDS, transport_socket: {name: envoy.transport_sockets.tls}}`, nil, `Cluster "c": transport_socket.typed_config: the TLS transport socket needs its TLS context`},
		{"subsets", `{name: c, type: EDS, lb_subset_config: {fallback_policy: ANY_ENDPOINT}}`, nil, `Cluster "c": lb_subset_config: not supported`},
		{"custom type", `{name: c, cluster_type: {name: envoy.clusters.aggregate, typed_config: {"@type": type.googleapis.com/google.protobuf.Struct, value: {}}}}`, nil, `Cluster "c": cluster_type: not supported`},
	} {
		cfg, err := ParseCluster(fromYAML(t, &clusterv3.Cluster{}, tc.yaml))
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want …%s…", tc.name, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr == "" && !tc.check(cfg):
			t.Errorf("%s: got %+v", tc.name, cfg)
		}
	}
}

func TestLoadAssignmentPriorities(t *testing.T) {
	cla := fromYAML(t, &endpointv3.ClusterLoadAssignment{}, `
cluster_name: outbound|9080||reviews
endpoints:
- lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.1.3, port_value: 9080}}}}]
- priority: 1
  lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.1.4, port_value: 9080}}}, health_status: HEALTHY}]
- lb_endpoints: [{endpoint: {address: {pipe: {path: /tmp/trellis/ratings.sock}}}}]
`)
	eps, err := ParseLoadAssignment(cla)
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 3 || eps[0].Address != "127.0.1.3:9080" || eps[1].Priority != 1 || !eps[1].Healthy || eps[2].Address != "unix:/tmp/trellis/ratings.sock" {
		t.Fatalf("got %+v", eps)
	}
	cla.Policy = &endpointv3.ClusterLoadAssignment_Policy{DropOverloads: []*endpointv3.ClusterLoadAssignment_Policy_DropOverload{{Category: "x"}}}
	if _, err := ParseLoadAssignment(cla); err == nil || !strings.Contains(err.Error(), "drop_overloads") {
		t.Fatalf("drop_overloads: %v", err)
	}
}

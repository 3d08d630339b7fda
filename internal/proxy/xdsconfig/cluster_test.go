package xdsconfig

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/hashpolicy"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

const edsBase = `name: c
type: EDS
eds_cluster_config: {eds_config: {ads: {}}}
`

func TestClusterLoadBalancingResilienceFields(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		check      func(upstream.Config) bool
		wantErr    string
	}{
		{"least request with choice count and bias", `lb_policy: LEAST_REQUEST
least_request_lb_config: {choice_count: 3, active_request_bias: {default_value: 0.5, runtime_key: ""}}`,
			func(c upstream.Config) bool {
				return c.LB == upstream.LeastRequest && c.LBConfig.ChoiceCount == 3 && c.LBConfig.ActiveRequestBias == 0.5 && c.LBConfig.HasActiveRequestBias
			}, ""},
		{"ring hash sizes", `lb_policy: RING_HASH
ring_hash_lb_config: {minimum_ring_size: 64, maximum_ring_size: 4096}`,
			func(c upstream.Config) bool {
				return c.LB == upstream.RingHash && c.LBConfig.MinRingSize == 64 && c.LBConfig.MaxRingSize == 4096
			}, ""},
		{"ring hash murmur", `lb_policy: RING_HASH
ring_hash_lb_config: {hash_function: MURMUR_HASH_2}`, nil, `ring_hash_lb_config.hash_function MURMUR_HASH_2: only XX_HASH is not supported`},
		{"ring hash min above max", `lb_policy: RING_HASH
ring_hash_lb_config: {minimum_ring_size: 2048, maximum_ring_size: 1024}`, nil, `minimum_ring_size (2048) > maximum_ring_size (1024)`},
		{"maglev table size", `lb_policy: MAGLEV
maglev_lb_config: {table_size: 251}`,
			func(c upstream.Config) bool { return c.LB == upstream.Maglev && c.LBConfig.MaglevTableSize == 251 }, ""},
		{"maglev table size not prime", `lb_policy: MAGLEV
maglev_lb_config: {table_size: 1000}`, nil, `maglev_lb_config.table_size: 1000 is not a prime number`},
		{"locality weighted and panic threshold", `common_lb_config: {locality_weighted_lb_config: {}, healthy_panic_threshold: {value: 25}}`,
			func(c upstream.Config) bool {
				return c.LBConfig.LocalityWeighted && c.LBConfig.PanicThreshold == 25 && c.LBConfig.HasPanicThreshold
			}, ""},
		{"slow start", `round_robin_lb_config: {slow_start_config: {slow_start_window: 10s}}`, nil, `round_robin_lb_config.slow_start_config: not supported`},
		{"hostname hashing", `common_lb_config: {consistent_hashing_lb_config: {use_hostname_for_hashing: true}}`, nil, `use_hostname_for_hashing: not supported`},
		{"ignore new hosts until first hc", `common_lb_config: {ignore_new_hosts_until_first_hc: true}`, nil, `common_lb_config.ignore_new_hosts_until_first_hc: not supported`},
		{"circuit breakers", `circuit_breakers: {thresholds: [{max_requests: 1, track_remaining: true}, {priority: HIGH, max_connections: 7}]}`,
			func(c upstream.Config) bool {
				d, h := c.CircuitBreakers.Default, c.CircuitBreakers.High
				return d.Set && d.MaxRequests == 1 && d.MaxConnections == 1024 && d.MaxPendingRequests == 1024 && d.MaxRetries == 3 && d.TrackRemaining &&
					h.Set && h.MaxConnections == 7
			}, ""},
		{"retry budget", `circuit_breakers: {thresholds: [{retry_budget: {}}]}`, nil, `circuit_breakers.thresholds[0].retry_budget: not supported`},
		{"upstream source address", `upstream_bind_config: {source_address: {address: 127.0.1.7, port_value: 0}}`,
			func(c upstream.Config) bool { return c.SourceIP.String() == "127.0.1.7" }, ""},
		{"upstream source port", `upstream_bind_config: {source_address: {address: 127.0.1.7, port_value: 4000}}`, nil,
			`upstream_bind_config.source_address.port_value 4000: only 0 (any port)`},
		{"upstream socket options", `upstream_bind_config: {source_address: {address: 127.0.1.7, port_value: 0}, freebind: true}`, nil,
			`upstream_bind_config.freebind: not supported`},
		{"per host thresholds", `circuit_breakers: {per_host_thresholds: [{max_connections: 1}]}`, nil, `circuit_breakers.per_host_thresholds: not supported`},
		{"outlier defaults", `outlier_detection: {}`,
			func(c upstream.Config) bool { return c.Outlier != nil && *c.Outlier == upstream.DefaultOutlierConfig }, ""},
		{"outlier fields", `outlier_detection: {consecutive_5xx: 2, interval: 1s, base_ejection_time: 2s, max_ejection_time: 9s, max_ejection_percent: 50, enforcing_consecutive_gateway_failure: 100, split_external_local_origin_errors: true, consecutive_local_origin_failure: 3, enforcing_success_rate: 0, always_eject_one_host: true}`,
			func(c upstream.Config) bool {
				o := c.Outlier
				return o.Consecutive5xx == 2 && o.Interval == time.Second && o.BaseEjectionTime == 2*time.Second &&
					o.MaxEjectionTime == 9*time.Second && o.MaxEjectionPercent == 50 && o.EnforcingConsecutiveGatewayFailure == 100 &&
					o.SplitExternalLocalOriginErrors && o.ConsecutiveLocalOriginFailure == 3 && o.EnforcingSuccessRate == 0 && o.AlwaysEjectOneHost
			}, ""},
		{"outlier max below base", `outlier_detection: {base_ejection_time: 60s, max_ejection_time: 10s}`, nil, `outlier_detection.max_ejection_time (10s) must not be less than base_ejection_time (1m0s)`},
		{"outlier monitors", `outlier_detection: {monitors: [{name: x, typed_config: {"@type": type.googleapis.com/google.protobuf.Struct, value: {}}}]}`, nil, `outlier_detection.monitors: not supported`},
		{"http health check", `health_checks: [{timeout: 1s, interval: 2s, unhealthy_threshold: 3, healthy_threshold: 2, no_traffic_interval: 5s,
  http_health_check: {path: /health, host: svc, expected_statuses: [{start: 200, end: 300}], codec_client_type: HTTP2,
    request_headers_to_add: [{header: {key: x-hc, value: "1"}}]}}]`,
			func(c upstream.Config) bool {
				h := c.HealthCheck
				return h != nil && h.Timeout == time.Second && h.Interval == 2*time.Second && h.UnhealthyThreshold == 3 &&
					h.HealthyThreshold == 2 && h.NoTrafficInterval == 5*time.Second && h.NoTrafficHealthyInterval == 5*time.Second &&
					h.UnhealthyInterval == 2*time.Second && h.HealthyEdgeInterval == 2*time.Second &&
					h.HTTP.Path == "/health" && h.HTTP.Host == "svc" && h.HTTP.HTTP2 && h.HTTP.Expected[0] == upstream.StatusRange{Start: 200, End: 300} &&
					h.HTTP.Headers[0].Name == "X-Hc"
			}, ""},
		{"tcp health check payloads", `health_checks: [{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1,
  tcp_health_check: {send: {text: "50494e47"}, receive: [{text: "504f4e47"}]}}]`,
			func(c upstream.Config) bool {
				return string(c.HealthCheck.TCP.Send) == "PING" && string(c.HealthCheck.TCP.Receive[0]) == "PONG"
			}, ""},
		{"grpc health check", `health_checks: [{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, grpc_health_check: {}}]`, nil, `health_checks[0].grpc_health_check: not supported`},
		{"two health checks", `health_checks: [{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {}}, {timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {}}]`, nil, `health_checks: 2 health checks, only one is not supported`},
		{"health check tls options", `health_checks: [{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {}, tls_options: {alpn_protocols: [h2]}}]`, nil, `health_checks[0].tls_options: not supported`},
		{"close connections on health failure", `close_connections_on_host_health_failure: true`, nil, `close_connections_on_host_health_failure: not supported`},
		{"ignore health on host removal", `ignore_health_on_host_removal: true`,
			func(c upstream.Config) bool { return c.IgnoreHealthOnHostRemoval }, ""},
		{"http health check payload", `health_checks: [{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /, receive: [{text: "00"}]}}]`, nil, `http_health_check.receive: not supported`},
	} {
		cfg, err := ParseCluster(fromYAML(t, &clusterv3.Cluster{}, edsBase+tc.yaml))
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

func TestLoadAssignmentLocalitiesAndOverprovisioning(t *testing.T) {
	cla := fromYAML(t, &endpointv3.ClusterLoadAssignment{}, `
cluster_name: c
policy: {overprovisioning_factor: 200}
endpoints:
- locality: {region: eu, zone: eu-1, sub_zone: a}
  load_balancing_weight: 7
  lb_endpoints:
  - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}, hostname: web-1, health_check_config: {port_value: 8081}}
    health_status: DEGRADED
`)
	eps, err := ParseLoadAssignment(cla)
	if err != nil {
		t.Fatal(err)
	}
	e := eps[0]
	if e.Locality != (upstream.Locality{Region: "eu", Zone: "eu-1", SubZone: "a"}) || e.LocalityWeight != 7 || e.Overprovisioning != 200 ||
		!e.Healthy || !e.Degraded || e.Hostname != "web-1" || e.HealthCheckPort != 8081 {
		t.Fatalf("got %+v", e)
	}
	cla.Policy.WeightedPriorityHealth = true
	if _, err := ParseLoadAssignment(cla); err == nil || !strings.Contains(err.Error(), "policy.weighted_priority_health: not supported") {
		t.Fatalf("weighted_priority_health: %v", err)
	}
}

func TestRouteHashPolicies(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		check      func(*hashpolicy.Policy) bool
		wantErr    string
	}{
		{"all kinds", `[{header: {header_name: x-user, regex_rewrite: {pattern: {regex: "-.*"}, substitution: ""}}, terminal: true},
  {cookie: {name: sess, ttl: 60s, path: /}}, {connection_properties: {source_ip: true}}, {query_parameter: {name: u}}, {header: {header_name: host}}]`,
			func(p *hashpolicy.Policy) bool {
				m := p.Methods
				return len(m) == 5 && m[0].Kind == hashpolicy.Header && m[0].Name == "X-User" && m[0].Regex != nil && m[0].Terminal &&
					m[1].Kind == hashpolicy.Cookie && m[1].HasTTL && m[1].CookieTTL == time.Minute && m[1].CookiePath == "/" &&
					m[2].Kind == hashpolicy.SourceIP && m[3].Kind == hashpolicy.QueryParameter && m[3].Name == "u" && m[4].Name == ":authority"
			}, ""},
		{"filter state", `[{filter_state: {key: x}}]`, nil, `hash_policy[0].filter_state: not supported`},
		{"cookie attributes", `[{cookie: {name: s, attributes: [{name: SameSite, value: Lax}]}}]`, nil, `hash_policy[0].cookie.attributes: not supported`},
	} {
		a := fromYAML(t, &routev3.RouteAction{}, "cluster: c\nhash_policy: "+tc.yaml)
		got, err := routeAction(a, nil)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want …%s…", tc.name, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr == "" && !tc.check(got.HashPolicy):
			t.Errorf("%s: got %+v", tc.name, got.HashPolicy)
		}
	}
}

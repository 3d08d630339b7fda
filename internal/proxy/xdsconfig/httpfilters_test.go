package xdsconfig

import (
	"errors"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/filters/cors"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/fault"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

func filtersListener(filters string) string {
	return hcmHeader + `
      rds: {route_config_name: r, config_source: {ads: {}}}
      http_filters:
` + filters + `
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`
}

func TestHTTPFiltersParseInOrderAndKeepTheirNames(t *testing.T) {
	l := fromYAML(t, &listenerv3.Listener{}, filtersListener(`
      - name: my-cors
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}
      - name: envoy.filters.http.fault
        disabled: true
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, max_active_faults: 3, abort: {http_status: 503, percentage: {numerator: 5}}}
      - name: envoy.filters.http.local_ratelimit
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: rl}
      - name: some.unknown.filter
        is_optional: true
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 1}`))
	out, err := ParseListener(l)
	if err != nil {
		t.Fatal(err)
	}
	got := out.FilterChains[0].HTTP.HTTPFilters
	if len(got) != 3 || got[0].Name != "my-cors" || got[1].Name != "envoy.filters.http.fault" || !got[1].Disabled || got[2].Name != "envoy.filters.http.local_ratelimit" {
		t.Fatalf("filters %+v", got)
	}
	fc, ok := got[1].Config.(*fault.Config)
	if !ok || !fc.HasAbort || fc.AbortStatus != 503 || fc.AbortFraction != 50_000 || fc.MaxActiveFaults != 3 || fc.AbortBody != fault.DefaultAbortBody {
		t.Fatalf("fault config %+v", got[1].Config)
	}
}

func TestHTTPFilterConfigsTheProxyCannotHonourAreRejected(t *testing.T) {
	const f = `type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault`
	const rl = `type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`
	for _, tc := range []struct{ name, filters, want string }{
		{"header abort", `
      - name: f
        typed_config: {"@type": ` + f + `, abort: {header_abort: {}, percentage: {numerator: 1}}}`,
			`http_filters[0] ("f").typed_config: abort.header_abort: not supported`},
		{"header delay", `
      - name: f
        typed_config: {"@type": ` + f + `, delay: {header_delay: {}}}`,
			`http_filters[0] ("f").typed_config: delay.header_delay: not supported`},
		{"downstream nodes", `
      - name: f
        typed_config: {"@type": ` + f + `, downstream_nodes: [a]}`,
			`typed_config: downstream_nodes: not supported`},
		{"response rate limit", `
      - name: f
        typed_config: {"@type": ` + f + `, response_rate_limit: {fixed_limit: {limit_kbps: 1}}}`,
			`typed_config: response_rate_limit: not supported`},
		{"rate limit descriptors", `
      - name: rl
        typed_config: {"@type": ` + rl + `, stat_prefix: x, descriptors: [{entries: [{key: a, value: b}], token_bucket: {max_tokens: 1, fill_interval: 1s}}]}`,
			`("rl").typed_config: descriptors: not supported`},
		{"rate limit without typed_config", `
      - name: envoy.filters.http.local_ratelimit`,
			`typed_config: typed_config is required (stat_prefix)`},
		{"unknown disabled filter", `
      - name: x
        disabled: true
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 1}`,
			`http_filters[0] ("x"): HTTP filter "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer": not supported`},
	} {
		_, err := ParseListener(fromYAML(t, &listenerv3.Listener{}, filtersListener(tc.filters)))
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got  %v\n want …%s…", tc.name, err, tc.want)
		}
		if strings.Contains(tc.want, "not supported") && !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: not ErrUnsupported: %v", tc.name, err)
		}
	}
}

func TestRouteFeaturesConvert(t *testing.T) {
	rc := fromYAML(t, &routev3.RouteConfiguration{}, `
name: r
typed_per_filter_config:
  envoy.filters.http.fault: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true}
virtual_hosts:
- name: vh
  domains: ["*"]
  retry_policy: {retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes", num_retries: 2, retriable_status_codes: [503]}
  per_request_buffer_limit_bytes: 1000
  include_request_attempt_count: true
  cors: {allow_origin_string_match: [{exact: "*"}]}
  routes:
  - name: redirect
    match: {prefix: "/old"}
    redirect: {https_redirect: true, port_redirect: 8443, prefix_rewrite: "/new", response_code: SEE_OTHER}
  - name: direct
    match: {path: "/ping"}
    direct_response: {status: 200, body: {inline_bytes: "cG9uZw=="}}
  - name: full
    match: {prefix: "/"}
    typed_per_filter_config:
      envoy.filters.http.fault: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, delay: {fixed_delay: 1s, percentage: {numerator: 10, denominator: TEN_THOUSAND}}}
      envoy.filters.http.cors: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, is_optional: true, config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy, allow_methods: GET}}
      io.unknown.optional: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, is_optional: true, config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 1}}
    route:
      cluster: c
      host_rewrite_header: x-target-host
      retry_policy: {retry_on: "5xx,reset", per_try_timeout: 2s, retry_back_off: {base_interval: 0.1s}, retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts}]}
      request_mirror_policies: [{cluster: shadow, runtime_fraction: {default_value: {numerator: 25}}, disable_shadow_host_suffix_append: true}]
      max_stream_duration: {grpc_timeout_header_max: 5s}
      idle_timeout: 0s
`)
	tbl, err := ParseRouteConfiguration(rc)
	if err != nil {
		t.Fatal(err)
	}
	if fc := tbl.FilterConfigs["envoy.filters.http.fault"]; !fc.Toggles || !fc.Disabled {
		t.Fatalf("table filter config %+v", fc)
	}
	vh := tbl.VirtualHosts[0]
	if _, ok := vh.CORS.(*cors.Policy); !ok {
		t.Fatalf("virtual host cors %T", vh.CORS)
	}
	rd := vh.Routes[0].Action.Redirect
	if rd == nil || rd.Scheme != "https" || rd.Port != 8443 || !rd.HasPrefixRewrite || rd.Code != 303 {
		t.Fatalf("redirect %+v", rd)
	}
	if d := vh.Routes[1].Action.Direct; d == nil || d.Status != 200 || d.Body != "pong" {
		t.Fatalf("direct response %+v", d)
	}
	full := vh.Routes[2]
	a := full.Action
	wantOn := route.Retry5xx | route.RetryReset
	if a.Retry == nil || a.Retry.On != wantOn || a.Retry.NumRetries != 1 || a.Retry.PerTryTimeout != 2*time.Second ||
		a.Retry.BaseInterval != 100*time.Millisecond || a.Retry.MaxInterval != time.Second || !a.Retry.AvoidPreviousHosts {
		t.Fatalf("route retry policy %+v", a.Retry)
	}
	if a.BufferLimit != 1000 || !a.IncludeAttemptCount || a.HostRewriteHeader != "X-Target-Host" || !a.UseGRPCTimeout || a.GRPCTimeoutMax != 5*time.Second {
		t.Fatalf("action %+v", a)
	}
	if len(a.Mirrors) != 1 || a.Mirrors[0] != (route.Mirror{Cluster: "shadow", PerMillion: 250_000, KeepHost: true}) {
		t.Fatalf("mirrors %+v", a.Mirrors)
	}
	if fc := full.FilterConfigs["envoy.filters.http.fault"]; fc.Toggles {
		t.Fatalf("a plain config toggles the filter: %+v", fc)
	} else if c, ok := fc.Config.(*fault.Config); !ok || c.Delay != time.Second || c.DelayFraction != 1000 {
		t.Fatalf("route fault config %+v", fc.Config)
	}
	if _, ok := full.FilterConfigs["envoy.filters.http.cors"].Config.(*cors.Policy); !ok {
		t.Fatalf("wrapped cors config %+v", full.FilterConfigs["envoy.filters.http.cors"])
	}
	if _, ok := full.FilterConfigs["io.unknown.optional"]; ok {
		t.Fatal("optional unknown per-filter config kept")
	}
	// The virtual host's policy applies to routes without their own, with Envoy's defaults.
	vhRetry := vh.Routes[1].Action.Retry
	if vhRetry != nil {
		t.Fatal("a direct response has no retry policy")
	}
}

func TestRouteFeaturesTheProxyCannotHonourAreRejected(t *testing.T) {
	for _, tc := range []struct{ name, route, want string }{
		{"unknown retry_on", `route: {cluster: c, retry_policy: {retry_on: "5xx,http3-post-connect-failure"}}`,
			`route.retry_policy.retry_on: "http3-post-connect-failure": not supported`},
		{"retry priority", `route: {cluster: c, retry_policy: {retry_on: "5xx", retry_priority: {name: envoy.retry_priorities.previous_priorities}}}`,
			`route.retry_policy.retry_priority: not supported`},
		{"other host predicate", `route: {cluster: c, retry_policy: {retry_on: "5xx", retry_host_predicate: [{name: envoy.retry_host_predicates.omit_canary_hosts}]}}`,
			`retry_host_predicate[0] ("envoy.retry_host_predicates.omit_canary_hosts"): only envoy.retry_host_predicates.previous_hosts is not supported`},
		{"rate limited back-off", `route: {cluster: c, retry_policy: {retry_on: "5xx", rate_limited_retry_back_off: {reset_headers: [{name: retry-after}]}}}`,
			`route.retry_policy.rate_limited_retry_back_off: not supported`},
		{"idle timeout", `route: {cluster: c, idle_timeout: 10s}`, `route.idle_timeout 10s: only 0s (disabled) is not supported`},
		{"max stream duration", `route: {cluster: c, max_stream_duration: {max_stream_duration: 10s}}`,
			`route.max_stream_duration.max_stream_duration 10s: only 0s (disabled) is not supported`},
		{"hedging", `route: {cluster: c, hedge_policy: {initial_requests: 2}}`, `route.hedge_policy: hedging is not supported`},
		{"mirror from header", `route: {cluster: c, request_mirror_policies: [{cluster_header: x-mirror}]}`,
			`route.request_mirror_policies[0].cluster_header: not supported`},
		{"rate limits", `route: {cluster: c, rate_limits: [{actions: [{remote_address: {}}]}]}`, `route.rate_limits: not supported`},
		{"high priority", `route: {cluster: c, priority: HIGH}`, `route.priority HIGH: not supported`},
		{"CONNECT upgrade", `route: {cluster: c, upgrade_configs: [{upgrade_type: CONNECT}]}`,
			`route.upgrade_configs[0].upgrade_type CONNECT: not supported`},
		{"cors private network", `route: {cluster: c, cors: {allow_private_network_access: true}}`,
			`route.cors.allow_private_network_access: not supported`},
		{"unknown per-filter config", `route: {cluster: c}
    typed_per_filter_config:
      envoy.filters.http.buffer: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute, disabled: true}`,
			`typed_per_filter_config["envoy.filters.http.buffer"]: "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute": per-route config of an unknown HTTP filter: not supported`},
		{"bad per-filter fault", `route: {cluster: c}
    typed_per_filter_config:
      f: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, abort: {header_abort: {}}}`,
			`typed_per_filter_config["f"]: abort.header_abort: not supported`},
		{"direct response from file", `direct_response: {status: 200, body: {filename: /x}}`,
			`direct_response.body: *corev3.DataSource_Filename: only inline_string and inline_bytes are not supported`},
		{"direct response too big", `direct_response: {status: 200, body: {inline_string: "` + strings.Repeat("x", 5000) + `"}}`,
			`direct_response.body: 5000 bytes exceed max_direct_response_body_size_bytes (4096)`},
		{"no action", `decorator: {operation: x}`, `Route.Action: value is required`},
		{"append x-forwarded-host", `route: {cluster: c, append_x_forwarded_host: true}`, `route.append_x_forwarded_host: not supported`},
	} {
		rc := fromYAML(t, &routev3.RouteConfiguration{}, `
name: r
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - match: {prefix: "/"}
    `+tc.route+`
`)
		_, err := ParseRouteConfiguration(rc)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got  %v\n want …%s…", tc.name, err, tc.want)
		}
	}
}

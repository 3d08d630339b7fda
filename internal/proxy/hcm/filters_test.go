package hcm

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

const faultType = `"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault`

func TestFaultAbortAnswersLocallyWithFlagFIAndCountsIt(t *testing.T) {
	var hits atomic.Int64
	up := upstreamServer(t, "up", func(http.ResponseWriter, *http.Request) { hits.Add(1) })
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/"}
            route: {cluster: c}
`)+withFilters(`
      - name: envoy.filters.http.fault
        typed_config: {`+faultType+`, abort: {http_status: 418, percentage: {numerator: 100}}}`),
		map[string][]string{"c": {up}})
	code, body, _ := send(t, "GET", p.url+"/x", nil, nil)
	if code != 418 || body != "fault filter abort" || hits.Load() != 0 {
		t.Fatalf("got %d %q, upstream hits %d", code, body, hits.Load())
	}
	i := p.info(t, 1)
	if !i.Flags.Has(streaminfo.FaultInjected) || i.ResponseCodeDetails != "fault_filter_abort" || i.ResponseCode != 418 {
		t.Fatalf("record: flags %v details %q code %d", i.Flags, i.ResponseCodeDetails, i.ResponseCode)
	}
	if n := p.counter("http.test.fault.aborts_injected"); n != 1 {
		t.Fatalf("aborts_injected = %d", n)
	}
}

func TestFaultDelayHoldsTheRequestThenForwardsWithFlagDI(t *testing.T) {
	up := upstreamServer(t, "up", nil)
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/"}
            route: {cluster: c}
`)+withFilters(`
      - name: envoy.filters.http.fault
        typed_config: {`+faultType+`, delay: {fixed_delay: 0.2s, percentage: {numerator: 1, denominator: HUNDRED}}}
      - name: envoy.filters.http.fault2
        typed_config: {`+faultType+`, delay: {fixed_delay: 0.2s, percentage: {numerator: 1000000, denominator: MILLION}}}`),
		map[string][]string{"c": {up}})
	start := time.Now()
	code, body, _ := send(t, "GET", p.url+"/", nil, nil)
	if code != 200 || body != "up" {
		t.Fatalf("got %d %q", code, body)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("answered after %v, before the 200ms delay", d)
	}
	if i := p.info(t, 1); !i.Flags.Has(streaminfo.DelayInjected) || i.ResponseCodeDetails != "via_upstream" {
		t.Fatalf("flags %v details %q", i.Flags, i.ResponseCodeDetails)
	}
	if n := p.counter("http.test.fault.delays_injected"); n < 1 {
		t.Fatalf("delays_injected = %d", n)
	}
}

func TestFaultRouteOverrideAndHeaderConditions(t *testing.T) {
	up := upstreamServer(t, "up", nil)
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/faulty"}
            route: {cluster: c}
            typed_per_filter_config:
              envoy.filters.http.fault: {`+faultType+`, abort: {http_status: 503, percentage: {numerator: 100}}, headers: [{name: x-chaos, exact_match: "yes"}]}
          - match: {prefix: "/"}
            route: {cluster: c}
`)+withFilters(`
      - name: envoy.filters.http.fault
        typed_config: {`+faultType+`}`),
		map[string][]string{"c": {up}})
	if code, _, _ := send(t, "GET", p.url+"/", nil, map[string]string{"x-chaos": "yes"}); code != 200 {
		t.Fatalf("route without override: %d", code)
	}
	if code, _, _ := send(t, "GET", p.url+"/faulty", nil, nil); code != 200 {
		t.Fatalf("override without its header: %d", code)
	}
	if code, body, _ := send(t, "GET", p.url+"/faulty", nil, map[string]string{"x-chaos": "yes"}); code != 503 || body != "fault filter abort" {
		t.Fatalf("override with its header: %d %q", code, body)
	}
}

func TestDisabledFilterRunsOnlyOnRoutesThatEnableIt(t *testing.T) {
	up := upstreamServer(t, "up", nil)
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/on"}
            route: {cluster: c}
            typed_per_filter_config:
              chaos: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: false}
          - match: {prefix: "/"}
            route: {cluster: c}
`)+withFilters(`
      - name: chaos
        disabled: true
        typed_config: {`+faultType+`, abort: {http_status: 500, percentage: {numerator: 100}}}`),
		map[string][]string{"c": {up}})
	if code, _, _ := send(t, "GET", p.url+"/off", nil, nil); code != 200 {
		t.Fatalf("disabled filter ran: %d", code)
	}
	if code, _, _ := send(t, "GET", p.url+"/on", nil, nil); code != 500 {
		t.Fatalf("enabled filter did not run: %d", code)
	}
}

const rlType = `"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`

func TestLocalRateLimitRefusesOnceTheBucketIsEmpty(t *testing.T) {
	up := upstreamServer(t, "up", nil)
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/"}
            route: {cluster: c}
`)+withFilters(`
      - name: envoy.filters.http.local_ratelimit
        typed_config:
          `+rlType+`
          stat_prefix: rl
          token_bucket: {max_tokens: 2, tokens_per_fill: 1, fill_interval: 3600s}
          filter_enabled: {default_value: {numerator: 100}}
          filter_enforced: {default_value: {numerator: 100}}
          response_headers_to_add: [{header: {key: x-limited, value: "yes"}}]`),
		map[string][]string{"c": {up}})
	for i := range 2 {
		if code, _, hdr := send(t, "GET", p.url+"/", nil, nil); code != 200 || hdr.Get("X-Limited") != "" {
			t.Fatalf("request %d: %d %v", i, code, hdr)
		}
	}
	code, body, hdr := send(t, "GET", p.url+"/", nil, nil)
	if code != 429 || body != "local_rate_limited" || hdr.Get("X-Limited") != "yes" {
		t.Fatalf("third request: %d %q %v", code, body, hdr)
	}
	if i := p.info(t, 3); !i.Flags.Has(streaminfo.RateLimited) || i.ResponseCodeDetails != "local_rate_limited" {
		t.Fatalf("flags %v details %q", i.Flags, i.ResponseCodeDetails)
	}
	for name, want := range map[string]uint64{"enabled": 3, "ok": 2, "rate_limited": 1, "enforced": 1} {
		if got := p.counter("rl.http_local_rate_limit." + name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

func TestLocalRateLimitRouteOverrideHasItsOwnBucketAndUnenforcedOnlyCounts(t *testing.T) {
	up := upstreamServer(t, "up", nil)
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/strict"}
            route: {cluster: c}
            typed_per_filter_config:
              envoy.filters.http.local_ratelimit:
                `+rlType+`
                stat_prefix: strict
                token_bucket: {max_tokens: 1, fill_interval: 3600s}
                filter_enabled: {default_value: {numerator: 100}}
                filter_enforced: {default_value: {numerator: 100}}
          - match: {prefix: "/"}
            route: {cluster: c}
`)+withFilters(`
      - name: envoy.filters.http.local_ratelimit
        typed_config:
          `+rlType+`
          stat_prefix: rl
          token_bucket: {max_tokens: 1, fill_interval: 3600s}
          filter_enabled: {default_value: {numerator: 100}}`),
		map[string][]string{"c": {up}})
	// The listener-level bucket is not enforced: both requests pass, one is counted as limited.
	for range 2 {
		if code, _, _ := send(t, "GET", p.url+"/", nil, nil); code != 200 {
			t.Fatalf("unenforced limit refused: %d", code)
		}
	}
	if got := p.counter("rl.http_local_rate_limit.rate_limited"); got != 1 {
		t.Fatalf("rate_limited = %d", got)
	}
	if code, _, _ := send(t, "GET", p.url+"/strict", nil, nil); code != 200 {
		t.Fatalf("route bucket shared the listener's: %d", code)
	}
	if code, _, _ := send(t, "GET", p.url+"/strict", nil, nil); code != 429 {
		t.Fatalf("route bucket did not limit: %d", code)
	}
}

const corsFilter = `
      - name: envoy.filters.http.cors
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}`

func TestCORSPreflightIsAnsweredLocallyAndSimpleRequestsGetHeaders(t *testing.T) {
	var upstreamOptions atomic.Int64
	up := upstreamServer(t, "up", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			upstreamOptions.Add(1)
		}
		_, _ = w.Write([]byte("up"))
	})
	p := newTestProxy(t, routeConfig(`
          - match: {prefix: "/"}
            route: {cluster: c}
            typed_per_filter_config:
              envoy.filters.http.cors:
                "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                allow_origin_string_match: [{suffix: ".example.com"}, {exact: "https://app.test"}]
                allow_methods: "GET,POST"
                allow_headers: "x-token"
                expose_headers: "x-trace"
                max_age: "600"
                allow_credentials: true
`)+withFilters(corsFilter), map[string][]string{"c": {up}})

	code, _, hdr := send(t, "OPTIONS", p.url+"/api", nil, map[string]string{"Origin": "https://www.example.com", "Access-Control-Request-Method": "POST"})
	if code != 200 || hdr.Get("Access-Control-Allow-Origin") != "https://www.example.com" || hdr.Get("Access-Control-Allow-Methods") != "GET,POST" ||
		hdr.Get("Access-Control-Allow-Headers") != "x-token" || hdr.Get("Access-Control-Max-Age") != "600" || hdr.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("preflight: %d %v", code, hdr)
	}
	if upstreamOptions.Load() != 0 {
		t.Fatal("the preflight reached the upstream")
	}
	code, body, hdr := send(t, "GET", p.url+"/api", nil, map[string]string{"Origin": "https://app.test"})
	if code != 200 || body != "up" || hdr.Get("Access-Control-Allow-Origin") != "https://app.test" || hdr.Get("Access-Control-Expose-Headers") != "x-trace" {
		t.Fatalf("simple request: %d %q %v", code, body, hdr)
	}
	_, _, hdr = send(t, "GET", p.url+"/api", nil, map[string]string{"Origin": "https://evil.test"})
	if hdr.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("disallowed origin got CORS headers: %v", hdr)
	}
	// A preflight from an origin the policy does not allow goes to the upstream (Envoy's default).
	send(t, "OPTIONS", p.url+"/api", nil, map[string]string{"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"})
	if upstreamOptions.Load() != 1 {
		t.Fatalf("unmatched preflight forwarded %d times", upstreamOptions.Load())
	}
}

func TestDeprecatedVirtualHostCORSPolicyStillApplies(t *testing.T) {
	up := upstreamServer(t, "up", nil)
	p := newTestProxy(t, `
      route_config:
        virtual_hosts:
        - name: vh
          domains: ["*"]
          cors: {allow_origin_string_match: [{safe_regex: {regex: "https://[a-z]+\\.mesh"}}], allow_methods: "PUT", filter_enabled: {default_value: {numerator: 100}}}
          routes:
          - match: {prefix: "/"}
            route: {cluster: c}
`+withFilters(corsFilter), map[string][]string{"c": {up}})
	code, _, hdr := send(t, "OPTIONS", p.url+"/", nil, map[string]string{"Origin": "https://ui.mesh", "Access-Control-Request-Method": "PUT"})
	if code != 200 || hdr.Get("Access-Control-Allow-Origin") != "https://ui.mesh" || hdr.Get("Access-Control-Allow-Methods") != "PUT" {
		t.Fatalf("preflight: %d %v", code, hdr)
	}
}

// headerFilter is a filter written against the interface alone: it edits request headers, adds a
// response header and counts the final records it is shown.
type headerFilter struct{ completed atomic.Int64 }

func (f *headerFilter) Build(filters.Env) filters.Filter { return f }

func (f *headerFilter) OnRequest(_ context.Context, x *filters.Exchange, perRoute any) filters.Status {
	x.Headers.Set("X-Filtered", x.Route.Name)
	x.Headers.Del("X-Secret")
	x.AddResponseHeader("X-Seen-By", "headerFilter")
	return filters.Continue
}

func (f *headerFilter) OnComplete(i *streaminfo.Info) {
	if i.ResponseCode == 200 {
		f.completed.Add(1)
	}
}

func TestFiltersEditRequestHeadersAddResponseHeadersAndSeeTheRecord(t *testing.T) {
	seen := make(chan http.Header, 1)
	up := upstreamServer(t, "up", func(_ http.ResponseWriter, r *http.Request) { seen <- r.Header.Clone() })
	f := &headerFilter{}
	p := newTestProxy(t, routeConfig(`
          - name: r1
            match: {prefix: "/"}
            route: {cluster: c}
`)+routerOnly, map[string][]string{"c": {up}}, func(h *xdsconfig.HTTPConnectionManager) {
		h.HTTPFilters = append(h.HTTPFilters, filters.Spec{Name: "headers", Config: f})
	})
	code, _, hdr := send(t, "GET", p.url+"/", nil, map[string]string{"X-Secret": "s"})
	got := <-seen
	if code != 200 || hdr.Get("X-Seen-By") != "headerFilter" || got.Get("X-Filtered") != "r1" || got.Get("X-Secret") != "" {
		t.Fatalf("response %d %v; upstream saw %v", code, hdr, got)
	}
	p.info(t, 1)
	if f.completed.Load() != 1 {
		t.Fatalf("OnComplete called %d times", f.completed.Load())
	}
}

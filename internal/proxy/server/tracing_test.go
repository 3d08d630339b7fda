package server

import (
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/testenv/tracetest"
)

// tracedProxy runs a proxy with one listener ("front", direction dir) routing to backend "app",
// tracing with provider through the collector cluster "collector" at collectorAddr.
func tracedProxy(t *testing.T, dir corev3.TrafficDirection, collectorAddr string, tr *hcmv3.HttpConnectionManager_Tracing, http2Collector bool) (proxyAddr string, app *backend) {
	t.Helper()
	app = newBackend(t, "app", nil)
	p := newProxy(t, Options{})
	col := staticCluster("collector", collectorAddr)
	if http2Collector {
		col.TypedExtensionProtocolOptions = map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAnyT(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
				}},
			}),
		}
	}
	mustApply(t, p, ClusterType, msgs[*clusterv3.Cluster](staticCluster("app", app.addr), col))
	l := hcmListener(t, "front", "127.0.0.1:0", "", routeConfig("r", []string{"*"}, routeTo("/", toCluster("app"))))
	l.TrafficDirection = dir
	editHCM(t, l, func(h *hcmv3.HttpConnectionManager) { h.Tracing = tr })
	mustApply(t, p, ListenerType, msgs[*listenerv3.Listener](l))
	return listenerAddr(t, p, "front"), app
}

func otelTracing(t *testing.T, randomPercent float64) *hcmv3.HttpConnectionManager_Tracing {
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: randomPercent},
		CustomTags: []*tracingtypev3.CustomTag{
			{Tag: "mesh", Type: &tracingtypev3.CustomTag_Literal_{Literal: &tracingtypev3.CustomTag_Literal{Value: "trellis"}}},
			{Tag: "tenant", Type: &tracingtypev3.CustomTag_RequestHeader{RequestHeader: &tracingtypev3.CustomTag_Header{Name: "x-tenant", DefaultValue: "none"}}},
		},
		Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAnyT(t, &tracev3.OpenTelemetryConfig{
			ServiceName: "front.default",
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "collector"}}},
		})}},
	}
}

func TestOpenTelemetryTracingExportsAClientSpanAndPropagatesTraceparent(t *testing.T) {
	otlp := tracetest.OTLP(t, "")
	addr, app := tracedProxy(t, corev3.TrafficDirection_OUTBOUND, otlp.Addr, otelTracing(t, 100), true)
	c := keepAliveClient(t)
	code, _, _ := do(t, c, "GET", "http://"+addr+"/hello?x=1", "app.example", map[string]string{"x-tenant": "blue"})
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	tp := app.lastRequest().Header.Get("Traceparent")
	spans := otlp.WaitSpans(t, 10*time.Second, "one span", func(s []tracetest.Span) bool { return len(s) == 1 })
	s := spans[0]
	if want := "00-" + s.TraceID + "-" + s.ID + "-01"; tp != want {
		t.Errorf("backend got traceparent %q, want %q (the proxy's span as parent)", tp, want)
	}
	if s.Kind != "CLIENT" || s.ParentID != "" || s.Service != "front.default" || s.Name != "egress app.example" {
		t.Errorf("span %+v: want a CLIENT root span egress app.example of service front.default", s)
	}
	for k, v := range map[string]string{
		"http.method": "GET", "http.status_code": "200", "http.url": "http://app.example/hello?x=1",
		"upstream_cluster": "app", "response_flags": "-", "component": "proxy", "mesh": "trellis", "tenant": "blue",
		"guid:x-request-id": app.lastRequest().Header.Get("X-Request-Id"),
	} {
		if s.Tags[k] != v {
			t.Errorf("tag %s = %q, want %q", k, s.Tags[k], v)
		}
	}
	if _, ok := s.Tags["error"]; ok || s.Error {
		t.Errorf("a 200 was tagged as an error: %+v", s)
	}

	// An incoming sampled traceparent is continued: same trace, the caller's span as parent.
	const in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	do(t, c, "GET", "http://"+addr+"/", "app.example", map[string]string{"traceparent": in, "tracestate": "k=v"})
	got := app.lastRequest().Header
	if tp := got.Get("Traceparent"); !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || strings.Contains(tp, "00f067aa0ba902b7") || got.Get("Tracestate") != "k=v" {
		t.Errorf("backend got traceparent %q tracestate %q: want the same trace with the proxy's span", tp, got.Get("Tracestate"))
	}
	otlp.WaitSpans(t, 10*time.Second, "the continued span", func(s []tracetest.Span) bool {
		for _, sp := range s {
			if sp.TraceID == "4bf92f3577b34da6a3ce929d0e0e4736" && sp.ParentID == "00f067aa0ba902b7" {
				return true
			}
		}
		return false
	})
}

func TestTracingSamplingZeroExportsNothingButAnIncomingSampledTraceIsKept(t *testing.T) {
	otlp := tracetest.OTLP(t, "")
	addr, app := tracedProxy(t, corev3.TrafficDirection_INBOUND, otlp.Addr, otelTracing(t, 0), true)
	c := keepAliveClient(t)
	for range 20 {
		if code, _, _ := do(t, c, "GET", "http://"+addr+"/", "app", nil); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if tp := app.lastRequest().Header.Get("Traceparent"); !strings.HasSuffix(tp, "-00") {
		t.Errorf("unsampled request went upstream with traceparent %q, want flags 00", tp)
	}
	// A sampled incoming trace is honoured whatever random_sampling says; its span (SERVER, as
	// the listener is inbound) arrives, and nothing from the 20 unsampled requests came before it.
	const in = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	do(t, c, "GET", "http://"+addr+"/", "app", map[string]string{"traceparent": in})
	spans := otlp.WaitSpans(t, 10*time.Second, "the sampled span", func(s []tracetest.Span) bool { return len(s) > 0 })
	if len(spans) != 1 || spans[0].TraceID != "0af7651916cd43dd8448eb211c80319c" || spans[0].Kind != "SERVER" || spans[0].Name != "ingress" {
		t.Fatalf("spans %+v: want only the continued trace's SERVER span", spans)
	}
}

func TestZipkinTracingSharesTheCallersSpanOnIngressAndExportsJSON(t *testing.T) {
	zipkin := tracetest.Zipkin(t, "")
	tr := &hcmv3.HttpConnectionManager_Tracing{
		Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.zipkin", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAnyT(t, &tracev3.ZipkinConfig{
			CollectorCluster: "collector", CollectorEndpoint: "/api/v2/spans", CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
		})}},
	}
	addr, app := tracedProxy(t, corev3.TrafficDirection_INBOUND, zipkin.Addr, tr, false)
	c := keepAliveClient(t)
	// Single b3 header in; the multi headers go out, with the same (shared) span.
	do(t, c, "GET", "http://"+addr+"/", "app", map[string]string{"b3": "463ac35c9f6413ad-a2fb4a1d1a96d312-1-0020000000000001"})
	h := app.lastRequest().Header
	if h.Get("X-B3-Traceid") != "463ac35c9f6413ad" || h.Get("X-B3-Spanid") != "a2fb4a1d1a96d312" || h.Get("X-B3-Parentspanid") != "0020000000000001" || h.Get("X-B3-Sampled") != "1" || h.Get("B3") != "" {
		t.Errorf("backend got B3 headers %v", h)
	}
	spans := zipkin.WaitSpans(t, 10*time.Second, "one span", func(s []tracetest.Span) bool { return len(s) == 1 })
	s := spans[0]
	if s.TraceID != "463ac35c9f6413ad" || s.ID != "a2fb4a1d1a96d312" || s.ParentID != "0020000000000001" || !s.Shared || s.Kind != "SERVER" {
		t.Errorf("span %+v: want the caller's span, shared, SERVER", s)
	}

	// No context and x-b3-sampled 0: no span; a 5xx with a trace is tagged error.
	do(t, c, "GET", "http://"+addr+"/", "app", map[string]string{"x-b3-sampled": "0"})
	if h := app.lastRequest().Header; h.Get("X-B3-Sampled") != "0" || len(h.Get("X-B3-Traceid")) != 16 {
		t.Errorf("backend got %v: want a new 64-bit trace, unsampled", h)
	}
	app.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) })
	do(t, c, "GET", "http://"+addr+"/", "app", map[string]string{"x-b3-sampled": "1"})
	spans = zipkin.WaitSpans(t, 10*time.Second, "the 503's span", func(s []tracetest.Span) bool { return len(s) == 2 })
	if e := spans[1]; e.Tags["error"] != "true" || e.Tags["http.status_code"] != "503" || e.ParentID != "" {
		t.Errorf("span %+v: want a root span tagged error with 503", e)
	}
}

func TestUnimplementedTracingIsRejectedWithItsFieldPath(t *testing.T) {
	p := newProxy(t, Options{})
	l := hcmListener(t, "front", "127.0.0.1:0", "", routeConfig("r", []string{"*"}))
	tr := otelTracing(t, 100)
	tr.SpawnUpstreamSpan = nil
	tr.Verbose = true
	editHCM(t, l, func(h *hcmv3.HttpConnectionManager) { h.Tracing = tr })
	err := p.OnResources(ListenerType, msgs[*listenerv3.Listener](l))
	if err == nil || !strings.Contains(err.Error(), "(http_connection_manager).tracing.verbose") {
		t.Fatalf("got %v, want a NACK at tracing.verbose", err)
	}
}

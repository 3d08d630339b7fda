package xdsconfig

import (
	"errors"
	"fmt"
	"math"
	"net/textproto"
	"net/url"
	"os"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/tracing"
)

const (
	otelTracerName   = "envoy.tracers.opentelemetry"
	otelTracerType   = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
	zipkinTracerName = "envoy.tracers.zipkin"
	zipkinTracerType = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"

	// Envoy's max_path_tag_length default.
	defaultMaxPathTagLength = 256
)

// parseTracing converts an HCM's tracing field. outbound is the listener's traffic_direction, which
// decides the span kind as in Envoy. nil in, nil out: no tracing.
func parseTracing(t *hcmv3.HttpConnectionManager_Tracing, outbound bool) (*tracing.Config, error) {
	if t == nil {
		return nil, nil
	}
	if err := onlyFields(t, "client_sampling", "random_sampling", "overall_sampling", "verbose",
		"max_path_tag_length", "custom_tags", "provider", "spawn_upstream_span"); err != nil {
		return nil, err
	}
	if t.GetVerbose() {
		return nil, fmt.Errorf("verbose: span logs are %w", ErrUnsupported)
	}
	if t.GetSpawnUpstreamSpan().GetValue() {
		return nil, fmt.Errorf("spawn_upstream_span: a separate upstream span is %w; the request's span is injected upstream", ErrUnsupported)
	}
	cfg := &tracing.Config{
		Outbound:         outbound,
		RandomSampling:   percent(t.GetRandomSampling()),
		ClientSampling:   percent(t.GetClientSampling()),
		OverallSampling:  percent(t.GetOverallSampling()),
		MaxPathTagLength: defaultMaxPathTagLength,
	}
	if m := t.GetMaxPathTagLength(); m != nil {
		cfg.MaxPathTagLength = int(m.GetValue())
	}
	for i, ct := range t.GetCustomTags() {
		tag, err := customTag(ct)
		if err != nil {
			return nil, fmt.Errorf("custom_tags[%d].%w", i, err)
		}
		cfg.CustomTags = append(cfg.CustomTags, tag)
	}
	p := t.GetProvider()
	if p == nil {
		return nil, errors.New("provider: required: trellis-proxy has no default tracer")
	}
	if err := onlyFields(p, "name", "typed_config"); err != nil {
		return nil, fmt.Errorf("provider.%w", err)
	}
	tc := p.GetTypedConfig()
	var err error
	switch {
	case tc.GetTypeUrl() == otelTracerType || tc == nil && p.GetName() == otelTracerName:
		err = otelProvider(tc, cfg)
	case tc.GetTypeUrl() == zipkinTracerType || tc == nil && p.GetName() == zipkinTracerName:
		err = zipkinProvider(tc, cfg)
	default:
		kind := tc.GetTypeUrl()
		if kind == "" {
			kind = p.GetName()
		}
		return nil, fmt.Errorf("provider (%q): tracer %q: only %s and %s are %w", p.GetName(), kind, otelTracerName, zipkinTracerName, ErrUnsupported)
	}
	if err != nil {
		return nil, fmt.Errorf("provider (%q).typed_config.%w", p.GetName(), err)
	}
	return cfg, nil
}

// percent converts an Envoy Percent (0..100, default 100) to hundredths of a percent, the
// resolution Envoy samples at.
func percent(p *typev3.Percent) uint32 {
	if p == nil {
		return 10000
	}
	v := math.Round(p.GetValue() * 100)
	return uint32(min(max(v, 0), 10000))
}

func otelProvider(tc *anypb.Any, cfg *tracing.Config) error {
	if tc == nil {
		return errors.New("required: the OpenTelemetry tracer needs a grpc_service or http_service")
	}
	var o tracev3.OpenTelemetryConfig
	if err := anypb.UnmarshalTo(tc, &o, protoUnmarshal); err != nil {
		return err
	}
	if err := o.Validate(); err != nil {
		return err
	}
	if err := onlyFields(&o, "grpc_service", "http_service", "service_name", "max_cache_size"); err != nil {
		return err
	}
	cfg.Provider = tracing.OpenTelemetry
	col := tracing.Collector{Provider: tracing.OpenTelemetry, ServiceName: o.GetServiceName()}
	switch {
	case o.GetGrpcService() != nil && o.GetHttpService() != nil:
		return errors.New("grpc_service, http_service: set one")
	case o.GetGrpcService() != nil:
		g := o.GetGrpcService()
		if err := onlyFields(g, "envoy_grpc", "timeout"); err != nil {
			return fmt.Errorf("grpc_service.%w", err)
		}
		eg := g.GetEnvoyGrpc()
		if eg == nil {
			return fmt.Errorf("grpc_service: only envoy_grpc is %w", ErrUnsupported)
		}
		if err := onlyFields(eg, "cluster_name", "authority"); err != nil {
			return fmt.Errorf("grpc_service.envoy_grpc.%w", err)
		}
		col.Transport, col.Cluster, col.Authority = tracing.GRPC, eg.GetClusterName(), eg.GetAuthority()
		col.Path = tracing.OTLPGRPCPath()
	case o.GetHttpService() != nil:
		h := o.GetHttpService()
		if err := onlyFields(h, "http_uri"); err != nil {
			return fmt.Errorf("http_service.%w", err)
		}
		hu := h.GetHttpUri()
		if err := onlyFields(hu, "uri", "cluster", "timeout"); err != nil {
			return fmt.Errorf("http_service.http_uri.%w", err)
		}
		u, err := url.Parse(hu.GetUri())
		if err != nil || u.Host == "" {
			return fmt.Errorf("http_service.http_uri.uri %q: want an absolute URL such as http://collector:4318/v1/traces", hu.GetUri())
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("http_service.http_uri.uri %q: scheme must be http or https", hu.GetUri())
		}
		col.Transport, col.Cluster, col.Authority = tracing.HTTP, hu.GetCluster(), u.Host
		col.Path = u.RequestURI()
	default:
		return errors.New("grpc_service: required (or http_service)")
	}
	if col.Cluster == "" {
		return errors.New("grpc_service.envoy_grpc.cluster_name: required")
	}
	cfg.Collector = col
	return nil
}

func zipkinProvider(tc *anypb.Any, cfg *tracing.Config) error {
	if tc == nil {
		return errors.New("required: the Zipkin tracer needs a collector_cluster")
	}
	var z tracev3.ZipkinConfig
	if err := anypb.UnmarshalTo(tc, &z, protoUnmarshal); err != nil {
		return err
	}
	if err := z.Validate(); err != nil {
		return err
	}
	if err := onlyFields(&z, "collector_cluster", "collector_endpoint", "trace_id_128bit", "shared_span_context",
		"collector_endpoint_version", "collector_hostname"); err != nil {
		return err
	}
	if v := z.GetCollectorEndpointVersion(); v != tracev3.ZipkinConfig_HTTP_JSON {
		return fmt.Errorf("collector_endpoint_version %s: only HTTP_JSON is %w", v, ErrUnsupported)
	}
	if z.GetCollectorCluster() == "" || z.GetCollectorEndpoint() == "" {
		return errors.New("collector_cluster, collector_endpoint: required")
	}
	cfg.Provider = tracing.Zipkin
	cfg.TraceID128 = z.GetTraceId_128Bit()
	cfg.SharedSpanContext = z.GetSharedSpanContext() == nil || z.GetSharedSpanContext().GetValue()
	cfg.Collector = tracing.Collector{
		Provider:  tracing.Zipkin,
		Transport: tracing.HTTP,
		Cluster:   z.GetCollectorCluster(),
		Path:      z.GetCollectorEndpoint(),
		Authority: z.GetCollectorHostname(),
	}
	return nil
}

// customTag converts one of custom_tags. Environment tags are read now, as Envoy reads them once.
func customTag(ct *tracingtypev3.CustomTag) (tracing.CustomTag, error) {
	if err := ct.Validate(); err != nil {
		return tracing.CustomTag{}, err
	}
	out := tracing.CustomTag{Tag: ct.GetTag()}
	switch {
	case ct.GetLiteral() != nil:
		out.Literal = ct.GetLiteral().GetValue()
	case ct.GetEnvironment() != nil:
		out.Literal = os.Getenv(ct.GetEnvironment().GetName())
		if out.Literal == "" {
			out.Literal = ct.GetEnvironment().GetDefaultValue()
		}
	case ct.GetRequestHeader() != nil:
		out.Header = textproto.CanonicalMIMEHeaderKey(ct.GetRequestHeader().GetName())
		out.Literal = ct.GetRequestHeader().GetDefaultValue()
	default:
		return out, fmt.Errorf("tag %q: only literal, environment and request_header values are %w", ct.GetTag(), ErrUnsupported)
	}
	return out, nil
}

// setTracingDirection applies the listener's traffic_direction to its connection managers' tracing:
// OUTBOUND spans are CLIENT (egress), any other direction SERVER (ingress), as in Envoy.
func setTracingDirection(l *Listener, outbound bool) {
	for _, h := range l.HTTPManagers() {
		if h.Tracing != nil {
			h.Tracing.Outbound = outbound
		}
	}
}

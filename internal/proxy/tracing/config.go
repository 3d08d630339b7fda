package tracing

// Provider is the tracer an HTTP connection manager's spans go to.
type Provider int

// The tracers trellis-proxy implements.
const (
	// OpenTelemetry is envoy.tracers.opentelemetry: W3C tracecontext, OTLP export.
	OpenTelemetry Provider = iota + 1
	// Zipkin is envoy.tracers.zipkin: B3 propagation, Zipkin v2 JSON export.
	Zipkin
)

func (p Provider) String() string {
	switch p {
	case OpenTelemetry:
		return "opentelemetry"
	case Zipkin:
		return "zipkin"
	}
	return "unknown"
}

// Transport is how spans reach the collector.
type Transport int

// Collector transports.
const (
	// GRPC is OTLP/gRPC: a unary Export call over HTTP/2 (the cluster must speak HTTP/2).
	GRPC Transport = iota + 1
	// HTTP is one POST per batch: OTLP/HTTP protobuf, or Zipkin's JSON.
	HTTP
)

// Config is one connection manager's tracing, converted from the HCM's tracing field. It is
// immutable once built.
type Config struct {
	Provider Provider
	// Collector says where spans go; connection managers with equal collectors share one exporter.
	Collector Collector
	// Outbound is the listener's traffic_direction OUTBOUND: spans are CLIENT (OpenTelemetry) or
	// egress (Zipkin); otherwise SERVER / ingress.
	Outbound bool
	// Sampling, in hundredths of a percent (0..10000): random_sampling, client_sampling and
	// overall_sampling, each 10000 (100%) by default as in Envoy.
	RandomSampling, ClientSampling, OverallSampling uint32
	// MaxPathTagLength truncates http.url (max_path_tag_length, default 256).
	MaxPathTagLength int
	// CustomTags are added to every span.
	CustomTags []CustomTag
	// Zipkin: TraceID128 makes new trace IDs 128-bit; SharedSpanContext makes an ingress span take
	// the caller's span ID, as B3 servers do (default true).
	TraceID128, SharedSpanContext bool
}

// Collector is an exporter's destination and format.
type Collector struct {
	Provider  Provider
	Transport Transport
	// Cluster is the proxy's upstream cluster the collector is reached through (EDS, DNS, TLS and
	// circuit breakers apply as for any request).
	Cluster string
	// Path is the HTTP path: the gRPC method, OTLP/HTTP's /v1/traces, or Zipkin's collector_endpoint.
	Path string
	// Authority is the :authority sent; empty means the cluster's name.
	Authority string
	// ServiceName is the OpenTelemetry resource's service.name, or Zipkin's localEndpoint service.
	ServiceName string
}

// CustomTag is one of custom_tags: a literal value, or a request header's value with a default.
// Environment tags are resolved to literals when the config is converted, as Envoy reads the
// environment once.
type CustomTag struct {
	Tag     string
	Literal string
	// Header, when set, is the request header (canonical form) whose value is the tag; Literal is
	// then the default used when the header is absent (no tag when both are empty).
	Header string
}

// otlpGRPCPath is the OTLP trace service's Export method.
const otlpGRPCPath = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// OTLPGRPCPath returns the gRPC method path spans are exported to over OTLP/gRPC.
func OTLPGRPCPath() string { return otlpGRPCPath }

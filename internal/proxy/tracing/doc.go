// Package tracing is trellis-proxy's distributed tracing, as Envoy's tracers do it for the HTTP
// connection manager's tracing field: envoy.tracers.opentelemetry (W3C traceparent/tracestate,
// spans exported with OTLP over gRPC or HTTP) and envoy.tracers.zipkin (B3 multi and single
// headers, spans exported as Zipkin v2 JSON).
//
// A Tracer belongs to one connection manager. Per request, Start reads the incoming trace context
// (or starts a trace, sampled as Envoy decides: client_sampling, x-envoy-force-trace,
// random_sampling, overall_sampling), Inject writes the span's context into the upstream request,
// and Finish queues a sampled span with Envoy's tags (http.url, http.method, http.status_code,
// response_flags, upstream_cluster, node_id, zone, guid:x-request-id, component, error, custom
// tags). A Span lives by value in the connection manager's pooled request state; a sampled finish
// fills a pooled record whose strings point at the request's own: the request path allocates only
// the injected header values.
//
// Export runs in the background (exporter.go): one goroutine per collector, fed by a bounded queue
// that drops and counts (tracing.<provider>.spans_dropped) rather than block a request, flushing
// batches every second. Spans go to the collector through the proxy's own upstream cluster, so EDS,
// DNS, load balancing, circuit breakers and the cluster's TLS apply as for any request. The
// Registry owns the exporters and outlives config pushes; the proxy closes it on shutdown.
//
// The W3C and B3 parsers are our own (propagation.go, fuzzed): small, allocation-free, and they keep
// trellis-proxy free of the OpenTelemetry SDK. Only OTLP's message packages are imported; the
// collector's request is framed by hand.
//
// It must not depend on Envoy protos or on the control plane; internal/proxy/xdsconfig converts the
// HCM's tracing config into a Config.
package tracing

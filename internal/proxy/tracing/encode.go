package tracing

import (
	"encoding/binary"
	"encoding/json"
	"net"
	"strconv"

	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Envoy's span tag names (source/common/tracing/common_values.h).
const (
	tagComponent         = "component"
	tagNodeID            = "node_id"
	tagZone              = "zone"
	tagRequestID         = "guid:x-request-id"
	tagClientTraceID     = "guid:x-client-trace-id"
	tagHTTPURL           = "http.url"
	tagHTTPMethod        = "http.method"
	tagHTTPProtocol      = "http.protocol"
	tagHTTPStatusCode    = "http.status_code"
	tagDownstreamCluster = "downstream_cluster"
	tagUserAgent         = "user_agent"
	tagPeerAddress       = "peer.address"
	tagRequestSize       = "request_size"
	tagResponseSize      = "response_size"
	tagResponseFlags     = "response_flags"
	tagUpstreamCluster   = "upstream_cluster"
	tagUpstreamName      = "upstream_cluster.name"
	tagUpstreamAddress   = "upstream_address"
	tagError             = "error"
)

// name is the span's operation name, Envoy's default without a route decorator: "egress <host>"
// for outbound, "ingress" for inbound.
func (r *record) name() string {
	if r.server {
		return "ingress"
	}
	return "egress " + r.authority
}

// isError is Envoy's error tag rule: a 5xx, or no response at all.
func (r *record) isError() bool { return r.status >= 500 || r.status == 0 }

// tags calls f with each of the span's tags, Envoy's set and then the custom tags.
func (r *record) tags(f func(k, v string)) {
	n := r.tracer.node
	f(tagComponent, "proxy")
	if n.ID != "" {
		f(tagNodeID, n.ID)
	}
	if n.Zone != "" {
		f(tagZone, n.Zone)
	}
	if r.requestID != "" {
		f(tagRequestID, r.requestID)
	}
	if r.clientTraceID != "" {
		f(tagClientTraceID, r.clientTraceID)
	}
	f(tagHTTPURL, r.url())
	f(tagHTTPMethod, r.method)
	f(tagHTTPProtocol, r.protocol)
	f(tagDownstreamCluster, orDash(r.downstreamCluster))
	f(tagUserAgent, orDash(r.userAgent))
	if ip, _, err := net.SplitHostPort(r.peer); err == nil {
		f(tagPeerAddress, ip)
	}
	f(tagRequestSize, strconv.FormatInt(r.reqSize, 10))
	f(tagResponseSize, strconv.FormatInt(r.respSize, 10))
	f(tagHTTPStatusCode, strconv.Itoa(r.status))
	f(tagResponseFlags, r.flags.String())
	if r.upstreamCluster != "" {
		f(tagUpstreamCluster, r.upstreamCluster)
		f(tagUpstreamName, r.upstreamCluster)
	}
	if r.upstreamHost != "" {
		f(tagUpstreamAddress, r.upstreamHost)
	}
	if r.isError() {
		f(tagError, "true")
	}
	for _, t := range r.custom {
		f(t.k, t.v)
	}
}

// url is Envoy's http.url: scheme (x-forwarded-proto), authority and path, the path cut to
// max_path_tag_length.
func (r *record) url() string {
	scheme := r.scheme
	if scheme == "" {
		scheme = "http"
	}
	path := r.path
	if max := r.tracer.cfg.MaxPathTagLength; max > 0 && len(path) > max {
		path = path[:max]
	}
	return scheme + "://" + r.authority + path
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// otlpSpans builds one ResourceSpans per service name in the batch (normally one).
func (e *exporter) otlpSpans(batch []*record) []*tracev1.ResourceSpans {
	rs := &tracev1.ResourceSpans{
		Resource: &resourcev1.Resource{Attributes: []*commonv1.KeyValue{stringKV("service.name", e.serviceName(batch[0]))}},
		ScopeSpans: []*tracev1.ScopeSpans{{
			Scope: &commonv1.InstrumentationScope{Name: "trellis-proxy"},
		}},
	}
	spans := make([]*tracev1.Span, 0, len(batch))
	for _, r := range batch {
		s := &tracev1.Span{
			TraceId:           r.span.traceID[:],
			SpanId:            r.span.id[:],
			TraceState:        r.span.traceState,
			Name:              r.name(),
			Kind:              tracev1.Span_SPAN_KIND_CLIENT,
			StartTimeUnixNano: uint64(r.start.UnixNano()),
			EndTimeUnixNano:   uint64(r.start.Add(r.duration).UnixNano()),
		}
		if r.server {
			s.Kind = tracev1.Span_SPAN_KIND_SERVER
		}
		if r.span.hasParent {
			s.ParentSpanId = r.span.parent[:]
		}
		r.tags(func(k, v string) { s.Attributes = append(s.Attributes, stringKV(k, v)) })
		if r.isError() {
			s.Status = &tracev1.Status{Code: tracev1.Status_STATUS_CODE_ERROR}
		}
		spans = append(spans, s)
	}
	rs.ScopeSpans[0].Spans = spans
	return []*tracev1.ResourceSpans{rs}
}

func (e *exporter) serviceName(r *record) string {
	if e.col.ServiceName != "" {
		return e.col.ServiceName
	}
	if c := r.tracer.node.Cluster; c != "" {
		return c
	}
	return "unknown_service:trellis-proxy"
}

func stringKV(k, v string) *commonv1.KeyValue {
	return &commonv1.KeyValue{Key: k, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: v}}}
}

// otlpHTTP is an ExportTraceServiceRequest (field 1: repeated ResourceSpans), encoded by hand so
// that the proxy needs only OTLP's message packages, not the collector's gRPC service package.
func (e *exporter) otlpHTTP(batch []*record) ([]byte, error) {
	var b []byte
	for _, rs := range e.otlpSpans(batch) {
		m, err := proto.Marshal(rs)
		if err != nil {
			return nil, err
		}
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	return b, nil
}

// otlpGRPC frames the request as one gRPC message: uncompressed flag, 4-byte length, message.
func (e *exporter) otlpGRPC(batch []*record) ([]byte, error) {
	msg, err := e.otlpHTTP(batch)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...), nil
}

// zipkinSpan is a Zipkin v2 span in its JSON form.
type zipkinSpan struct {
	TraceID       string            `json:"traceId"`
	ID            string            `json:"id"`
	ParentID      string            `json:"parentId,omitempty"`
	Name          string            `json:"name"`
	Kind          string            `json:"kind"`
	Timestamp     int64             `json:"timestamp"`
	Duration      int64             `json:"duration"`
	Shared        bool              `json:"shared,omitempty"`
	LocalEndpoint zipkinEndpoint    `json:"localEndpoint"`
	Tags          map[string]string `json:"tags"`
}

type zipkinEndpoint struct {
	ServiceName string `json:"serviceName"`
}

// zipkinJSON is Zipkin's v2 JSON (collector_endpoint_version HTTP_JSON): a list of spans.
func (e *exporter) zipkinJSON(batch []*record) ([]byte, error) {
	out := make([]zipkinSpan, 0, len(batch))
	for _, r := range batch {
		z := zipkinSpan{
			TraceID:       string(AppendB3TraceID(nil, r.span.traceID)),
			ID:            string(appendHex(nil, r.span.id[:])),
			Name:          r.name(),
			Kind:          "CLIENT",
			Timestamp:     r.start.UnixMicro(),
			Duration:      max(r.duration.Microseconds(), 1),
			Shared:        r.span.shared,
			LocalEndpoint: zipkinEndpoint{ServiceName: e.serviceName(r)},
			Tags:          map[string]string{},
		}
		if r.server {
			z.Kind = "SERVER"
		}
		if r.span.hasParent {
			z.ParentID = string(appendHex(nil, r.span.parent[:]))
		}
		r.tags(func(k, v string) { z.Tags[k] = v })
		out = append(out, z)
	}
	return json.Marshal(out)
}

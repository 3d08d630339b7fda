package tracing

import (
	"encoding/binary"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// Span is one request's span. The connection manager keeps it by value in its pooled per-request
// state, so starting one costs no allocation.
type Span struct {
	// active: the request has a span, whose context goes upstream; only a sampled one is exported.
	active  bool
	sampled bool
	// shared: a Zipkin ingress span that took its caller's span ID (shared_span_context).
	shared     bool
	hasParent  bool
	traceID    TraceID
	id, parent SpanID
	traceState string
}

// Active reports whether the request has a span (it may still be unsampled).
func (s *Span) Active() bool { return s.active }

// Sampled reports whether the span will be exported.
func (s *Span) Sampled() bool { return s.sampled }

// TraceID is the span's trace.
func (s *Span) TraceID() TraceID { return s.traceID }

// ID is the span's ID.
func (s *Span) ID() SpanID { return s.id }

// Parent is the span's parent, when it has one.
func (s *Span) Parent() (SpanID, bool) { return s.parent, s.hasParent }

// Reset clears the span for the next request.
func (s *Span) Reset() { *s = Span{} }

// Tracer starts, propagates and finishes the spans of one connection manager. It is immutable and
// safe for concurrent use.
type Tracer struct {
	cfg  *Config
	exp  *exporter
	node *Node
}

// Node is what the proxy knows of itself: Envoy's node_id and zone span tags, and the Zipkin local
// service name when the config gives none.
type Node struct {
	ID, Zone, Cluster string
}

// Config returns the tracer's config.
func (t *Tracer) Config() *Config { return t.cfg }

// Start begins the request's span from its headers. An incoming trace is continued with its own
// sampling decision (traceparent's flag; B3's x-b3-sampled when given); otherwise a new trace is
// started, sampled as Envoy decides: x-client-trace-id with client_sampling, x-envoy-force-trace,
// then random_sampling, all capped by overall_sampling. A malformed trace header means no span, and
// the header goes upstream untouched, as with Envoy's tracers.
func (t *Tracer) Start(s *Span, h http.Header) {
	switch t.cfg.Provider {
	case OpenTelemetry:
		c, found, err := ExtractW3C(h)
		if err != nil {
			return
		}
		if found {
			s.traceID, s.parent, s.hasParent = c.TraceID, c.SpanID, true
			s.sampled, s.traceState = c.Sampled, c.TraceState
		} else {
			s.traceID = newTraceID(true)
			s.sampled = t.decide(h)
		}
		s.id = newSpanID()
	case Zipkin:
		c, found, err := ExtractB3(h)
		if err != nil {
			return
		}
		s.sampled = c.Sampled
		if !c.HasSampled {
			s.sampled = t.decide(h)
		}
		switch {
		case !found:
			s.traceID, s.id = newTraceID(t.cfg.TraceID128), newSpanID()
		case !t.cfg.Outbound && t.cfg.SharedSpanContext:
			// B3's server side: the span is the caller's, seen from here.
			s.traceID, s.id, s.shared = c.TraceID, c.SpanID, true
			s.parent, s.hasParent = c.ParentID, !c.ParentID.IsZero()
		default:
			s.traceID, s.id = c.TraceID, newSpanID()
			s.parent, s.hasParent = c.SpanID, true
		}
	default:
		return
	}
	s.active = true
}

// decide is Envoy's sampling decision for a request that brings no trace of its own. The random
// part hashes x-request-id (its first 8 hex digits, as Envoy's UUID extension), so proxies seeing
// the same request ID decide alike; without a usable request ID it is random.
func (t *Tracer) decide(h http.Header) bool {
	result := rand.Uint64N(10000)
	if id := h[headerRequestID]; len(id) > 0 && len(id[0]) >= 8 {
		var b [4]byte
		if decodeHexAnyCase(b[:], id[0][:8]) {
			result = uint64(binary.BigEndian.Uint32(b[:])) % 10000
		}
	}
	traced := false
	switch {
	case len(h[headerClientTrace]) > 0 && rand.Uint32N(10000) < t.cfg.ClientSampling:
		traced = true
	case len(h[headerForceTrace]) > 0:
		traced = true
	case result < uint64(t.cfg.RandomSampling):
		traced = true
	}
	return traced && result < uint64(t.cfg.OverallSampling)
}

// Shared header values.
var (
	valueOne  = []string{"1"}
	valueZero = []string{"0"}
)

// Inject writes the span's context into the upstream request's headers: traceparent (tracestate
// passes through as received) for OpenTelemetry; x-b3-traceid, x-b3-spanid, x-b3-parentspanid and
// x-b3-sampled for Zipkin, which replace a single b3 header.
func (t *Tracer) Inject(s *Span, h http.Header) {
	if !s.active {
		return
	}
	var buf [55]byte
	switch t.cfg.Provider {
	case OpenTelemetry:
		h[headerTraceparent] = []string{string(AppendTraceparent(buf[:0], s.traceID, s.id, s.sampled))}
	case Zipkin:
		delete(h, headerB3)
		h[headerB3TraceID] = []string{string(AppendB3TraceID(buf[:0], s.traceID))}
		h[headerB3SpanID] = []string{string(appendHex(buf[:0], s.id[:]))}
		if s.hasParent {
			h[headerB3ParentID] = []string{string(appendHex(buf[:0], s.parent[:]))}
		} else {
			delete(h, headerB3ParentID)
		}
		if s.sampled {
			h[headerB3Sampled] = valueOne
		} else {
			h[headerB3Sampled] = valueZero
		}
	}
}

// Finish ends the request's span: a sampled one is queued for export with the request's record.
// It never blocks: when the export queue is full the span is dropped and counted.
func (t *Tracer) Finish(s *Span, i *streaminfo.Info) {
	if !s.active || !s.sampled || t.exp == nil {
		return
	}
	r := getRecord()
	r.span = *s
	r.server = !t.cfg.Outbound
	r.tracer = t
	r.start, r.duration = i.Start, i.Duration
	r.method, r.authority, r.path, r.protocol = i.Method, i.Authority, i.Path, i.Protocol
	r.status, r.flags = i.ResponseCode, i.Flags
	r.upstreamCluster, r.upstreamHost = i.UpstreamCluster, i.UpstreamHost
	r.reqSize, r.respSize = i.BytesReceived, i.BytesSent
	r.peer = i.DownstreamRemoteAddr
	if h := i.RequestHeaders; h != nil {
		r.requestID = first(h[headerRequestID])
		r.clientTraceID = first(h[headerClientTrace])
		r.userAgent = first(h[headerUserAgent])
		r.downstreamCluster = first(h[headerDownstreamCl])
		r.scheme = first(h[headerForwardProto])
		if p := first(h[headerOriginalPath]); p != "" {
			r.path = p
		}
	}
	for _, ct := range t.cfg.CustomTags {
		v := ct.Literal
		if ct.Header != "" && i.RequestHeaders != nil {
			if hv := i.RequestHeaders[ct.Header]; len(hv) > 0 {
				v = hv[0]
			}
		}
		if v != "" {
			r.custom = append(r.custom, kv{ct.Tag, v})
		}
	}
	t.exp.enqueue(r)
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

func newTraceID(bits128 bool) TraceID {
	var t TraceID
	for t.IsZero() {
		if bits128 {
			binary.BigEndian.PutUint64(t[:8], rand.Uint64())
		}
		binary.BigEndian.PutUint64(t[8:], rand.Uint64())
	}
	return t
}

func newSpanID() SpanID {
	var s SpanID
	for s.IsZero() {
		binary.BigEndian.PutUint64(s[:], rand.Uint64())
	}
	return s
}

func decodeHexAnyCase(dst []byte, s string) bool {
	for i := range dst {
		hi, ok1 := hexValAnyCase(s[2*i])
		lo, ok2 := hexValAnyCase(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func hexValAnyCase(c byte) (byte, bool) {
	if 'A' <= c && c <= 'F' {
		return c - 'A' + 10, true
	}
	return hexVal(c)
}

// record is a finished sampled span waiting for export. Its strings point into the request's
// (immutable) strings, so filling it copies no bytes.
type record struct {
	span   Span
	server bool
	tracer *Tracer

	start    time.Time
	duration time.Duration

	method, scheme, authority, path, protocol string
	requestID, clientTraceID, userAgent       string
	downstreamCluster, peer                   string
	upstreamCluster, upstreamHost             string
	status                                    int
	flags                                     streaminfo.Flags
	reqSize, respSize                         int64
	custom                                    []kv
}

type kv struct{ k, v string }

package hcm

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/tracing"
)

// stream is one request's state, pooled so that the record access logs read (streaminfo.Info) and
// the filters' view (filters.Exchange) cost no allocation per request.
type stream struct {
	info streaminfo.Info
	x    filters.Exchange
	ex   exchange
	grpc bool
	// ran has bit i set when filter i of the chain ran on this request (for filters.Completer).
	ran uint64
	// upgrade is the Upgrade type (WebSocket...) the request asks for and the HCM allows, or "".
	upgrade string
	// body wraps the request body when there is one: it counts bytes and keeps what a retry or a
	// mirror replays. Allocated per request with a body, never pooled: the upstream transport may
	// still read it after the handler returns.
	body *replayBody
	// span is the request's trace span when the connection manager traces.
	span tracing.Span
	// keepHeader: something may read the request's header map after the handler returns, so the
	// h1 server must not reuse it (it reuses r.Header unless the handler sets it to nil).
	keepHeader bool
}

var streams = sync.Pool{New: func() any { return new(stream) }}

func getStream() *stream { return streams.Get().(*stream) }

// begin fills in what is known of the request on arrival.
func (h *Handler) begin(s *stream, r *http.Request) {
	i := &s.info
	i.Start = time.Now()
	i.Protocol = protocol(r)
	i.Method = r.Method
	i.Path = s.ex.path
	i.Authority = s.ex.authority
	i.RequestHeaders = r.Header
	i.DownstreamRemoteAddr = r.RemoteAddr
	i.SetDownstreamTLS(r.TLS)
	if h.cfg.OnComplete != nil {
		// Only a reader needs it, and rendering an address allocates.
		if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			i.DownstreamLocalAddr = local.String()
		}
		if r.TLS != nil {
			i.ServerName = r.TLS.ServerName
		}
	}
	s.grpc = isGRPC(r.Header)
	if r.Body != nil && r.Body != http.NoBody && (r.ContentLength != 0 || len(r.TransferEncoding) > 0) {
		s.body = newReplayBody(r.Body)
		r.Body = s.body
	}
}

// finish completes the request's record, hands it to OnComplete and recycles the stream.
func (h *Handler) finish(s *stream) {
	h.stats.RqCompleted.Inc()
	i := &s.info
	i.Duration = time.Since(i.Start)
	if s.body != nil {
		i.BytesReceived = s.body.Received()
	}
	if h.completers {
		for j := range h.chain {
			e := &h.chain[j]
			if e.completer != nil && (e.observer || (j < 64 && s.ran&(1<<j) != 0)) {
				e.completer.OnComplete(i)
			}
		}
	}
	if h.tracer != nil {
		h.tracer.Finish(&s.span, i)
		s.span.Reset()
	}
	if f := h.cfg.OnComplete; f != nil {
		f(i)
	}
	if s.keepHeader && s.ex.r != nil {
		s.ex.r.Header = nil
	}
	i.Reset()
	s.x.Reset()
	s.ex = exchange{}
	s.grpc = false
	s.ran = 0
	s.upgrade = ""
	s.body = nil
	s.keepHeader = false
	streams.Put(s)
}

func protocol(r *http.Request) string {
	switch {
	case r.ProtoMajor == 2:
		return "HTTP/2"
	case r.ProtoMinor == 0:
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

// isGRPC reports whether a request is gRPC: its content-type is application/grpc or a subtype
// ("application/grpc+proto"), as Envoy's Grpc::Common::isGrpcRequestHeaders decides.
func isGRPC(h http.Header) bool {
	ct := h["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	v := ct[0]
	const g = "application/grpc"
	if !strings.HasPrefix(v, g) {
		return false
	}
	return len(v) == len(g) || v[len(g)] == '+' || v[len(g)] == ';'
}

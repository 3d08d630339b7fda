package hcm

import (
	"net/http"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// localReply answers the request itself, the way Envoy's local replies look, and records why.
func (h *Handler) localReply(w http.ResponseWriter, r *http.Request, s *stream, code int, body, details string, flag streaminfo.Flags) {
	s.info.SetFlag(flag)
	h.sendLocalReply(w, r, s, code, body, details, 0, false)
}

// sendLocalReply writes a local reply. A gRPC request gets a trailers-only gRPC response instead:
// HTTP 200, grpc-status (grpcStatus when hasGRPC, else mapped from code as Envoy's
// Grpc::Utility::httpToGrpcStatus does) and grpc-message carrying the body.
func (h *Handler) sendLocalReply(w http.ResponseWriter, r *http.Request, s *stream, code int, body, details string, grpcStatus int, hasGRPC bool) {
	hdr := w.Header()
	if s.grpc {
		if !hasGRPC {
			grpcStatus = httpToGRPCStatus(code)
		}
		hdr.Set("Content-Type", "application/grpc")
		hdr.Set("Grpc-Status", itoa(int64(grpcStatus)))
		if body != "" {
			hdr.Set("Grpc-Message", grpcMessage(body))
		}
		body = ""
	} else if body != "" {
		hdr.Set("Content-Type", "text/plain")
		hdr.Set("Content-Length", itoa(int64(len(body))))
	} else {
		hdr.Set("Content-Length", "0")
	}
	h.commonResponseHeaders(hdr, r, s)
	for k, vs := range s.x.Reply().Headers {
		hdr[k] = vs
	}
	if s.grpc {
		code = http.StatusOK // what Envoy sends, logs and counts for a gRPC local reply
	}
	s.info.ResponseCode = code
	s.info.ResponseCodeDetails = details
	s.info.ResponseHeaders = hdr
	h.stats.RqClass.Record(code)
	w.WriteHeader(code)
	if body != "" && r.Method != http.MethodHead {
		n, _ := w.Write([]byte(body))
		s.info.BytesSent += int64(n)
	}
}

// commonResponseHeaders adds what every response gets: the server header, the request ID when asked
// for, and the headers filters added.
func (h *Handler) commonResponseHeaders(hdr http.Header, r *http.Request, s *stream) {
	switch h.cfg.ServerHeader {
	case xdsconfig.ServerHeaderOverwrite:
		hdr["Server"] = h.serverValue
	case xdsconfig.ServerHeaderAppendIfAbsent:
		if len(hdr["Server"]) == 0 {
			hdr["Server"] = h.serverValue
		}
	}
	if h.cfg.AlwaysSetRequestIDInResponse {
		if id := r.Header.Get("X-Request-Id"); id != "" {
			hdr.Set("X-Request-Id", id)
		}
	}
	for k, vs := range s.x.ResponseHeaders() {
		hdr[k] = append(hdr[k], vs...)
	}
}

// redirect answers with a route's redirect.
func (h *Handler) redirect(w http.ResponseWriter, r *http.Request, s *stream, rt *route.Route) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
		scheme = p // Envoy builds the new URI from x-forwarded-proto
	}
	w.Header().Set("Location", rt.RedirectLocation(scheme, s.ex.authority, s.ex.path))
	h.directResponse(w, r, s, &route.DirectResponse{Status: rt.Action.Redirect.Code})
}

// directResponse answers with a route's direct_response or redirect. It goes out as configured, even
// to a gRPC client: it is the route's answer, not an error of the proxy (Envoy's router encodes it
// directly rather than as a local reply).
func (h *Handler) directResponse(w http.ResponseWriter, r *http.Request, s *stream, d *route.DirectResponse) {
	hdr := w.Header()
	if d.Body != "" {
		hdr.Set("Content-Type", "text/plain")
	}
	hdr.Set("Content-Length", itoa(int64(len(d.Body))))
	h.commonResponseHeaders(hdr, r, s)
	s.info.ResponseCode = d.Status
	s.info.ResponseCodeDetails = detailsDirectResponse
	s.info.ResponseHeaders = hdr
	h.stats.RqClass.Record(d.Status)
	w.WriteHeader(d.Status)
	if d.Body != "" && r.Method != http.MethodHead {
		n, _ := w.Write([]byte(d.Body))
		s.info.BytesSent += int64(n)
	}
}

// gRPC status codes (google.golang.org/grpc/codes) the proxy sends.
const (
	grpcUnknown          = 2
	grpcPermissionDenied = 7
	grpcUnimplemented    = 12
	grpcInternal         = 13
	grpcUnavailable      = 14
	grpcUnauthenticated  = 16
)

// httpToGRPCStatus is Envoy's Grpc::Utility::httpToGrpcStatus.
func httpToGRPCStatus(code int) int {
	switch code {
	case 400:
		return grpcInternal
	case 401:
		return grpcUnauthenticated
	case 403:
		return grpcPermissionDenied
	case 404:
		return grpcUnimplemented
	case 429, 502, 503, 504:
		return grpcUnavailable
	}
	return grpcUnknown
}

// grpcMessage percent-encodes a grpc-message value as the gRPC HTTP/2 spec asks: bytes outside
// printable ASCII, and '%', become %XX.
func grpcMessage(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b = append(b, '%', upperHex[c>>4], upperHex[c&0xf])
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

const upperHex = "0123456789ABCDEF"

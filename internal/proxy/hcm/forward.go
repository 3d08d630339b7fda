package hcm

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// exchange is one request's routing view; it serves route.HeaderGetter, pseudo-headers included.
type exchange struct {
	r         *http.Request
	path      string
	authority string
}

func (e *exchange) Get(name string) (string, bool) {
	if len(name) > 0 && name[0] == ':' {
		switch name {
		case ":authority":
			return e.authority, true
		case ":path":
			return e.path, true
		case ":method":
			return e.r.Method, true
		case ":scheme":
			return "http", true
		}
		return "", false
	}
	vs := e.r.Header[name]
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

// requestPath is the origin-form target (:path): absolute-form requests sent to an explicit proxy
// ("GET http://reviews:9080/x") are routed and forwarded by their path alone.
func requestPath(r *http.Request) string {
	if uri := r.RequestURI; len(uri) > 0 && uri[0] == '/' {
		return uri
	}
	if r.URL == nil || r.Method == http.MethodConnect {
		return ""
	}
	p := r.URL.EscapedPath()
	if p == "" {
		p = "/"
	}
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		p += "?" + r.URL.RawQuery
	}
	return p
}

// hopByHop are the headers that describe one connection and never cross the proxy.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		delete(h, name)
	}
	// TE is hop-by-hop too, but "te: trailers" is how gRPC clients ask for trailers end to end.
	if te, ok := h["Te"]; ok && !(len(te) == 1 && strings.EqualFold(strings.TrimSpace(te[0]), "trailers")) {
		delete(h, "Te")
	}
}

// prepare turns the downstream request's headers into the upstream ones, once for every try, and
// returns the path and Host to send. It reuses r's header map: the downstream request is ours to
// change.
func (h *Handler) prepare(r *http.Request, s *stream, rt *route.Route, wc *route.WeightedCluster, mut [4]*route.HeaderMutation) (path, hostHeader string) {
	hdr := r.Header
	removeHopByHop(hdr)
	h.forwardClientCert(r)
	scheme := valueHTTP // shared, never modified: no allocation per request
	if r.TLS != nil {
		scheme = valueHTTPS
	}
	if h.cfg.UseRemoteAddress {
		// Envoy trusts the connection, not the client, for where the request came from: it appends
		// the peer's address to X-Forwarded-For and states the scheme it really arrived over, unless
		// the peer is internal and said so itself.
		ip := remoteIP(r.RemoteAddr)
		if !h.cfg.SkipXFFAppend && ip != "" {
			if xff := hdr["X-Forwarded-For"]; len(xff) > 0 {
				hdr["X-Forwarded-For"] = []string{strings.Join(xff, ",") + "," + ip}
			} else {
				hdr["X-Forwarded-For"] = []string{ip}
			}
		}
		if len(hdr["X-Forwarded-Proto"]) == 0 || !internalAddress(ip) {
			hdr["X-Forwarded-Proto"] = scheme
		}
	} else if len(hdr["X-Forwarded-Proto"]) == 0 {
		hdr["X-Forwarded-Proto"] = scheme
	}
	path, rewritten := rt.RewritePath(s.ex.path)
	if rewritten && !h.cfg.SuppressEnvoyHeaders {
		hdr.Set("X-Envoy-Original-Path", s.ex.path)
	}
	hostHeader = rt.UpstreamHost(s.ex.authority, s.ex.path, &s.ex)
	if wc != nil && wc.HostRewrite != "" {
		hostHeader = wc.HostRewrite
	}
	route.ApplyAll(mut, hdr)
	if s.span.Active() {
		h.tracer.Inject(&s.span, hdr)
	}
	return path, hostHeader
}

// newUpstreamRequest is one try's request to host, with ctx.
func newUpstreamRequest(ctx context.Context, r *http.Request, hdr http.Header, path, hostHeader string, host *upstream.Host, body io.ReadCloser) *http.Request {
	u := &url.URL{Scheme: "http", Host: host.Target()}
	if strings.HasPrefix(path, "//") {
		// URL.RequestURI would turn an opaque "//x" into an absolute URL; go through Path instead.
		p, q, _ := strings.Cut(path, "?")
		u.Path, _ = url.PathUnescape(p)
		u.RawPath, u.RawQuery = p, q
	} else {
		u.Opaque = path
	}
	out := http.Request{
		Method:     r.Method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     hdr,
		Host:       hostHeader,
	}
	if body != nil {
		out.Body = body
		out.ContentLength = r.ContentLength // -1 for a body of unknown length
	}
	// WithContext makes the one heap copy; out itself stays on the stack.
	return out.WithContext(ctx)
}

// Shared single-value header slices, so that the common values cost no allocation per request.
// Their capacity is 1: http.Header.Add and append copy rather than write into them, and nothing
// changes a header value in place.
var valueHTTP, valueHTTPS = []string{"http"}, []string{"https"}

// msValues are the values of x-envoy-upstream-service-time below a second.
var msValues = func() (t [1000][]string) {
	for i := range t {
		t[i] = []string{strconv.Itoa(i)}
	}
	return t
}()

// msValue is a header value for a count of milliseconds.
func msValue(ms int64) []string {
	if ms >= 0 && ms < int64(len(msValues)) {
		return msValues[ms]
	}
	return []string{itoa(ms)}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// writeResponse sends the upstream response downstream.
func (h *Handler) writeResponse(w http.ResponseWriter, r *http.Request, s *stream, resp *http.Response, rt *route.Route, mut [4]*route.HeaderMutation) {
	if h.respFilters {
		for j := range h.chain {
			if f := h.chain[j].response; f != nil && j < 64 && s.ran&(1<<j) != 0 {
				f.OnUpstreamResponse(&s.info, resp.Header)
			}
		}
	}
	dst := w.Header()
	for k, vs := range resp.Header {
		dst[k] = vs
	}
	removeHopByHop(dst)
	route.ApplyAll(mut, dst)
	if !h.cfg.SuppressEnvoyHeaders {
		dst["X-Envoy-Upstream-Service-Time"] = msValue(s.info.UpstreamServiceTime.Milliseconds())
	}
	if rt.Action.IncludeAttemptCountInResponse {
		dst.Set("X-Envoy-Attempt-Count", itoa(int64(s.info.Attempts)))
	}
	h.commonResponseHeaders(dst, r, s)
	for k := range resp.Trailer {
		dst.Add("Trailer", k)
	}
	s.info.ResponseCode = resp.StatusCode
	s.info.ResponseCodeDetails = detailsViaUpstream
	s.info.ResponseHeaders = dst
	w.WriteHeader(resp.StatusCode)
	h.stats.RqClass.Record(resp.StatusCode)

	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	streaming := resp.ContentLength < 0
	var flusher http.Flusher
	if streaming {
		flusher, _ = w.(http.Flusher)
	}
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			s.info.BytesSent += int64(m)
			if werr != nil {
				s.info.SetFlag(streaminfo.DownstreamConnectionTermination)
				return // the client went away
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if r.Context().Err() == nil {
				h.stats.Resets.Inc()
				s.info.SetFlag(streaminfo.UpstreamRemoteReset)
			} else {
				s.info.SetFlag(streaminfo.DownstreamConnectionTermination)
			}
			// Reset the downstream connection: the response is incomplete and must not look whole.
			panic(http.ErrAbortHandler)
		}
	}
	for k, vs := range resp.Trailer {
		dst[http.TrailerPrefix+k] = vs
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

const hexDigits = "0123456789abcdef"

// newRequestID returns a random (version 4) UUID, the form Envoy generates for x-request-id.
func newRequestID() string {
	var b [16]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		b[i] = byte(hi >> (8 * i))
		b[8+i] = byte(lo >> (8 * i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	j := 0
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j], s[j+1] = hexDigits[c>>4], hexDigits[c&0xf]
		j += 2
	}
	return string(s[:])
}

// remoteIP is the host part of a RemoteAddr ("10.1.2.3:5000" → "10.1.2.3").
func remoteIP(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return host
}

// internalAddress is Envoy's classic notion of an internal peer: loopback, RFC 1918 and unique
// local (fc00::/7) addresses.
func internalAddress(ip string) bool {
	a, err := netip.ParseAddr(ip)
	return err == nil && (a.IsLoopback() || a.IsPrivate())
}

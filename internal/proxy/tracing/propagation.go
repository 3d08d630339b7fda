package tracing

import (
	"errors"
	"net/http"
	"strings"
)

// TraceID is a 128-bit trace ID; B3's 64-bit IDs fill the low half (bytes 8..15).
type TraceID [16]byte

// SpanID is a 64-bit span ID.
type SpanID [8]byte

// IsZero reports an all-zero ID, which both W3C and B3 forbid.
func (t TraceID) IsZero() bool { return t == TraceID{} }

// IsZero reports an all-zero ID.
func (s SpanID) IsZero() bool { return s == SpanID{} }

// High64 reports whether the high half is set (a 128-bit ID, rendered as 32 hex digits in B3).
func (t TraceID) High64() bool { return [8]byte(t[:8]) != [8]byte{} }

// Header names, in net/http's canonical form so lookups need no canonicalisation.
const (
	headerTraceparent  = "Traceparent"
	headerTracestate   = "Tracestate"
	headerB3           = "B3"
	headerB3TraceID    = "X-B3-Traceid"
	headerB3SpanID     = "X-B3-Spanid"
	headerB3ParentID   = "X-B3-Parentspanid"
	headerB3Sampled    = "X-B3-Sampled"
	headerB3Flags      = "X-B3-Flags"
	headerClientTrace  = "X-Client-Trace-Id"
	headerForceTrace   = "X-Envoy-Force-Trace"
	headerRequestID    = "X-Request-Id"
	headerUserAgent    = "User-Agent"
	headerDownstreamCl = "X-Envoy-Downstream-Service-Cluster"
	headerForwardProto = "X-Forwarded-Proto"
	headerOriginalPath = "X-Envoy-Original-Path"
)

// Context is a span context read from a request: W3C tracecontext or B3.
type Context struct {
	TraceID  TraceID
	SpanID   SpanID
	ParentID SpanID // B3 only: x-b3-parentspanid, or zero
	// Sampled is the sampling flag; HasSampled says the headers carried one (B3's is optional).
	Sampled, HasSampled bool
	// TraceState is W3C tracestate, passed on unchanged.
	TraceState string
}

// Errors of the parsers. A request with a malformed header is not traced, as Envoy's tracers do.
var (
	ErrMalformed = errors.New("malformed trace context header")
)

// ParseTraceparent parses a W3C traceparent value ("00-<32 hex>-<16 hex>-<2 hex>"). Versions above
// 00 are read as 00 when they are at least as long and go on with '-', as the spec asks; version ff,
// upper-case hex and all-zero IDs are invalid.
func ParseTraceparent(v string) (Context, error) {
	var c Context
	if len(v) < 55 {
		return c, ErrMalformed
	}
	ver, ok := hexByte(v[0], v[1])
	if !ok || ver == 0xff || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return c, ErrMalformed
	}
	if ver == 0 && len(v) != 55 || ver > 0 && len(v) > 55 && v[55] != '-' {
		return c, ErrMalformed
	}
	if !decodeHex(c.TraceID[:], v[3:35]) || !decodeHex(c.SpanID[:], v[36:52]) {
		return c, ErrMalformed
	}
	flags, ok := hexByte(v[53], v[54])
	if !ok || c.TraceID.IsZero() || c.SpanID.IsZero() {
		return c, ErrMalformed
	}
	c.Sampled, c.HasSampled = flags&1 == 1, true
	return c, nil
}

// AppendTraceparent appends version 00 of traceparent for a span.
func AppendTraceparent(b []byte, t TraceID, s SpanID, sampled bool) []byte {
	b = append(b, "00-"...)
	b = appendHex(b, t[:])
	b = append(b, '-')
	b = appendHex(b, s[:])
	if sampled {
		return append(b, "-01"...)
	}
	return append(b, "-00"...)
}

// ExtractW3C reads traceparent and tracestate from h. found is false without a traceparent.
func ExtractW3C(h http.Header) (c Context, found bool, err error) {
	tp := h[headerTraceparent]
	if len(tp) == 0 {
		return c, false, nil
	}
	if len(tp) > 1 {
		return c, true, ErrMalformed // the spec: more than one traceparent is invalid
	}
	c, err = ParseTraceparent(tp[0])
	if err != nil {
		return c, true, err
	}
	switch ts := h[headerTracestate]; len(ts) {
	case 0:
	case 1:
		c.TraceState = ts[0]
	default:
		c.TraceState = strings.Join(ts, ",")
	}
	return c, true, nil
}

// ExtractB3 reads B3 propagation from h: the single b3 header, which wins when present, or the
// x-b3-* headers. found is false when neither carries a trace; a sampling-only b3 ("0", "1", "d")
// or a lone x-b3-sampled sets Sampled/HasSampled with found false.
func ExtractB3(h http.Header) (c Context, found bool, err error) {
	if v := h[headerB3]; len(v) > 0 {
		return ParseB3Single(v[0])
	}
	if s := h[headerB3Sampled]; len(s) > 0 {
		if c.Sampled, err = parseB3Sampled(s[0]); err != nil {
			return c, false, err
		}
		c.HasSampled = true
	}
	if f := h[headerB3Flags]; len(f) > 0 && f[0] == "1" {
		c.Sampled, c.HasSampled = true, true // debug implies sampled
	}
	tid, sid := h[headerB3TraceID], h[headerB3SpanID]
	if len(tid) == 0 && len(sid) == 0 {
		return c, false, nil
	}
	if len(tid) == 0 || len(sid) == 0 {
		return c, true, ErrMalformed // Envoy needs both
	}
	if !parseB3TraceID(&c.TraceID, tid[0]) || len(sid[0]) != 16 || !decodeHex(c.SpanID[:], sid[0]) {
		return c, true, ErrMalformed
	}
	if p := h[headerB3ParentID]; len(p) > 0 {
		if len(p[0]) != 16 || !decodeHex(c.ParentID[:], p[0]) {
			return c, true, ErrMalformed
		}
	}
	if c.TraceID.IsZero() || c.SpanID.IsZero() {
		return c, true, ErrMalformed
	}
	return c, true, nil
}

// ParseB3Single parses the single b3 header: "{trace}-{span}[-{sampling}[-{parent}]]", or just the
// sampling state ("0", "1", "d").
func ParseB3Single(v string) (c Context, found bool, err error) {
	if len(v) == 1 {
		c.Sampled, err = parseB3Sampled(v)
		c.HasSampled = err == nil
		return c, false, err
	}
	trace, rest, ok := strings.Cut(v, "-")
	if !ok || !parseB3TraceID(&c.TraceID, trace) {
		return c, true, ErrMalformed
	}
	span, rest, more := strings.Cut(rest, "-")
	if len(span) != 16 || !decodeHex(c.SpanID[:], span) {
		return c, true, ErrMalformed
	}
	if more {
		sampling, parent, hasParent := strings.Cut(rest, "-")
		if len(sampling) != 1 {
			return c, true, ErrMalformed
		}
		if c.Sampled, err = parseB3Sampled(sampling); err != nil {
			return c, true, err
		}
		c.HasSampled = true
		if hasParent && (len(parent) != 16 || !decodeHex(c.ParentID[:], parent)) {
			return c, true, ErrMalformed
		}
	}
	if c.TraceID.IsZero() || c.SpanID.IsZero() {
		return c, true, ErrMalformed
	}
	return c, true, nil
}

// parseB3Sampled reads a sampling state: "1", "d" (debug) and "true" sample; "0" and "false" do not.
func parseB3Sampled(v string) (bool, error) {
	switch v {
	case "1", "d", "true":
		return true, nil
	case "0", "false":
		return false, nil
	}
	return false, ErrMalformed
}

// parseB3TraceID reads 16 or 32 hex digits; 16 fill the low half.
func parseB3TraceID(t *TraceID, v string) bool {
	switch len(v) {
	case 32:
		return decodeHex(t[:], v)
	case 16:
		return decodeHex(t[8:], v)
	}
	return false
}

// AppendB3TraceID renders a trace ID as B3 does: 32 hex digits when the high half is set, else 16.
func AppendB3TraceID(b []byte, t TraceID) []byte {
	if t.High64() {
		return appendHex(b, t[:])
	}
	return appendHex(b, t[8:])
}

const hexDigits = "0123456789abcdef"

func appendHex(b, src []byte) []byte {
	for _, c := range src {
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return b
}

// decodeHex decodes exactly 2*len(dst) lower-case hex digits of s into dst.
func decodeHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		b, ok := hexByte(s[2*i], s[2*i+1])
		if !ok {
			return false
		}
		dst[i] = b
	}
	return true
}

func hexByte(hi, lo byte) (byte, bool) {
	h, ok1 := hexVal(hi)
	l, ok2 := hexVal(lo)
	return h<<4 | l, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

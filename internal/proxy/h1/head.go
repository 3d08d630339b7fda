package h1

import (
	"bufio"
	"net/http"
	"strings"
)

// statusError is a parse failure and the status a server answers it with.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return "h1: " + e.msg }

func badRequest(msg string) error { return &statusError{http.StatusBadRequest, msg} }

var (
	errLineTooLong   = &statusError{http.StatusRequestURITooLong, "request line too long"}
	errHeaderTooLong = &statusError{http.StatusRequestHeaderFieldsTooLarge, "header fields too large"}
	errObsFold       = badRequest("obsolete line folding in header field")
	errBareCR        = badRequest("bare CR in message head")
	errFieldName     = badRequest("malformed header field name")
	errFieldValue    = badRequest("invalid byte in header field value")
	errNoColon       = badRequest("header field without colon")
)

// maxLeadingEmptyLines bounds the empty lines a server skips before a request line (RFC 9112 §2.2:
// some clients send a CRLF after a POST body).
const maxLeadingEmptyLines = 4

// readHead reads one message head (start line, header fields, empty line) from br into buf and
// returns it, line terminators included. The start line may be maxLine bytes, the fields maxFields
// bytes together. With fieldsOnly (a chunked trailer section) there is no start line. A clean EOF
// before any byte returns an empty head and the reader's error.
func readHead(br *bufio.Reader, buf []byte, maxLine, maxFields int, fieldsOnly bool) ([]byte, error) {
	buf = buf[:0]
	lineStart, regionStart, limit := 0, 0, maxLine
	inFields := fieldsOnly
	if fieldsOnly {
		limit = maxFields
	}
	empties := 0
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag)-regionStart > limit {
			if inFields {
				return buf, errHeaderTooLong
			}
			return buf, errLineTooLong
		}
		buf = append(buf, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return buf, err
		}
		line := buf[lineStart:]
		empty := len(line) == 1 || (len(line) == 2 && line[0] == '\r')
		switch {
		case !inFields && empty:
			if empties++; empties > maxLeadingEmptyLines {
				return buf, badRequest("empty request line")
			}
			buf = buf[:0]
			lineStart = 0
			continue
		case !inFields:
			inFields = true
			regionStart, limit = len(buf), maxFields
		case empty:
			return buf, nil
		}
		lineStart = len(buf)
	}
}

// nextLine splits s at its first line terminator (LF or CRLF) and returns the line without it.
func nextLine(s string) (line, rest string, err error) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return s, "", nil
	}
	line, rest = s[:i], s[i+1:]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	if strings.IndexByte(line, '\r') >= 0 {
		return "", "", errBareCR
	}
	return line, rest, nil
}

// countLines is an upper bound on the header fields in s, to size maps once.
func countLines(s string) int { return strings.Count(s, "\n") }

// parseFields parses header field lines (through the empty line) into h. vals is the backing store
// for single values, so a head with n fields costs one slice allocation, not n.
func parseFields(s string, h http.Header, vals []string, scratch *[]byte) error {
	for {
		line, rest, err := nextLine(s)
		if err != nil {
			return err
		}
		s = rest
		if line == "" {
			return nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errObsFold
		}
		colon := strings.IndexByte(line, ':')
		if colon < 0 {
			return errNoColon
		}
		name := line[:colon]
		if !validToken(name) {
			return errFieldName
		}
		value := trimOWS(line[colon+1:])
		if !validFieldValue(value) {
			return errFieldValue
		}
		key := canonicalKey(name, scratch)
		if vs, ok := h[key]; ok {
			h[key] = append(vs, value)
			continue
		}
		if len(vals) < cap(vals) {
			vals = append(vals, value)
			h[key] = vals[len(vals)-1 : len(vals) : len(vals)]
		} else {
			h[key] = []string{value}
		}
	}
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// tchar (RFC 9110 §5.6.2): the bytes of a token (method, header name, coding).
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tchar[s[i]] {
			return false
		}
	}
	return true
}

// validFieldValue allows VCHAR, obs-text, SP and HTAB: no NUL, CR, LF or other controls.
func validFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// canonicalKey is http.CanonicalHeaderKey for a valid token, without allocating when name is
// already canonical or a common header.
func canonicalKey(name string, scratch *[]byte) string {
	upper := true
	canonical := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (upper && 'a' <= c && c <= 'z') || (!upper && 'A' <= c && c <= 'Z') {
			canonical = false
			break
		}
		upper = c == '-'
	}
	if canonical {
		return name
	}
	b := append((*scratch)[:0], name...)
	upper = true
	for i, c := range b {
		if upper && 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		} else if !upper && 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
		upper = c == '-'
	}
	*scratch = b
	if k, ok := commonKeys[string(b)]; ok {
		return k
	}
	return string(b)
}

var commonKeys = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Authorization", "Cache-Control", "Connection", "Content-Encoding", "Content-Length",
		"Content-Type", "Cookie", "Date", "Etag", "Expect", "Expires", "Grpc-Message", "Grpc-Status",
		"Grpc-Timeout", "Host", "If-Modified-Since", "If-None-Match", "Keep-Alive", "Last-Modified",
		"Location", "Origin", "Referer", "Server", "Set-Cookie", "Te", "Trailer", "Transfer-Encoding",
		"Upgrade", "User-Agent", "Vary", "Via", "X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Spanid",
		"X-B3-Traceid", "X-Envoy-Upstream-Service-Time", "X-Forwarded-For", "X-Forwarded-Proto",
		"X-Request-Id", "Traceparent", "Tracestate",
	} {
		m[k] = k
	}
	return m
}()

// hasToken reports whether a comma-separated header (RFC 9110 §5.6.1 list) contains token,
// compared case-insensitively.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var elem string
			elem, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(trimOWS(elem), token) {
				return true
			}
		}
	}
	return false
}

// parseContentLength parses a Content-Length field: plain decimal digits, one value or several
// equal ones. Signs, spaces inside, lists and overflow are rejected.
func parseContentLength(vs []string) (int64, error) {
	n := int64(-1)
	for _, v := range vs {
		m, ok := parseDecimal(v)
		if !ok {
			return 0, badRequest("malformed Content-Length")
		}
		if n >= 0 && m != n {
			return 0, badRequest("conflicting Content-Length values")
		}
		n = m
	}
	return n, nil
}

func parseDecimal(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseTransferEncoding accepts exactly one coding, chunked: anything else (gzip, chunked twice,
// an unknown coding) could be framed differently by another hop, so it is refused.
func parseTransferEncoding(vs []string) error {
	if len(vs) != 1 || !strings.EqualFold(vs[0], "chunked") {
		return &statusError{http.StatusBadRequest, "unsupported Transfer-Encoding"}
	}
	return nil
}

// declaredTrailers returns the keys a Trailer field announces, as an http.Header of nil values
// (what net/http puts in Request.Trailer and Response.Trailer before the body is read).
func declaredTrailers(vs []string) (http.Header, error) {
	var t http.Header
	for _, v := range vs {
		for v != "" {
			var k string
			k, v, _ = strings.Cut(v, ",")
			if k = trimOWS(k); k == "" {
				continue
			}
			if !validToken(k) {
				return nil, badRequest("malformed Trailer field")
			}
			k = http.CanonicalHeaderKey(k)
			switch k {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return nil, badRequest("forbidden key in Trailer field")
			}
			if t == nil {
				t = make(http.Header)
			}
			t[k] = nil
		}
	}
	return t, nil
}

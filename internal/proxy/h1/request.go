package h1

import (
	"net/http"
	"net/url"
	"strings"
)

// requestHead is a parsed request head: what net/http's ReadRequest would give, before the body
// and context are attached.
type requestHead struct {
	method, target, proto string
	major, minor          int
	url                   *url.URL
	header                http.Header
	host                  string
	contentLength         int64
	kind                  bodyKind
	trailer               http.Header
	close                 bool // the client wants the connection closed after this exchange
	expectContinue        bool
}

var (
	errMethod  = badRequest("malformed method")
	errTarget  = badRequest("malformed request target")
	errVersion = badRequest("malformed HTTP version")
	errNoHost  = badRequest("missing Host header")
	errHost    = badRequest("malformed Host header")
	errSmuggle = badRequest("both Transfer-Encoding and Content-Length")
)

// parseRequestHead parses a head read by readHead into rh, its fields into hdr (empty) with vals as
// the backing store of single values, and an origin-form target into u. scratch is reused for key
// canonicalisation.
func parseRequestHead(s string, rh *requestHead, scratch *[]byte, hdr http.Header, vals *[]string, u *url.URL) error {
	line, rest, err := nextLine(s)
	if err != nil {
		return err
	}
	method, line, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 {
		return badRequest("malformed request line")
	}
	if !validToken(method) {
		return errMethod
	}
	if !validTarget(target) {
		return errTarget
	}
	major, minor, ok := parseVersion(proto)
	if !ok {
		return errVersion
	}
	if major != 1 {
		return &statusError{http.StatusHTTPVersionNotSupported, "unsupported HTTP version"}
	}
	*rh = requestHead{method: method, target: target, proto: proto, major: major, minor: minor}

	n := countLines(rest)
	rh.header = hdr
	if cap(*vals) < n {
		*vals = make([]string, 0, max(n, 16))
	}
	if err := parseFields(rest, hdr, (*vals)[:0:n], scratch); err != nil {
		return err
	}
	if rh.url, err = parseTarget(method, target, u); err != nil {
		return err
	}
	h := rh.header

	hosts := h["Host"]
	switch {
	case len(hosts) > 1:
		return badRequest("several Host headers")
	case len(hosts) == 1 && !validHost(hosts[0]):
		return errHost
	case len(hosts) == 0 && minor >= 1:
		return errNoHost
	}
	rh.host = rh.url.Host
	if rh.host == "" && len(hosts) == 1 {
		rh.host = hosts[0]
	}
	if !validHost(rh.host) {
		return errHost // an absolute-form target's authority, which url parsing lets through
	}
	delete(h, "Host")

	te, hasTE := h["Transfer-Encoding"]
	cl, hasCL := h["Content-Length"]
	switch {
	case hasTE && hasCL:
		return errSmuggle
	case hasTE:
		if minor == 0 {
			return badRequest("Transfer-Encoding in an HTTP/1.0 request")
		}
		if err := parseTransferEncoding(te); err != nil {
			return err
		}
		delete(h, "Transfer-Encoding")
		rh.kind, rh.contentLength = bodyChunked, -1
		if rh.trailer, err = declaredTrailers(h["Trailer"]); err != nil {
			return err
		}
		if rh.trailer != nil {
			delete(h, "Trailer")
		}
	case hasCL:
		n, err := parseContentLength(cl)
		if err != nil {
			return err
		}
		rh.contentLength = n
		if n > 0 {
			rh.kind = bodyFixed
		}
		if len(cl) > 1 {
			h["Content-Length"] = cl[:1]
		}
	}

	conn := h["Connection"]
	if minor == 0 {
		rh.close = !hasToken(conn, "keep-alive")
	} else {
		rh.close = hasToken(conn, "close")
	}
	if ex, ok := h["Expect"]; ok {
		if len(ex) != 1 || !strings.EqualFold(ex[0], "100-continue") {
			return &statusError{http.StatusExpectationFailed, "unsupported Expect"}
		}
		rh.expectContinue = minor >= 1 && rh.kind != bodyNone
	}
	return nil
}

// validTarget accepts visible ASCII and obs-text: no controls, spaces or DEL.
func validTarget(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// parseVersion parses "HTTP/x.y".
func parseVersion(s string) (major, minor int, ok bool) {
	if len(s) != 8 || s[:5] != "HTTP/" || s[6] != '.' {
		return 0, 0, false
	}
	a, b := s[5], s[7]
	if a < '0' || a > '9' || b < '0' || b > '9' {
		return 0, 0, false
	}
	return int(a - '0'), int(b - '0'), true
}

// validHost checks a Host value's bytes (RFC 3986 reg-name, IP literal and port characters), as
// net/http's httpguts.ValidHostHeader does.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		if !hostByte[h[i]] {
			return false
		}
	}
	return true
}

var hostByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!$%&'()*+,-.:;=[]_~" {
		t[c] = true
	}
	return t
}()

// pathByte are the bytes an origin-form target may carry for the fast path: those url's path
// escaping leaves alone, so Path equals the raw text and RawPath stays empty.
var pathByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "-_.~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()

// parseTarget turns a request target into the URL net/http would give. The common origin form
// ("/a/b?c") takes a fast path without copying, into dst; the rest goes through url.ParseRequestURI.
func parseTarget(method, target string, dst *url.URL) (*url.URL, error) {
	if method == http.MethodConnect && target[0] != '/' {
		// authority-form: net/http parses it as "http://" + target and keeps only the host.
		u, err := url.ParseRequestURI("http://" + target)
		if err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			return nil, errTarget
		}
		u.Scheme = ""
		return u, nil
	}
	if target[0] == '/' && (len(target) == 1 || target[1] != '/') {
		path, query, hasQuery := strings.Cut(target, "?")
		fast := true
		for i := 0; i < len(path); i++ {
			if !pathByte[path[i]] {
				fast = false
				break
			}
		}
		if fast && strings.IndexByte(query, '#') < 0 && validQuery(query) {
			*dst = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
			return dst, nil
		}
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, errTarget
	}
	return u, nil
}

// validQuery mirrors url's check that a query has no bytes it would reject.
func validQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		if c := q[i]; c < 0x21 || c == 0x7f || c >= 0x80 {
			return false
		}
	}
	return true
}

package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// parsed is one request as the parser read it from a stream.
type parsed struct {
	method, target string
	minor          int
	host           string
	header         http.Header
	body           []byte
	trailer        http.Header
	chunked        bool
}

// readRequests parses requests from raw until the first error, as a server connection would.
func readRequests(raw []byte) ([]parsed, error) {
	br := bufio.NewReaderSize(bytes.NewReader(raw), 4096)
	var out []parsed
	var buf, scratch []byte
	var dec decoder
	for {
		head, err := readHead(br, buf, maxRequestLine, DefaultMaxHeaderBytes, false)
		buf = head[:0]
		if err != nil {
			return out, err
		}
		var rh requestHead
		var vals []string
		if err := parseRequestHead(string(head), &rh, &scratch, make(http.Header), &vals, new(url.URL)); err != nil {
			return out, err
		}
		p := parsed{method: rh.method, target: rh.target, minor: rh.minor, host: rh.host, header: rh.header, chunked: rh.kind == bodyChunked}
		trailer := rh.trailer
		dec.reset(br, rh.kind, rh.contentLength)
		dec.trailerDst = &trailer
		body, err := io.ReadAll(&dec)
		if err != nil {
			return out, err
		}
		p.body, p.trailer = body, trailer
		out = append(out, p)
	}
}

// serialise writes p back as a request, chunked when it was.
func serialise(p parsed) []byte {
	var b bytes.Buffer
	b.WriteString(p.method + " " + p.target + " HTTP/1." + strconv.Itoa(p.minor) + "\r\n")
	if p.host != "" || p.minor >= 1 {
		b.WriteString("Host: " + p.host + "\r\n")
	}
	for _, k := range slices.Sorted(mapsKeys(p.header)) {
		for _, v := range p.header[k] {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	if p.chunked {
		b.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		if len(p.body) > 0 {
			b.WriteString(strconv.FormatInt(int64(len(p.body)), 16) + "\r\n")
			b.Write(p.body)
			b.WriteString("\r\n")
		}
		b.WriteString("0\r\n")
		for _, k := range slices.Sorted(mapsKeys(p.trailer)) {
			for _, v := range p.trailer[k] {
				b.WriteString(k + ": " + v + "\r\n")
			}
		}
		b.WriteString("\r\n")
		return b.Bytes()
	}
	b.WriteString("\r\n")
	b.Write(p.body)
	return b.Bytes()
}

func mapsKeys(h http.Header) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}
}

// FuzzReadRequest feeds raw bytes to the request parser: it must never panic, and whatever it
// accepts must survive a round trip through serialisation unchanged (one meaning per message is
// what keeps a proxy safe from smuggling).
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a/b?c=d HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Multi: 1\r\nX-Multi: 2\r\n\r\n",
		"GET http://reviews:9080/x HTTP/1.1\r\nHost: reviews:9080\r\n\r\n",
		"CONNECT reviews:443 HTTP/1.1\r\nHost: reviews:443\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
		"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
		"\r\nGET / HTTP/1.1\nHost: a\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		reqs, _ := readRequests(raw)
		for i, p := range reqs {
			again, err := readRequests(serialise(p))
			if err != nil && err != io.EOF || len(again) != 1 {
				t.Fatalf("request %d %q re-serialised does not parse back: %v (%d requests)", i, serialise(p), err, len(again))
			}
			q := again[0]
			if q.method != p.method || q.target != p.target || q.host != p.host || !bytes.Equal(q.body, p.body) ||
				!sameHeader(q.header, p.header) || !sameHeader(q.trailer, p.trailer) {
				t.Fatalf("request %d changed meaning:\n%+v\n%+v", i, p, q)
			}
			// Whatever we accept, net/http accepts with the same method, target and body length.
			nr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(serialise(p))))
			if err != nil {
				t.Fatalf("net/http rejects what we accepted: %q: %v", serialise(p), err)
			}
			if nr.Method != p.method || nr.RequestURI != p.target {
				t.Fatalf("net/http reads %s %s, we read %s %s", nr.Method, nr.RequestURI, p.method, p.target)
			}
		}
	})
}

// sameHeader compares headers, ignoring declared trailers that never came (nil values).
func sameHeader(a, b http.Header) bool {
	n := 0
	for k, va := range a {
		if len(va) == 0 {
			continue
		}
		n++
		if !slices.Equal(va, b[k]) {
			return false
		}
	}
	for _, vb := range b {
		if len(vb) > 0 {
			n--
		}
	}
	return n == 0
}

func TestTargetFastPathMatchesURLParsing(t *testing.T) {
	for _, target := range []string{
		"/", "/a/b", "/a?b=c", "/a?", "/a??", "/a?b#c", "/a%2Fb", "/a!b", "/~user/x.y", "/a;b=c/d@e", "/é", "/a?é",
	} {
		got, err := parseTarget("GET", target, new(url.URL))
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		want, _ := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: a\r\n\r\n")))
		if want == nil || *got != *want.URL {
			t.Errorf("%s: got %#v, net/http %#v", target, got, want.URL)
		}
	}
}

func TestParsedRequestMatchesNetHTTP(t *testing.T) {
	for _, raw := range []string{
		"GET /a?b HTTP/1.1\r\nhost: example.com\r\nuser-agent: x\r\nX-Dup: 1\r\nx-dup: 2\r\nConnection: close\r\n\r\n",
		"GET http://example.com:8080/p HTTP/1.1\r\nHost: other\r\n\r\n",
		"POST /p HTTP/1.0\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc",
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
	} {
		want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			t.Fatal(err)
		}
		var rh requestHead
		var scratch []byte
		head, _, _ := strings.Cut(raw, "\r\n\r\n")
		var vals []string
		if err := parseRequestHead(head+"\r\n\r\n", &rh, &scratch, make(http.Header), &vals, new(url.URL)); err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if rh.method != want.Method || *rh.url != *want.URL || rh.target != want.RequestURI || rh.host != want.Host ||
			!sameHeader(rh.header, want.Header) || rh.contentLength != want.ContentLength || rh.close != want.Close ||
			rh.major != want.ProtoMajor || rh.minor != want.ProtoMinor {
			t.Errorf("%q:\n got %+v %+v\nwant %+v", raw, rh, rh.url, want)
		}
	}
}

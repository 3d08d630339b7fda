package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
)

var kilobyte = bytes.Repeat([]byte("k"), 1024)

var textPlain, length1024 = []string{"text/plain"}, []string{"1024"}

// oneKB is the backend: 1 KiB with a Content-Length, allocating nothing itself.
var oneKB = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	w.Header()["Content-Type"] = textPlain
	w.Header()["Content-Length"] = length1024
	_, _ = w.Write(kilobyte)
})

// rawClient sends GETs on one keep-alive connection and reads the responses without allocating,
// so a benchmark's allocations are the server side's.
type rawClient struct {
	c   net.Conn
	br  *bufio.Reader
	req []byte
}

func newRawClient(b *testing.B, addr string) *rawClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return &rawClient{c: c, br: bufio.NewReaderSize(c, 16<<10), req: []byte("GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: rawclient\r\nAccept: */*\r\n\r\n")}
}

func (rc *rawClient) do() error {
	if _, err := rc.c.Write(rc.req); err != nil {
		return err
	}
	n := -1
	status := true
	for {
		line, err := rc.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if status {
			if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
				return errors.New("bad status: " + string(line))
			}
			status = false
			continue
		}
		if len(line) <= 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			n = 0
			for _, c := range bytes.TrimSpace(v) {
				n = n*10 + int(c-'0')
			}
		}
	}
	if n != 1024 {
		return errors.New("response without Content-Length: 1024")
	}
	_, err := rc.br.Discard(n)
	return err
}

func BenchmarkServer(b *testing.B) {
	_, addr := startServer(b, oneKB)
	rc := newRawClient(b, addr)
	b.ReportAllocs()
	for b.Loop() {
		if err := rc.do(); err != nil {
			b.Fatal(err)
		}
	}
}

var proxyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// proxyHandler is a minimal reverse proxy: the request goes upstream as it came, the response
// comes back through a pooled buffer.
func proxyHandler(rt http.RoundTripper, target string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := url.URL{Scheme: "http", Host: target, Opaque: r.RequestURI}
		out := http.Request{
			Method: r.Method, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: r.Header, Host: r.Host, ContentLength: r.ContentLength,
		}
		if r.ContentLength != 0 {
			out.Body = r.Body
		}
		resp, err := rt.RoundTrip(out.WithContext(r.Context()))
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		h := w.Header()
		for k, vs := range resp.Header {
			h[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		bp := proxyBufs.Get().(*[]byte)
		defer proxyBufs.Put(bp)
		_, _ = io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{resp.Body}, *bp)
	})
}

func benchmarkProxy(b *testing.B, serve func(b *testing.B, h http.Handler) string, rt http.RoundTripper) {
	_, backendAddr := startServer(b, oneKB)
	addr := serve(b, proxyHandler(rt, backendAddr))
	rc := newRawClient(b, addr)
	if err := rc.do(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := rc.do(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProxyH1(b *testing.B) {
	tr := &Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	benchmarkProxy(b, func(b *testing.B, h http.Handler) string {
		_, addr := startServer(b, h)
		return addr
	}, tr)
}

func BenchmarkProxyNetHTTP(b *testing.B) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	benchmarkProxy(b, func(b *testing.B, h http.Handler) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		s := &http.Server{Handler: h}
		go func() { _ = s.Serve(ln) }()
		b.Cleanup(func() { _ = s.Close() })
		return ln.Addr().String()
	}, tr)
}

package h1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testDeadline = 10 * time.Second

// startServer serves h on a loopback port until the test ends.
func startServer(t testing.TB, h http.Handler, configure ...func(*Server)) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: h}
	for _, f := range configure {
		f(s)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		_ = s.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return s, ln.Addr().String()
}

func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(testDeadline))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// exchange writes raw to a new connection and returns everything read until the server closes it.
func exchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c := dial(t, addr)
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading until close: %v (got %q)", err, b)
	}
	return string(b)
}

var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Uri", r.RequestURI)
	fmt.Fprintf(w, "%s", b)
})

func TestMalformedRequestsAreRejectedAndTheConnectionClosed(t *testing.T) {
	_, addr := startServer(t, echo)
	long := strings.Repeat("a", 70<<10)
	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"garbage request line", "HELLO\r\n\r\n", 400},
		{"bad method token", "G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		// No line ever ends: refused on its first byte, not after a timeout.
		{"TLS ClientHello on a plaintext port", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400},
		{"bad version", "GET / HTTP/x.1\r\nHost: x\r\n\r\n", 400},
		{"version 2 in a request line", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"whitespace before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n", 400},
		{"missing Host on HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"signed Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\na", 400},
		{"hex Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x1\r\n\r\na", 400},
		{"conflicting Content-Lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
		{"Content-Length list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\na", 400},
		{"TE with CL (smuggling)", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"unknown coding", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
		{"chunked twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"chunked not final", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400},
		{"malformed chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400},
		{"chunk size with LF only", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n", 400},
		{"control byte in chunk extension", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;a\x01b\r\nab\r\n0\r\n\r\n", 400},
		{"chunk data too long", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", 400},
		{"oversized chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", 400},
		{"Expect other than 100-continue", "GET / HTTP/1.1\r\nHost: x\r\nExpect: bogus\r\n\r\n", 417},
		{"headers too large", "GET / HTTP/1.1\r\nHost: x\r\nX-A: " + long + "\r\n\r\n", 431},
		{"request line too long", "GET /" + long + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
		{"h2c preface when HTTP/1 only", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.raw == "" {
				t.Skip("covered by TestH2CCanBeTurnedOff")
			}
			got := exchange(t, addr, tc.raw)
			want := fmt.Sprintf("HTTP/1.1 %d ", tc.status)
			if !strings.HasPrefix(got, want) || !strings.Contains(got, "Connection: close\r\n") {
				t.Fatalf("got %q, want %q... with Connection: close", got, want)
			}
			if strings.Count(got, "HTTP/1.1 ") != 1 {
				t.Fatalf("more than one response: %q", got)
			}
		})
	}
}

func TestH2CCanBeTurnedOff(t *testing.T) {
	_, addr := startServer(t, echo, func(s *Server) { s.DisableH2C = true })
	got := exchange(t, addr, h2Preface)
	if !strings.HasPrefix(got, "HTTP/1.1 400 ") && !strings.HasPrefix(got, "HTTP/1.1 505 ") {
		t.Fatalf("got %q", got)
	}
}

func TestPipelinedRequestsAreAnsweredInOrder(t *testing.T) {
	_, addr := startServer(t, echo)
	c := dial(t, addr)
	var raw strings.Builder
	for i := range 5 {
		fmt.Fprintf(&raw, "POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nb%d", i, i)
	}
	raw.WriteString("GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if _, err := io.WriteString(c, raw.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := range 5 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if got := resp.Header.Get("X-Uri"); got != fmt.Sprintf("/%d", i) || string(b) != fmt.Sprintf("b%d", i) {
			t.Fatalf("response %d: uri %q body %q", i, got, b)
		}
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.Header.Get("X-Uri") != "/last" || !resp.Close {
		t.Fatalf("last: %v %v", resp, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection not closed after Connection: close: %v", err)
	}
}

func TestKeepAliveConnectionIsReused(t *testing.T) {
	var news, closed atomic.Int32
	_, addr := startServer(t, echo, func(s *Server) {
		s.ConnState = func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				news.Add(1)
			case http.StateClosed:
				closed.Add(1)
			}
		}
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: testDeadline}
	for i := range 10 {
		resp, err := client.Post("http://"+addr+"/x", "text/plain", strings.NewReader(strings.Repeat("z", i*1000)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(b) != i*1000 {
			t.Fatalf("echoed %d bytes, want %d", len(b), i*1000)
		}
	}
	if n := news.Load(); n != 1 {
		t.Fatalf("%d connections for 10 keep-alive requests", n)
	}
	tr.CloseIdleConnections()
	waitFor(t, func() bool { return closed.Load() == 1 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestChunkedBodiesAndTrailersBothWays(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked" || r.ContentLength != -1 {
			t.Errorf("request framing: TE %v CL %d", r.TransferEncoding, r.ContentLength)
		}
		if _, declared := r.Trailer["X-Req-Sum"]; !declared {
			t.Errorf("declared trailer missing before the body: %v", r.Trailer)
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read: %v", err)
		}
		w.Header().Set("Trailer", "X-Sum")
		w.WriteHeader(200)
		_, _ = w.Write(b)
		w.(http.Flusher).Flush()
		_, _ = w.Write([]byte("!"))
		w.Header().Set("X-Sum", r.Trailer.Get("X-Req-Sum")+"-ok")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	}))
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "http://"+addr+"/", pr)
	req.Trailer = http.Header{"X-Req-Sum": nil}
	go func() {
		for range 3 {
			_, _ = pw.Write([]byte("part."))
		}
		req.Trailer.Set("X-Req-Sum", "15")
		pw.Close()
	}()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "part.part.part.!" || resp.ContentLength != -1 {
		t.Fatalf("body %q CL %d", b, resp.ContentLength)
	}
	if resp.Trailer.Get("X-Sum") != "15-ok" || resp.Trailer.Get("X-Late") != "late" {
		t.Fatalf("trailers %v", resp.Trailer)
	}
}

func TestExpect100ContinueIsSentOnFirstBodyRead(t *testing.T) {
	read := make(chan struct{})
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-read
		echo(w, r)
	}))
	c := dial(t, addr)
	_, _ = io.WriteString(c, "PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := br.Peek(1); err == nil {
		t.Fatal("100 Continue sent before the handler read the body")
	}
	_ = c.SetReadDeadline(time.Now().Add(testDeadline))
	close(read)
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q %v", line, err)
	}
	if l, _ := br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("after 100: %q", l)
	}
	_, _ = io.WriteString(c, "body")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "body" {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}
}

func TestExpect100ContinueUnreadClosesTheConnection(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusForbidden)
	}))
	got := exchange(t, addr, "PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 403 ") || strings.Contains(got, "100 Continue") || !strings.Contains(got, "Connection: close") {
		t.Fatalf("got %q", got)
	}
}

func TestHeadResponseHasLengthButNoBody(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	}))
	got := exchange(t, addr, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	head, get, ok := strings.Cut(got, "\r\n\r\n")
	if !ok || !strings.Contains(head, "Content-Length: 5\r\n") || !strings.HasPrefix(get, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(get, "\r\n\r\nhello") {
		t.Fatalf("got %q", got)
	}
}

func TestNoBodyStatusesCarryNoBody(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		if _, err := w.Write([]byte("x")); !errors.Is(err, http.ErrBodyNotAllowed) {
			t.Errorf("write to 204: %v", err)
		}
	}))
	got := exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 204 No Content\r\n") || !strings.HasSuffix(got, "\r\n\r\n") || strings.Contains(got, "Content-Length") || strings.Contains(got, "chunked") {
		t.Fatalf("got %q", got)
	}
}

func TestHTTP10Framing(t *testing.T) {
	big := strings.Repeat("b", 3*bufferBeforeChunking)
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = io.WriteString(w, big)
			return
		}
		_, _ = io.WriteString(w, "small")
	}))
	// Without keep-alive: the response is delimited by the close, never chunked.
	got := exchange(t, addr, "GET /big HTTP/1.0\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || strings.Contains(got, "chunked") || !strings.HasSuffix(got, "\r\n\r\n"+big) {
		t.Fatalf("close-delimited: got %q", got[:min(len(got), 200)])
	}
	// With keep-alive: a length, and the connection stays for the next request.
	got = exchange(t, addr, "GET /small HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /small HTTP/1.0\r\n\r\n")
	if strings.Count(got, "HTTP/1.1 200 OK") != 2 || !strings.Contains(got, "Connection: keep-alive\r\n") || !strings.Contains(got, "Content-Length: 5\r\n") {
		t.Fatalf("keep-alive: got %q", got)
	}
}

func TestUnknownLengthResponseIsChunkedAndSmallOneGetsALength(t *testing.T) {
	big := strings.Repeat("c", 2*bufferBeforeChunking)
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = io.WriteString(w, big)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	got := exchange(t, addr, "GET /small HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	small, bigResp, _ := strings.Cut(got, "\r\n\r\nok")
	if !strings.Contains(small, "Content-Length: 2\r\n") || !strings.Contains(bigResp, "Transfer-Encoding: chunked\r\n") || !strings.HasSuffix(bigResp, "0\r\n\r\n") {
		t.Fatalf("got %q", got[:min(len(got), 400)])
	}
}

func TestContentLengthIsEnforced(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		if _, err := io.WriteString(w, "abc"); !errors.Is(err, http.ErrContentLength) {
			t.Errorf("overlong write: %v", err)
		}
		_, _ = io.WriteString(w, "a")
	}))
	// One byte short of the declared length: the connection must close so the client notices.
	got := exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasSuffix(got, "\r\n\r\na") {
		t.Fatalf("got %q", got)
	}
}

func TestHijackHandsOverTheConnection(t *testing.T) {
	var states sync.Map
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Upgrade", "echo")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusSwitchingProtocols)
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		line, _ := brw.ReadString('\n')
		_, _ = brw.WriteString("echo:" + line)
		_ = brw.Flush()
	}), func(s *Server) {
		s.ConnState = func(_ net.Conn, st http.ConnState) { states.Store(st, true) }
	})
	c := dial(t, addr)
	// The first upgraded bytes travel with the request: they must reach the hijacker.
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "echo" {
		t.Fatalf("%v %v", resp, err)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "echo:hello\n" {
		t.Fatalf("got %q %v", line, err)
	}
	if _, ok := states.Load(http.StateHijacked); !ok {
		t.Fatal("StateHijacked not reported")
	}
}

func TestErrAbortHandlerLeavesTheResponseIncomplete(t *testing.T) {
	for _, declared := range []bool{true, false} {
		_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if declared {
				w.Header().Set("Content-Length", "100")
			}
			w.WriteHeader(200)
			_, _ = w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}))
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("declared=%v: body %q read cleanly; want an error", declared, b)
		}
	}
}

func TestHandlerPanicClosesTheConnection(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("boom")
	}))
	if got := exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); got != "" {
		t.Fatalf("got %q, want a bare close", got)
	}
}

func TestRequestContextCarriesLocalAddrAndEndsWithTheClient(t *testing.T) {
	canceled := make(chan struct{})
	started := make(chan net.Addr, 1)
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		started <- la
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(testDeadline):
		}
	}))
	c := dial(t, addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if la := <-started; la == nil || la.String() != addr {
		t.Fatalf("LocalAddrContextKey = %v, want %s", la, addr)
	}
	c.Close()
	select {
	case <-canceled:
	case <-time.After(testDeadline):
		t.Fatal("context not canceled when the client went away")
	}
}

func TestBodyLeftUnreadIsDiscardedToKeepTheConnection(t *testing.T) {
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path)
	}))
	body := strings.Repeat("x", 1000)
	got := exchange(t, addr, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"+body+
		"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !strings.HasSuffix(got, "/b") || strings.Count(got, "HTTP/1.1 200") != 2 {
		t.Fatalf("got %q", got)
	}
}

func TestReadHeaderTimeoutClosesSlowClients(t *testing.T) {
	_, addr := startServer(t, echo, func(s *Server) { s.ReadHeaderTimeout = 100 * time.Millisecond })
	c := dial(t, addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("got %q %v, want a bare close", b, err)
	}
}

func TestIdleTimeoutClosesKeepAliveConnections(t *testing.T) {
	_, addr := startServer(t, echo, func(s *Server) { s.IdleTimeout = 100 * time.Millisecond })
	c := dial(t, addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection not closed: %v", err)
	}
}

func TestKeepAliveRequestsSeeOnlyTheirOwnHeadersAndAKeptHeaderMapIsLeftAlone(t *testing.T) {
	var kept http.Header
	_, addr := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen", strings.Join(slices.Sorted(maps.Keys(r.Header)), ","))
		if r.URL.Path == "/keep" {
			kept = r.Header
			r.Header = nil // handed to something that outlives the handler
		}
	}))
	got := exchange(t, addr, "GET /keep HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-B: 2\r\n\r\n"+
		"GET /b HTTP/1.1\r\nHost: x\r\nX-C: 3\r\n\r\n"+
		"GET /c HTTP/1.1\r\nHost: x\r\nX-D: 4\r\nConnection: close\r\n\r\n")
	for _, want := range []string{"X-Seen: X-A,X-B\r\n", "X-Seen: X-C\r\n", "X-Seen: Connection,X-D\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("responses lack %q:\n%s", want, got)
		}
	}
	if len(kept) != 2 || kept.Get("X-A") != "1" || kept.Get("X-B") != "2" {
		t.Fatalf("kept header map changed by later requests: %v", kept)
	}
}

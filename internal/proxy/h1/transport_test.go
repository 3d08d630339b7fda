package h1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// backend is an httptest server counting the connections it accepted.
func backend(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s, &conns
}

func newTransport(t *testing.T) *Transport {
	tr := &Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func get(t *testing.T, tr http.RoundTripper, method, url string, body io.Reader) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp, string(b)
}

func TestTransportReusesKeepAliveConnections(t *testing.T) {
	srv, conns := backend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Len", r.Header.Get("Content-Length"))
		_, _ = w.Write(b)
		_, _ = io.WriteString(w, r.Method+" "+r.RequestURI+" "+r.Host)
	})
	tr := newTransport(t)
	for i := range 5 {
		resp, b := get(t, tr, "GET", srv.URL+"/a?b=c", nil)
		if resp.StatusCode != 200 || !strings.HasSuffix(b, "GET /a?b=c "+strings.TrimPrefix(srv.URL, "http://")) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	resp, b := get(t, tr, "POST", srv.URL+"/p", strings.NewReader("payload"))
	if b != "payloadPOST /p "+strings.TrimPrefix(srv.URL, "http://") || resp.Header.Get("X-Len") != "7" {
		t.Fatalf("POST: %q %v", b, resp.Header)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for sequential keep-alive requests", n)
	}
}

func TestTransportSendsOpaqueTargetAndHostOverride(t *testing.T) {
	srv, _ := backend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.RequestURI+" "+r.Host)
	})
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.URL.Opaque = "/x%2Fy?q=1"
	req.Host = "reviews:9080"
	resp, err := newTransport(t).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "/x%2Fy?q=1 reviews:9080" {
		t.Fatalf("got %q", b)
	}
}

func TestTransportChunkedResponseFillsTrailers(t *testing.T) {
	srv, _ := backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		w.WriteHeader(200)
		for range 3 {
			_, _ = io.WriteString(w, "chunk")
			w.(http.Flusher).Flush()
		}
		w.Header().Set("X-Checksum", "abc")
	})
	tr := newTransport(t)
	req, _ := http.NewRequest("GET", srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, declared := resp.Trailer["X-Checksum"]; !declared || resp.ContentLength != -1 || resp.Header.Get("Trailer") != "" {
		t.Fatalf("before the body: trailer %v CL %d header %v", resp.Trailer, resp.ContentLength, resp.Header)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "chunkchunkchunk" || resp.Trailer.Get("X-Checksum") != "abc" {
		t.Fatalf("body %q err %v trailer %v", b, err, resp.Trailer)
	}
}

// rawBackend answers each connection with serve.
func rawBackend(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testDeadline))
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// readRequest reads one request head and body from the connection.
func readRequest(br *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return req, err
}

func TestTransportRetriesAStalePooledConnection(t *testing.T) {
	var conns atomic.Int32
	addr := rawBackend(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		if _, err := readRequest(br); err != nil {
			return
		}
		// Answer as keep-alive, then close as if the idle timeout had passed.
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	tr := newTransport(t)
	for i := range 3 {
		time.Sleep(20 * time.Millisecond) // let the close reach the pooled connection
		if _, b := get(t, tr, "GET", "http://"+addr+"/", nil); b != "ok" {
			t.Fatalf("request %d: %q", i, b)
		}
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}

func TestTransportContextDeadlineAbortsPromptly(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	addr := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := readRequest(br)
		if err != nil {
			return
		}
		if req.URL.Path == "/body" {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
		}
		<-hang
	})
	tr := newTransport(t)
	for _, path := range []string{"/head", "/body"} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: got %v, want DeadlineExceeded", path, err)
		}
	}
}

func TestTransportRejectsMalformedResponses(t *testing.T) {
	for name, raw := range map[string]string{
		"garbage status line":         "HTTP/1.1 OK\r\n\r\n",
		"HTTP/2 status line":          "HTTP/2.0 200 OK\r\n\r\n",
		"CL with TE (smuggling)":      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"conflicting Content-Lengths": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
		"unknown coding":              "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"obs-fold":                    "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
		"closed before the head ends": "HTTP/1.1 200 OK\r\nContent-Le",
	} {
		t.Run(name, func(t *testing.T) {
			addr := rawBackend(t, func(c net.Conn) {
				if _, err := readRequest(bufio.NewReader(c)); err == nil {
					_, _ = io.WriteString(c, raw)
				}
			})
			req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
			resp, err := newTransport(t).RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("accepted %q", raw)
			}
		})
	}
}

func TestTransportBodilessResponsesAndCloseDelimitedBodies(t *testing.T) {
	var conns atomic.Int32
	addr := rawBackend(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := readRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/head":
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
			case "/204":
				_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
			case "/304":
				_, _ = io.WriteString(c, "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
			case "/eof":
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil the end")
				return
			}
		}
	})
	tr := newTransport(t)
	base := "http://" + addr
	if resp, b := get(t, tr, "HEAD", base+"/head", nil); b != "" || resp.ContentLength != 10 {
		t.Fatalf("HEAD: %q CL %d", b, resp.ContentLength)
	}
	for _, p := range []string{"/204", "/304"} {
		if resp, b := get(t, tr, "GET", base+p, nil); b != "" || resp.ContentLength != 0 {
			t.Fatalf("%s: %q CL %d", p, b, resp.ContentLength)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("bodiless responses used %d connections", n)
	}
	resp, b := get(t, tr, "GET", base+"/eof", nil)
	if b != "until the end" || resp.ContentLength != -1 || !resp.Close {
		t.Fatalf("close-delimited: %q CL %d close %v", b, resp.ContentLength, resp.Close)
	}
	get(t, tr, "GET", base+"/204", nil)
	if n := conns.Load(); n != 2 {
		t.Fatalf("a close-delimited response's connection was reused (%d connections)", n)
	}
}

func TestTransportSkips100ContinueAndUpgradesOn101(t *testing.T) {
	addr := rawBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := readRequest(br)
		if err != nil {
			return
		}
		if req.URL.Path == "/continue" {
			_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		line, _ := br.ReadString('\n')
		_, _ = io.WriteString(c, "echo:"+line)
	})
	tr := newTransport(t)
	if resp, b := get(t, tr, "GET", "http://"+addr+"/continue", nil); resp.StatusCode != 200 || b != "ok" {
		t.Fatalf("after 100: %d %q", resp.StatusCode, b)
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/up", nil)
	req.Header.Set("Upgrade", "echo")
	req.Header.Set("Connection", "Upgrade")
	resp, err := tr.RoundTrip(req)
	if err != nil || resp.StatusCode != 101 {
		t.Fatal(resp, err)
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body %T is not an io.ReadWriteCloser", resp.Body)
	}
	defer rwc.Close()
	_, _ = io.WriteString(rwc, "hi\n")
	line, err := bufio.NewReader(rwc).ReadString('\n')
	if err != nil || line != "echo:hi\n" {
		t.Fatalf("got %q %v", line, err)
	}
}

func TestTransportStreamsRequestBodyFullDuplex(t *testing.T) {
	// The backend echoes each line as it arrives: the round trip must return (and the response
	// stream) while the request body is still being written.
	srv, _ := backend(t, func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			_, _ = io.WriteString(w, "re:"+line)
			w.(http.Flusher).Flush()
		}
	})
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL, pr)
	resp, err := newTransport(t).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for _, msg := range []string{"one\n", "two\n"} {
		_, _ = io.WriteString(pw, msg)
		line, err := br.ReadString('\n')
		if err != nil || line != "re:"+msg {
			t.Fatalf("got %q %v", line, err)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Fatalf("after the request ended: %q %v", rest, err)
	}
}

func TestTransportLargeBodyWithKnownLength(t *testing.T) {
	srv, conns := backend(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Got", r.Header.Get("Content-Length")+"/"+itoa(n))
	})
	tr := newTransport(t)
	for range 2 {
		body := strings.Repeat("L", inlineBodyMax*3)
		resp, _ := get(t, tr, "PUT", srv.URL, strings.NewReader(body))
		if got := resp.Header.Get("X-Got"); got != itoa(int64(len(body)))+"/"+itoa(int64(len(body))) {
			t.Fatalf("backend saw %s", got)
		}
	}
	if conns.Load() != 1 {
		t.Fatalf("%d connections", conns.Load())
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

type dialFailure struct{ addr string }

func (e *dialFailure) Error() string { return "cannot reach " + e.addr }

func TestTransportReturnsDialErrorsWrappable(t *testing.T) {
	tr := &Transport{DialContext: func(_ context.Context, _, addr string) (net.Conn, error) {
		return nil, &dialFailure{addr}
	}}
	req, _ := http.NewRequest("GET", "http://upstream/", nil)
	_, err := tr.RoundTrip(req)
	var df *dialFailure
	if !errors.As(err, &df) || df.addr != "upstream:80" {
		t.Fatalf("got %v", err)
	}
}

func TestTransportClosingBodyEarlyDropsTheConnection(t *testing.T) {
	srv, conns := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = io.WriteString(w, strings.Repeat("x", 1<<20))
			return
		}
		_, _ = io.WriteString(w, "small")
	})
	tr := newTransport(t)
	req, _ := http.NewRequest("GET", srv.URL+"/big", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = resp.Body.Read(make([]byte, 10))
	resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after Close succeeded")
	}
	if _, b := get(t, tr, "GET", srv.URL+"/small", nil); b != "small" {
		t.Fatalf("got %q", b)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the half-read one dropped)", n)
	}
}

func TestTransportRetriesWithGetBody(t *testing.T) {
	var conns atomic.Int32
	addr := rawBackend(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		b, _ := io.ReadAll(req.Body)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+itoa(int64(len(b)))+"\r\n\r\n"+string(b))
	})
	tr := newTransport(t)
	for range 2 {
		time.Sleep(20 * time.Millisecond)
		// http.NewRequest sets GetBody for a strings.Reader.
		if _, b := get(t, tr, "POST", "http://"+addr+"/", strings.NewReader("again")); b != "again" {
			t.Fatalf("got %q", b)
		}
	}
}

func TestTransportDeadlineEndsAHungExchangeAndIsClearedOnReuse(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	var conns atomic.Int32
	addr := rawBackend(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := readRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/head":
				<-hang
				return
			case "/body":
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome")
				<-hang
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tr := newTransport(t)
	for _, path := range []string{"/head", "/body"} {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		resp, err := tr.RoundTripDeadline(req, time.Now().Add(100*time.Millisecond))
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: got %v, want os.ErrDeadlineExceeded", path, err)
		}
	}
	// A finished exchange gives its connection back without its deadline: a request on it after
	// the deadline has passed still succeeds.
	req, _ := http.NewRequest("GET", "http://"+addr+"/ok", nil)
	resp, err := tr.RoundTripDeadline(req, time.Now().Add(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "ok" {
		t.Fatalf("%q %v", b, err)
	}
	resp.Body.Close()
	time.Sleep(400 * time.Millisecond) // well past the first exchange's deadline
	_, b := get(t, tr, "GET", "http://"+addr+"/ok", nil)
	if b != "ok" {
		t.Fatalf("reused connection: %q", b)
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3: the two that hung, then one for both /ok requests", n)
	}
}

// A server that takes a request on a kept-alive connection and dies before answering may have
// acted on it: a POST must reach it once, while a GET may be sent again on a fresh connection.
func TestTransportDoesNotReplayAPostTheUpstreamMayHaveSeen(t *testing.T) {
	for _, method := range []string{"POST", "GET"} {
		t.Run(method, func(t *testing.T) {
			var seen atomic.Int32
			addr := rawBackend(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.ReadAll(req.Body)
					if req.URL.Path == "/act" {
						seen.Add(1)
						return // dies mid-request: the connection closes with nothing answered
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			tr := newTransport(t)
			if _, b := get(t, tr, "GET", "http://"+addr+"/warm", nil); b != "ok" {
				t.Fatalf("warm-up: %q", b)
			}
			req, _ := http.NewRequest(method, "http://"+addr+"/act", strings.NewReader("pay"))
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("got %d, want an error", resp.StatusCode)
			}
			want := int32(1)
			if method == "GET" {
				want = 2 // replayed once on a fresh connection, which dies too
			}
			if n := seen.Load(); n != want {
				t.Fatalf("upstream saw the %s %d times, want %d", method, n, want)
			}
		})
	}
}

package demo

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// fakeSidecar stands in for a workload proxy's outbound listener: it takes
// the app's explicit-proxy requests (absolute form) and forwards each to
// the app registered for its host:port, recording what it saw. Unknown
// hosts get 503 "no healthy upstream", as from a proxy.
type fakeSidecar struct {
	URL string

	mu       sync.Mutex
	routes   map[string]string // authority → app address
	seen     []seenRequest
	newConns int
}

type seenRequest struct {
	Authority    string
	Path         string
	AbsoluteForm bool
	Header       http.Header
}

func newFakeSidecar(t *testing.T) *fakeSidecar {
	t.Helper()
	s := &fakeSidecar{routes: map[string]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upstream := &http.Client{Transport: &http.Transport{}}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.forward(w, r, upstream) }),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				s.mu.Lock()
				s.newConns++
				s.mu.Unlock()
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		upstream.CloseIdleConnections()
	})
	s.URL = "http://" + ln.Addr().String()
	return s
}

// route sends requests for authority (e.g. "reviews.default.svc.cluster.local:9080") to addr.
func (s *fakeSidecar) route(authority, addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routes[authority] = addr
}

func (s *fakeSidecar) forward(w http.ResponseWriter, r *http.Request, upstream *http.Client) {
	s.mu.Lock()
	s.seen = append(s.seen, seenRequest{
		Authority:    r.Host,
		Path:         r.URL.Path,
		AbsoluteForm: r.URL.IsAbs(),
		Header:       r.Header.Clone(),
	})
	addr, ok := s.routes[r.Host]
	s.mu.Unlock()
	if !ok {
		http.Error(w, "no healthy upstream", http.StatusServiceUnavailable)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+addr+r.URL.RequestURI(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := upstream.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// requests returns what the sidecar saw for authority, in order.
func (s *fakeSidecar) requests(authority string) []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []seenRequest
	for _, r := range s.seen {
		if r.Authority == authority {
			out = append(out, r)
		}
	}
	return out
}

func (s *fakeSidecar) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newConns
}

// startApp serves a on an ephemeral port until the test ends, and checks
// that it then shuts down cleanly.
func startApp(t *testing.T, a App) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: Serve after shutdown: %v", a.ID(), err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Serve did not return after its context was done", a.ID())
		}
	})
	return ln.Addr().String()
}

const (
	reviewsAuthority = "reviews.default.svc.cluster.local:9080"
	ratingsAuthority = "ratings.default.svc.cluster.local:9080"
)

// get GETs url with headers and returns the response and its body.
func get(t *testing.T, url string, headers map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

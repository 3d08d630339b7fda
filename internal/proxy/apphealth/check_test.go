package apphealth

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// checkOnce runs one check of p with Istio's defaults, as the runner does.
func checkOnce(t *testing.T, p *Probe) error {
	t.Helper()
	if err := p.Validate(); err != nil {
		t.Fatalf("test probe invalid: %v", err)
	}
	d := p.withDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(d.TimeoutSeconds)*time.Second)
	defer cancel()
	return newChecker(d).check(ctx)
}

func wantHealthy(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: unhealthy (%v), want healthy", what, err)
	}
}

func wantUnhealthy(t *testing.T, what string, err error, msg string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: healthy, want unhealthy", what)
	} else if !strings.Contains(err.Error(), msg) {
		t.Errorf("%s: message %q, want it to contain %q", what, err, msg)
	}
}

// app is an HTTP app on loopback answering its readiness path with a status the test sets, and
// remembering the last request.
type app struct {
	srv    *httptest.Server
	status atomic.Int32

	mu   sync.Mutex
	last *http.Request
	hits int
}

func newApp(t *testing.T, tls bool) *app {
	a := &app{}
	a.status.Store(http.StatusOK)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.last, a.hits = r.Clone(context.Background()), a.hits+1
		a.mu.Unlock()
		w.WriteHeader(int(a.status.Load()))
	})
	a.srv = httptest.NewUnstartedServer(h)
	// A plain-HTTP check of the TLS app is part of a test; its handshake error is expected.
	a.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tls {
		a.srv.StartTLS()
	} else {
		a.srv.Start()
	}
	t.Cleanup(a.srv.Close)
	return a
}

func (a *app) port() int { return a.srv.Listener.Addr().(*net.TCPAddr).Port }

func (a *app) lastRequest() *http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

func TestHTTPCheckIsHealthyFor2xxAnd3xxOnly(t *testing.T) {
	a := newApp(t, false)
	p := &Probe{HTTPGet: &HTTPGet{Host: "127.0.0.1", Port: a.port(), Path: "/ready?deep=1",
		HTTPHeaders: []Header{{Name: "X-Probe", Value: "one"}, {Name: "X-Probe", Value: "two"}, {Name: "Host", Value: "app.internal"}}}}
	for _, code := range []int{200, 204, 304, 399} {
		a.status.Store(int32(code))
		wantHealthy(t, "status "+strconv.Itoa(code), checkOnce(t, p))
	}
	for _, code := range []int{400, 404, 500, 503} {
		a.status.Store(int32(code))
		wantUnhealthy(t, "status "+strconv.Itoa(code), checkOnce(t, p), "status "+strconv.Itoa(code)+", want 200-399")
	}
	r := a.lastRequest()
	if r.URL.Path != "/ready" || r.URL.RawQuery != "deep=1" {
		t.Errorf("request for %s, want /ready?deep=1", r.URL)
	}
	if got := r.Header.Values("X-Probe"); len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Errorf("X-Probe = %q, want both values", got)
	}
	if r.Host != "app.internal" {
		t.Errorf("Host = %q, want the header's app.internal", r.Host)
	}
	if ua := r.Header.Get("User-Agent"); ua != "istio-probe/1.0" {
		t.Errorf("User-Agent = %q, want Istio's istio-probe/1.0", ua)
	}
}

func TestHTTPCheckDefaultsToLocalhostAndRoot(t *testing.T) {
	a := newApp(t, false)
	wantHealthy(t, "GET localhost", checkOnce(t, &Probe{HTTPGet: &HTTPGet{Port: a.port()}}))
	if r := a.lastRequest(); r == nil || r.URL.Path != "/" || !strings.HasPrefix(r.Host, "localhost:") {
		t.Errorf("request = %v, want GET / to localhost", r)
	}
}

func TestHTTPSCheckDoesNotVerifyTheCertificate(t *testing.T) {
	a := newApp(t, true) // httptest's certificate is signed by nobody the proxy trusts
	wantHealthy(t, "HTTPS", checkOnce(t, &Probe{HTTPGet: &HTTPGet{Host: "127.0.0.1", Port: a.port(), Scheme: "HTTPS"}}))
	wantUnhealthy(t, "plain HTTP to a TLS port", checkOnce(t, &Probe{HTTPGet: &HTTPGet{Host: "127.0.0.1", Port: a.port()}}), "status 400")
}

func TestHTTPCheckFailsWhenTheAppIsDownOrTooSlow(t *testing.T) {
	a := newApp(t, false)
	port := a.port()
	a.srv.Close()
	wantUnhealthy(t, "closed port", checkOnce(t, &Probe{HTTPGet: &HTTPGet{Host: "127.0.0.1", Port: port}}), "connection refused")

	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	start := time.Now()
	err := checkOnce(t, &Probe{TimeoutSeconds: 1, HTTPGet: &HTTPGet{Host: "127.0.0.1", Port: slow.Listener.Addr().(*net.TCPAddr).Port}})
	wantUnhealthy(t, "hanging app", err, "no response within 1s")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the check took %v with timeoutSeconds 1", d)
	}
}

func TestTCPCheckFollowsTheListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	p := &Probe{TCPSocket: &TCPSocket{Port: port}} // default host: localhost
	wantHealthy(t, "listening", checkOnce(t, p))
	ln.Close()
	wantUnhealthy(t, "closed", checkOnce(t, p), "connection refused")
}

func TestExecCheckUsesTheExitStatusAndReportsTheOutput(t *testing.T) {
	wantHealthy(t, "true", checkOnce(t, &Probe{Exec: &Exec{Command: []string{"true"}}}))
	wantUnhealthy(t, "exit 1", checkOnce(t, &Probe{Exec: &Exec{Command: []string{"sh", "-c", "exit 1"}}}), "exit status 1")
	err := checkOnce(t, &Probe{Exec: &Exec{Command: []string{"sh", "-c", "echo db down >&2; exit 3"}}})
	wantUnhealthy(t, "exit 3", err, `exec ["sh" "-c" "echo db down >&2; exit 3"]: exit status 3: db down`)
	// No shell: the command is the program and its arguments.
	wantUnhealthy(t, "shell syntax", checkOnce(t, &Probe{Exec: &Exec{Command: []string{"true && false"}}}), "executable file not found")

	long := checkOnce(t, &Probe{Exec: &Exec{Command: []string{"sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; exit 1"}}})
	wantUnhealthy(t, "chatty", long, "exit status 1")
	if n := len(long.Error()); n > maxExecOutput+200 {
		t.Errorf("message is %d bytes: the output is not bounded", n)
	}
}

func TestExecCheckTimesOutAndKillsTheCommandsChildren(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	start := time.Now()
	// The shell's child holds stdout open: only killing the group (or WaitDelay) ends the check.
	err := checkOnce(t, &Probe{TimeoutSeconds: 1, Exec: &Exec{Command: []string{"sh", "-c", "sleep 30 & echo $! > " + pidFile + "; wait"}}})
	wantUnhealthy(t, "sleep 30", err, "timed out")
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("the check took %v with timeoutSeconds 1", d)
	}
	b, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(2 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the command's child %d outlived the timed-out check", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processAlive reports whether pid still runs (a zombie counts as gone).
func processAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func TestGRPCCheckAsksTheHealthService(t *testing.T) {
	hs := health.NewServer()
	port := serveGRPC(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
	hs.SetServingStatus("reviews", healthpb.HealthCheckResponse_SERVING)
	p := &Probe{GRPC: &GRPC{Port: port, Service: "reviews"}}
	wantHealthy(t, "SERVING", checkOnce(t, p))
	wantHealthy(t, "the server as a whole", checkOnce(t, &Probe{GRPC: &GRPC{Port: port}}))

	hs.SetServingStatus("reviews", healthpb.HealthCheckResponse_NOT_SERVING)
	wantUnhealthy(t, "NOT_SERVING", checkOnce(t, p), `service "reviews" is NOT_SERVING`)
	wantUnhealthy(t, "unknown service", checkOnce(t, &Probe{GRPC: &GRPC{Port: port, Service: "ratings"}}), "NotFound")

	bare := serveGRPC(t, func(*grpc.Server) {})
	wantUnhealthy(t, "no health service", checkOnce(t, &Probe{GRPC: &GRPC{Port: bare}}), "does not implement grpc.health.v1.Health")
}

func serveGRPC(t *testing.T, register func(*grpc.Server)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().(*net.TCPAddr).Port
}

package server

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// With normalize_path, "/public/../admin" is routed and forwarded as "/admin": a route for /public
// cannot be used to reach what sits behind /admin.
func TestNormalizePathRoutesAndForwardsTheResolvedPath(t *testing.T) {
	for _, normalize := range []bool{false, true} {
		p := newProxy(t, Options{})
		public := newBackend(t, "public", nil)
		admin := newBackend(t, "admin", nil)
		rc := routeConfig("r", []string{"*"},
			routeTo("/admin", toCluster("admin")),
			routeTo("/", toCluster("public")))
		l := hcmListener(t, "l", "127.0.0.1:0", "", rc)
		editHCM(t, l, func(h *hcmv3.HttpConnectionManager) { h.NormalizePath = wrapperspb.Bool(normalize) })
		mustApply(t, p, ClusterType, msgs(staticCluster("public", public.addr), staticCluster("admin", admin.addr)))
		mustApply(t, p, ListenerType, msgs(l))

		status, body := rawGet(t, listenerAddr(t, p, "l"), "/public/../admin/x", nil)
		want, wantPath := "public", "/public/../admin/x"
		if normalize {
			want, wantPath = "admin", "/admin/x"
		}
		if status != 200 || body != want {
			t.Fatalf("normalize_path %v: got %d %q, want 200 %q", normalize, status, body, want)
		}
		be := public
		if normalize {
			be = admin
		}
		if got := be.lastRequest().RequestURI; got != wantPath {
			t.Errorf("normalize_path %v: upstream saw %q, want %q", normalize, got, wantPath)
		}
	}
}

// use_remote_address: the proxy appends the peer's address to X-Forwarded-For; without it, the
// header passes untouched.
func TestUseRemoteAddressAppendsThePeerToXForwardedFor(t *testing.T) {
	for _, use := range []bool{false, true} {
		p := newProxy(t, Options{})
		be := newBackend(t, "a", nil)
		l := hcmListener(t, "l", "127.0.0.1:0", "", routeConfig("r", []string{"*"}, routeTo("/", toCluster("a"))))
		editHCM(t, l, func(h *hcmv3.HttpConnectionManager) { h.UseRemoteAddress = wrapperspb.Bool(use) })
		mustApply(t, p, ClusterType, msgs(staticCluster("a", be.addr)))
		mustApply(t, p, ListenerType, msgs(l))
		if status, _ := rawGet(t, listenerAddr(t, p, "l"), "/", map[string]string{"X-Forwarded-For": "203.0.113.9"}); status != 200 {
			t.Fatalf("status %d", status)
		}
		want := "203.0.113.9"
		if use {
			want += ",127.0.0.1"
		}
		if got := be.lastRequest().Header.Get("X-Forwarded-For"); got != want {
			t.Errorf("use_remote_address %v: X-Forwarded-For %q, want %q", use, got, want)
		}
	}
}

// max_request_headers_kb bounds request headers: beyond it the proxy answers 431, as Envoy.
func TestMaxRequestHeadersKBIsEnforced(t *testing.T) {
	p := newProxy(t, Options{})
	be := newBackend(t, "a", nil)
	l := hcmListener(t, "l", "127.0.0.1:0", "", routeConfig("r", []string{"*"}, routeTo("/", toCluster("a"))))
	editHCM(t, l, func(h *hcmv3.HttpConnectionManager) { h.MaxRequestHeadersKb = wrapperspb.UInt32(2) })
	mustApply(t, p, ClusterType, msgs(staticCluster("a", be.addr)))
	mustApply(t, p, ListenerType, msgs(l))
	addr := listenerAddr(t, p, "l")
	if status, _ := rawGet(t, addr, "/", map[string]string{"X-Small": strings.Repeat("a", 1000)}); status != 200 {
		t.Errorf("1 KB of headers: status %d, want 200", status)
	}
	if status, _ := rawGet(t, addr, "/", map[string]string{"X-Big": strings.Repeat("a", 3000)}); status != 431 {
		t.Errorf("3 KB of headers: status %d, want 431", status)
	}
}

// A local reply carries the request ID the proxy generated, when always_set_request_id_in_response.
func TestLocalRepliesCarryAGeneratedRequestID(t *testing.T) {
	p := newProxy(t, Options{})
	l := hcmListener(t, "l", "127.0.0.1:0", "", routeConfig("r", []string{"known"}, routeTo("/", toCluster("a"))))
	editHCM(t, l, func(h *hcmv3.HttpConnectionManager) { h.AlwaysSetRequestIdInResponse = true })
	mustApply(t, p, ListenerType, msgs(l))
	code, _, hdr := do(t, keepAliveClient(t), "GET", "http://"+listenerAddr(t, p, "l")+"/", "unknown", nil)
	if code != 404 || len(hdr.Get("X-Request-Id")) != 36 {
		t.Errorf("got %d with x-request-id %q, want 404 with a generated UUID", code, hdr.Get("X-Request-Id"))
	}
}

// rawGet sends a GET with the target exactly as given (net/http's client would clean it) and
// returns the status and body.
func rawGet(t *testing.T, addr, target string, hdr map[string]string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	b.WriteString("GET " + target + " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n")
	for k, v := range hdr {
		b.WriteString(k + ": " + v + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := c.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&body)
	return resp.StatusCode, body.String()
}

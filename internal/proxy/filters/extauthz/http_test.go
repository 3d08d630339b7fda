package extauthz_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// authHTTP is an HTTP authorization service in the pattern of issue 5: it knows users by bearer
// token and hands their id and roles to the app in headers.
type authHTTP struct {
	addr      string
	mu        sync.Mutex
	calls     int
	method    string
	path      string
	host      string
	header    http.Header
	body      string
	cancelled chan struct{}
}

func newAuthHTTP(t *testing.T) *authHTTP {
	t.Helper()
	a := &authHTTP{cancelled: make(chan struct{}, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.calls++
		a.method, a.path, a.host, a.header, a.body = r.Method, r.URL.RequestURI(), r.Host, r.Header.Clone(), string(b)
		a.mu.Unlock()
		switch r.Header.Get("Authorization") {
		case "Bearer alice":
			w.Header().Set("X-User-Id", "alice")
			w.Header().Set("X-User-Roles", "admin,dev")
			w.Header().Set("X-Auth-Trace", "t-1")
			w.Header().Set("X-Not-For-App", "secret")
		case "":
			// Anonymous: allowed, and whatever identity the client claimed is removed.
			w.Header().Set("X-Envoy-Auth-Headers-To-Remove", "x-user-id, x-user-roles")
		case "Bearer hang":
			select {
			case <-r.Context().Done():
				a.cancelled <- struct{}{}
			case <-time.After(20 * time.Second):
			}
			return
		case "Bearer broken":
			w.WriteHeader(http.StatusInternalServerError)
			return
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Auth-Reason", "blocked")
			w.Header().Set("X-Internal", "do-not-leak")
			w.Header().Set("Www-Authenticate", `Bearer realm="shop"`)
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"error":"user is blocked"}`)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	a.addr = srv.Listener.Addr().String()
	return a
}

func (a *authHTTP) seen() (calls int, method, path, host string, h http.Header, body string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls, a.method, a.path, a.host, a.header, a.body
}

const httpFilter = `
http_service:
  server_uri: {uri: "http://authz.local", cluster: authz, timeout: 2s}
  path_prefix: /check
  authorization_request:
    allowed_headers: {patterns: [{exact: x-allowed}]}
    headers_to_add: [{key: x-from-proxy, value: "yes"}]
  authorization_response:
    allowed_upstream_headers: {patterns: [{exact: x-user-id}, {exact: x-user-roles}]}
    allowed_client_headers: {patterns: [{exact: x-auth-reason}, {exact: content-type}]}
    allowed_client_headers_on_success: {patterns: [{exact: x-auth-trace}]}
`

func TestHTTPServiceHandsUserIdentityToTheApp(t *testing.T) {
	app, auth := newApp(t), newAuthHTTP(t)
	p, url := startProxy(t, proxyConfig{Filter: filterYAML(httpFilter), App: app.addr, Authz: auth.addr})

	r := send(t, "GET", url+"/orders?page=2", map[string]string{
		"Authorization": "Bearer alice", "X-User-Id": "mallory", "X-User-Roles": "root",
		"X-Allowed": "yes-please", "X-Secret": "not-for-auth",
	}, "")
	if r.status != http.StatusOK {
		t.Fatalf("status %d, body %q; want 200", r.status, r.body)
	}
	if got := r.saw.Headers["X-User-Id"]; len(got) != 1 || got[0] != "alice" {
		t.Errorf("app got X-User-Id %q, want only the service's [alice] (the client's is overwritten)", got)
	}
	if got := r.saw.Headers["X-User-Roles"]; len(got) != 1 || got[0] != "admin,dev" {
		t.Errorf("app got X-User-Roles %q, want [admin,dev]", got)
	}
	if v := r.saw.Headers.Get("X-Not-For-App"); v != "" {
		t.Errorf("app got X-Not-For-App %q: not in allowed_upstream_headers", v)
	}
	if v := r.header.Get("X-Auth-Trace"); v != "t-1" {
		t.Errorf("client got X-Auth-Trace %q, want t-1 (allowed_client_headers_on_success)", v)
	}

	_, method, path, host, h, _ := auth.seen()
	if method != "GET" || path != "/check/orders?page=2" {
		t.Errorf("check request %s %s, want GET /check/orders?page=2", method, path)
	}
	if want := strings.TrimPrefix(url, "http://"); host != want {
		t.Errorf("check request Host %q, want the request's %q", host, want)
	}
	if h.Get("Authorization") != "Bearer alice" || h.Get("X-Allowed") != "yes-please" || h.Get("X-From-Proxy") != "yes" {
		t.Errorf("check request lacks Authorization, the allowed header or headers_to_add: %v", h)
	}
	if h.Get("X-Secret") != "" || h.Get("X-User-Id") != "" {
		t.Errorf("check request carries headers that are not allowed: %v", h)
	}
	if got := counter(t, p, "http.main.ext_authz.ok"); got != 1 {
		t.Errorf("http.main.ext_authz.ok = %d, want 1", got)
	}
	if got := counter(t, p, "cluster.app.ext_authz.ok"); got != 1 {
		t.Errorf("cluster.app.ext_authz.ok = %d, want 1", got)
	}
}

func TestHTTPServiceDenialGoesToTheClientWithItsStatusBodyAndAllowedHeaders(t *testing.T) {
	app, auth := newApp(t), newAuthHTTP(t)
	p, url := startProxy(t, proxyConfig{Filter: filterYAML(httpFilter), App: app.addr, Authz: auth.addr})

	r := send(t, "POST", url+"/orders", map[string]string{"Authorization": "Bearer bob"}, "")
	if r.status != http.StatusForbidden || r.body != `{"error":"user is blocked"}` {
		t.Fatalf("got %d %q, want the service's 403 and body", r.status, r.body)
	}
	if r.header.Get("Content-Type") != "application/json" || r.header.Get("X-Auth-Reason") != "blocked" {
		t.Errorf("denial headers %v lack the allowed Content-Type or X-Auth-Reason", r.header)
	}
	if len(r.header.Values("Content-Type")) != 1 {
		t.Errorf("Content-Type %q: the service's must replace the proxy's", r.header.Values("Content-Type"))
	}
	if r.header.Get("Www-Authenticate") == "" {
		t.Error("WWW-Authenticate missing: Envoy always lets it through with a client header list")
	}
	if r.header.Get("X-Internal") != "" {
		t.Error("X-Internal reached the client though it is not in allowed_client_headers")
	}
	if app.count() != 0 {
		t.Errorf("the app was called %d times for a denied request", app.count())
	}
	if got := counter(t, p, "http.main.ext_authz.denied"); got != 1 {
		t.Errorf("http.main.ext_authz.denied = %d, want 1", got)
	}
}

func TestAnonymousRequestCannotSpoofTheUserHeaders(t *testing.T) {
	app, auth := newApp(t), newAuthHTTP(t)
	_, url := startProxy(t, proxyConfig{Filter: filterYAML(httpFilter), App: app.addr, Authz: auth.addr})

	r := send(t, "GET", url+"/orders", map[string]string{"X-User-Id": "admin", "X-User-Roles": "root"}, "")
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200", r.status)
	}
	if v := r.saw.Headers.Values("X-User-Id"); len(v) != 0 {
		t.Errorf("app got the client's X-User-Id %q; the service asked to remove it", v)
	}
	if v := r.saw.Headers.Values("X-User-Roles"); len(v) != 0 {
		t.Errorf("app got the client's X-User-Roles %q", v)
	}
}

func TestAuthServiceDownFailsClosed(t *testing.T) {
	app := newApp(t)
	p, url := startProxy(t, proxyConfig{Filter: filterYAML(httpFilter), App: app.addr, Authz: deadAddr(t)})

	r := send(t, "GET", url+"/orders", map[string]string{"Authorization": "Bearer alice"}, "")
	if r.status != http.StatusForbidden || r.body != "" {
		t.Fatalf("got %d %q, want an empty 403", r.status, r.body)
	}
	if app.count() != 0 {
		t.Error("the app was reached though the auth service is down")
	}
	if got := counter(t, p, "http.main.ext_authz.error"); got != 1 {
		t.Errorf("http.main.ext_authz.error = %d, want 1", got)
	}
}

func TestAuthService5xxUsesStatusOnError(t *testing.T) {
	app, auth := newApp(t), newAuthHTTP(t)
	_, url := startProxy(t, proxyConfig{Filter: filterYAML(httpFilter + "status_on_error: {code: 503}\n"), App: app.addr, Authz: auth.addr})
	r := send(t, "GET", url+"/orders", map[string]string{"Authorization": "Bearer broken"}, "")
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want status_on_error 503 for a 5xx from the service", r.status)
	}
}

func TestFailureModeAllowLetsRequestsThroughWhenTheServiceIsDown(t *testing.T) {
	app := newApp(t)
	cfg := httpFilter + "failure_mode_allow: true\nfailure_mode_allow_header_add: true\n"
	p, url := startProxy(t, proxyConfig{Filter: filterYAML(cfg), App: app.addr, Authz: deadAddr(t)})

	r := send(t, "GET", url+"/orders", nil, "")
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200 with failure_mode_allow", r.status)
	}
	if v := r.saw.Headers.Get("X-Envoy-Auth-Failure-Mode-Allowed"); v != "true" {
		t.Errorf("app got x-envoy-auth-failure-mode-allowed %q, want true", v)
	}
	if got := counter(t, p, "http.main.ext_authz.failure_mode_allowed"); got != 1 {
		t.Errorf("failure_mode_allowed = %d, want 1", got)
	}
}

func TestAuthServiceTimeoutFailsClosedAndCancelsTheCall(t *testing.T) {
	app, auth := newApp(t), newAuthHTTP(t)
	cfg := strings.Replace(httpFilter, "timeout: 2s", "timeout: 0.3s", 1)
	_, url := startProxy(t, proxyConfig{Filter: filterYAML(cfg), App: app.addr, Authz: auth.addr})

	start := time.Now()
	r := send(t, "GET", url+"/orders", map[string]string{"Authorization": "Bearer hang"}, "")
	t.Logf("timed-out check answered in %v", time.Since(start))
	if r.status != http.StatusForbidden {
		t.Fatalf("status %d, want 403 after the service's timeout", r.status)
	}
	select {
	case <-auth.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the call to the auth service was not cancelled at the timeout")
	}
}

func TestClientGoingAwayCancelsTheAuthCall(t *testing.T) {
	app, auth := newApp(t), newAuthHTTP(t)
	cfg := strings.Replace(httpFilter, "timeout: 2s", "timeout: 60s", 1)
	_, url := startProxy(t, proxyConfig{Filter: filterYAML(cfg), App: app.addr, Authz: auth.addr})

	req, _ := http.NewRequest("GET", url+"/orders", nil)
	req.Header.Set("Authorization", "Bearer hang")
	c := &http.Client{Timeout: 300 * time.Millisecond}
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("got %s, want the client to give up", resp.Status)
	}
	select {
	case <-auth.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the auth call went on after the client left")
	}
}

func TestRouteCanDisableTheCheck(t *testing.T) {
	app, auth := newApp(t), newAuthHTTP(t)
	_, url := startProxy(t, proxyConfig{Filter: filterYAML(httpFilter), PublicRoute: indent(16, "disabled: true"), App: app.addr, Authz: auth.addr})

	if r := send(t, "GET", url+"/public/logo.png", map[string]string{"Authorization": "Bearer bob"}, ""); r.status != http.StatusOK {
		t.Fatalf("public route: status %d, want 200 without a check", r.status)
	}
	if calls, _, _, _, _, _ := auth.seen(); calls != 0 {
		t.Errorf("auth service called %d times for a route that disables the filter", calls)
	}
	if r := send(t, "GET", url+"/orders", map[string]string{"Authorization": "Bearer bob"}, ""); r.status != http.StatusForbidden {
		t.Fatalf("other route: status %d, want 403", r.status)
	}
}

func TestHTTPServiceGetsTheRequestBody(t *testing.T) {
	app, auth := newApp(t), newAuthHTTP(t)
	cfg := httpFilter + "with_request_body: {max_request_bytes: 16}\n"
	_, url := startProxy(t, proxyConfig{Filter: filterYAML(cfg), App: app.addr, Authz: auth.addr})

	r := send(t, "POST", url+"/orders", map[string]string{"Authorization": "Bearer alice"}, "hello")
	if r.status != http.StatusOK || r.saw.Body != "hello" {
		t.Fatalf("got %d, app body %q; want 200 and the whole body upstream", r.status, r.saw.Body)
	}
	_, _, _, _, h, body := auth.seen()
	if body != "hello" || h.Get("X-Envoy-Auth-Partial-Body") != "false" || h.Get("Content-Length") != "5" {
		t.Errorf("auth service got body %q, partial %q, length %q; want hello, false, 5", body, h.Get("X-Envoy-Auth-Partial-Body"), h.Get("Content-Length"))
	}

	big := strings.Repeat("x", 100)
	if r := send(t, "POST", url+"/orders", map[string]string{"Authorization": "Bearer alice"}, big); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("body over max_request_bytes: status %d, want 413 without allow_partial_message", r.status)
	}
}

func TestPartialBodyGoesToTheServiceAndAllOfItUpstream(t *testing.T) {
	app, auth := newApp(t), newAuthHTTP(t)
	cfg := httpFilter + "with_request_body: {max_request_bytes: 16, allow_partial_message: true}\n"
	_, url := startProxy(t, proxyConfig{Filter: filterYAML(cfg), App: app.addr, Authz: auth.addr})

	big := strings.Repeat("0123456789", 10)
	r := send(t, "POST", url+"/orders", map[string]string{"Authorization": "Bearer alice"}, big)
	if r.status != http.StatusOK || r.saw.Body != big {
		t.Fatalf("got %d, app body of %d bytes; want 200 and all %d bytes", r.status, len(r.saw.Body), len(big))
	}
	_, _, _, _, h, body := auth.seen()
	if body != big[:16] || h.Get("X-Envoy-Auth-Partial-Body") != "true" {
		t.Errorf("auth service got %q partial=%q, want the first 16 bytes and true", body, h.Get("X-Envoy-Auth-Partial-Body"))
	}
}

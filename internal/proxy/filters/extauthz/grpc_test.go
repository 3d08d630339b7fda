package extauthz_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// authGRPC is a real envoy.service.auth.v3.Authorization server.
type authGRPC struct {
	authv3.UnimplementedAuthorizationServer
	addr string
	mu   sync.Mutex
	last *authv3.CheckRequest
}

func newAuthGRPC(t *testing.T) *authGRPC {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &authGRPC{addr: ln.Addr().String()}
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, a)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return a
}

func header(k, v string, appendIt *bool) *corev3.HeaderValueOption {
	h := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
	if appendIt != nil {
		//lint:ignore SA1019 services still send the deprecated field; the filter must read it.
		h.Append = wrapperspb.Bool(*appendIt)
	}
	return h
}

func (a *authGRPC) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	a.mu.Lock()
	a.last = proto.Clone(req).(*authv3.CheckRequest)
	a.mu.Unlock()
	switch req.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"] {
	case "Bearer alice":
		md, _ := structpb.NewStruct(map[string]any{"user": "alice"})
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:              []*corev3.HeaderValueOption{header("x-user-id", "alice", nil), header("x-user-roles", "admin", nil)},
				HeadersToRemove:      []string{"x-debug"},
				ResponseHeadersToAdd: []*corev3.HeaderValueOption{header("x-auth-trace", "g-1", nil)},
			}},
			DynamicMetadata: md,
		}, nil
	default:
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
				Headers: []*corev3.HeaderValueOption{header("www-authenticate", `Bearer realm="shop"`, nil)},
				Body:    "no entry",
			}},
		}, nil
	}
}

func (a *authGRPC) lastRequest() *authv3.CheckRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

const grpcFilter = `
grpc_service:
  envoy_grpc: {cluster_name: authz}
  timeout: 2s
with_request_body: {max_request_bytes: 1024}
`

// The catch-all route adds context for the service, as Istio's CUSTOM providers may.
const contextRoute = `            typed_per_filter_config:
              envoy.filters.http.ext_authz:
                "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                check_settings: {context_extensions: {team: orders}}`

func TestGRPCServiceHandsUserIdentityToTheApp(t *testing.T) {
	app, auth := newApp(t), newAuthGRPC(t)
	p, url := startProxy(t, proxyConfig{Filter: filterYAML(grpcFilter), RouteExtra: contextRoute, App: app.addr, Authz: auth.addr, AuthzH2: true})

	r := send(t, "POST", url+"/orders?id=7", map[string]string{
		"Authorization": "Bearer alice", "X-User-Id": "mallory", "X-Debug": "1",
	}, `{"item":"book"}`)
	if r.status != http.StatusOK {
		t.Fatalf("status %d %q, want 200", r.status, r.body)
	}
	if got := r.saw.Headers.Values("X-User-Id"); len(got) != 1 || got[0] != "alice" {
		t.Errorf("app got X-User-Id %q, want only [alice]", got)
	}
	if r.saw.Headers.Get("X-User-Roles") != "admin" || r.saw.Headers.Get("X-Debug") != "" {
		t.Errorf("app headers %v: want X-User-Roles admin and no X-Debug (headers_to_remove)", r.saw.Headers)
	}
	if r.saw.Body != `{"item":"book"}` {
		t.Errorf("app got body %q, want it whole after the check", r.saw.Body)
	}
	if r.header.Get("X-Auth-Trace") != "g-1" {
		t.Errorf("client got X-Auth-Trace %q, want g-1 (response_headers_to_add)", r.header.Get("X-Auth-Trace"))
	}

	cr := auth.lastRequest()
	h := cr.GetAttributes().GetRequest().GetHttp()
	if h.GetMethod() != "POST" || h.GetPath() != "/orders?id=7" || h.GetHost() != strings.TrimPrefix(url, "http://") || h.GetProtocol() != "HTTP/1.1" {
		t.Errorf("CheckRequest http = %s %s host %s %s", h.GetMethod(), h.GetPath(), h.GetHost(), h.GetProtocol())
	}
	if h.GetHeaders()[":path"] != "/orders?id=7" || h.GetHeaders()["x-debug"] != "1" {
		t.Errorf("CheckRequest headers %v lack :path or the client's headers", h.GetHeaders())
	}
	if h.GetBody() != `{"item":"book"}` || h.GetHeaders()["x-envoy-auth-partial-body"] != "false" {
		t.Errorf("CheckRequest body %q partial %q", h.GetBody(), h.GetHeaders()["x-envoy-auth-partial-body"])
	}
	if got := cr.GetAttributes().GetContextExtensions()["team"]; got != "orders" {
		t.Errorf("context_extensions[team] = %q, want orders from the route", got)
	}
	if src := cr.GetAttributes().GetSource().GetAddress().GetSocketAddress(); src.GetAddress() != "127.0.0.1" || src.GetPortValue() == 0 {
		t.Errorf("source address %v, want the client's", src)
	}
	if dst := cr.GetAttributes().GetDestination().GetAddress().GetSocketAddress(); "http://"+dst.GetAddress()+":"+itoa(int(dst.GetPortValue())) != url {
		t.Errorf("destination address %v, want the listener %s", dst, url)
	}
	if got := counter(t, p, "http.main.ext_authz.ok"); got != 1 {
		t.Errorf("ok = %d, want 1", got)
	}
}

func TestGRPCServiceDenialGoesToTheClient(t *testing.T) {
	app, auth := newApp(t), newAuthGRPC(t)
	_, url := startProxy(t, proxyConfig{Filter: filterYAML(grpcFilter), App: app.addr, Authz: auth.addr, AuthzH2: true})

	r := send(t, "GET", url+"/orders", map[string]string{"Authorization": "Bearer bob"}, "")
	if r.status != http.StatusUnauthorized || r.body != "no entry" || r.header.Get("Www-Authenticate") != `Bearer realm="shop"` {
		t.Fatalf("got %d %q %v; want the service's 401, body and WWW-Authenticate", r.status, r.body, r.header)
	}
	if app.count() != 0 {
		t.Error("the app was reached on a denial")
	}
}

func TestGRPCServiceDownFailsClosed(t *testing.T) {
	app := newApp(t)
	_, url := startProxy(t, proxyConfig{Filter: filterYAML(grpcFilter), App: app.addr, Authz: deadAddr(t), AuthzH2: true})
	if r := send(t, "GET", url+"/orders", map[string]string{"Authorization": "Bearer alice"}, ""); r.status != http.StatusForbidden {
		t.Fatalf("status %d, want 403", r.status)
	}
	if app.count() != 0 {
		t.Error("the app was reached though the auth service is down")
	}
}

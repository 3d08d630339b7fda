package jwtauthn_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/proxy/server"
)

const issuer = "https://issuer.example"

// signingKey is a private key with the kid and alg its tokens carry.
type signingKey struct {
	kid string
	alg jose.SignatureAlgorithm
	key crypto.Signer
}

var (
	keysOnce sync.Once
	rsKey    signingKey
	rsKey2   signingKey
	esKey    signingKey
	edKey    signingKey
)

// testKeys makes the keys once per test binary: RSA generation is slow under -race.
func testKeys(t *testing.T) {
	t.Helper()
	keysOnce.Do(func() {
		r1, err1 := rsa.GenerateKey(rand.Reader, 2048)
		r2, err2 := rsa.GenerateKey(rand.Reader, 2048)
		ec, err3 := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, ed, err4 := ed25519.GenerateKey(rand.Reader)
		for _, err := range []error{err1, err2, err3, err4} {
			if err != nil {
				panic(err)
			}
		}
		rsKey = signingKey{kid: "rsa-1", alg: jose.RS256, key: r1}
		rsKey2 = signingKey{kid: "rsa-2", alg: jose.RS256, key: r2}
		esKey = signingKey{kid: "ec-1", alg: jose.ES256, key: ec}
		edKey = signingKey{kid: "ed-1", alg: jose.EdDSA, key: ed}
	})
}

// sign makes a compact JWS of claims with k.
func sign(t *testing.T, k signingKey, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if k.kid != "" {
		opts = opts.WithHeader("kid", k.kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// claims are valid claims for the test issuer and audience, changed by edits.
func claims(edits ...func(map[string]any)) map[string]any {
	now := time.Now().Unix()
	c := map[string]any{
		"iss": issuer, "sub": "alice", "aud": []string{"bookinfo"}, "iat": now, "exp": now + 3600,
		"ext": map[string]any{"team": "blue"}, "admin": true,
	}
	for _, e := range edits {
		e(c)
	}
	return c
}

func jwksOf(keys ...signingKey) []byte {
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.key.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err)
	}
	return b
}

// jwksServer serves a JWKS that tests may replace, and counts fetches.
type jwksServer struct {
	srv     *httptest.Server
	doc     atomic.Pointer[[]byte]
	fetches atomic.Int64
	addr    string
}

func newJWKSServer(t *testing.T, keys ...signingKey) *jwksServer {
	t.Helper()
	j := &jwksServer{}
	j.set(keys...)
	j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks.json" || r.Host != "issuer.example" {
			http.NotFound(w, r)
			return
		}
		j.fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*j.doc.Load())
	}))
	t.Cleanup(j.srv.Close)
	j.addr = j.srv.Listener.Addr().String()
	return j
}

func (j *jwksServer) set(keys ...signingKey) {
	b := jwksOf(keys...)
	j.doc.Store(&b)
}

// upstreamApp records the headers of the last request it got.
type upstreamApp struct {
	srv  *httptest.Server
	mu   sync.Mutex
	last http.Header
	path string
}

func newUpstreamApp(t *testing.T) *upstreamApp {
	a := &upstreamApp{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.last, a.path = r.Header.Clone(), r.URL.RequestURI()
		a.mu.Unlock()
		_, _ = io.WriteString(w, "app")
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *upstreamApp) lastHeaders() http.Header {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// proxyBootstrap: one listener whose jwt_authn has four providers on one JWKS server (main:
// default locations, 10 min cache; custom: its own header and param, forwarded; short: a 1 s cache;
// down: a JWKS cluster nobody listens on) and rules by path prefix.
const proxyBootstrap = `
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: {prefix: /disabled}
                route: {cluster: app}
                typed_per_filter_config:
                  envoy.filters.http.jwt_authn:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig
                    disabled: true
              - match: {prefix: /named}
                route: {cluster: app}
                typed_per_filter_config:
                  envoy.filters.http.jwt_authn:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig
                    requirement_name: optional
              - match: {prefix: /}
                route: {cluster: app}
          http_filters:
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                main:
                  issuer: https://issuer.example
                  audiences: [bookinfo]
                  remote_jwks:
                    http_uri: {uri: "http://issuer.example/jwks.json", cluster: jwks, timeout: 2s}
                    cache_duration: 600s
                  payload_in_metadata: https://issuer.example
                  forward_payload_header: x-jwt-payload
                  claim_to_headers:
                  - {header_name: x-jwt-sub, claim_name: sub}
                  - {header_name: x-jwt-team, claim_name: ext.team}
                  - {header_name: x-jwt-admin, claim_name: admin}
                custom:
                  issuer: https://issuer.example
                  forward: true
                  from_headers: [{name: x-token, value_prefix: "Token "}]
                  from_params: [tok]
                  remote_jwks:
                    http_uri: {uri: "http://issuer.example/jwks.json", cluster: jwks, timeout: 2s}
                short:
                  issuer: https://issuer.example
                  remote_jwks:
                    http_uri: {uri: "http://issuer.example/jwks.json", cluster: jwks, timeout: 2s}
                    cache_duration: 1s
                down:
                  issuer: https://issuer.example
                  remote_jwks:
                    http_uri: {uri: "http://issuer.example/jwks.json", cluster: dead, timeout: 1s}
              requirement_map:
                optional:
                  requires_any: {requirements: [{provider_name: main}, {allow_missing: {}}]}
              rules:
              - match: {prefix: /optional}
                requirement_name: optional
              - match: {prefix: /custom}
                requires: {provider_name: custom}
              - match: {prefix: /short}
                requires: {provider_name: short}
              - match: {prefix: /down}
                requires: {provider_name: down}
              - match: {prefix: /public}
              - match: {prefix: /}
                requires: {provider_name: main}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
  - name: jwks
    type: STATIC
    connect_timeout: 1s
    load_assignment: {cluster_name: jwks, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
  - name: dead
    type: STATIC
    connect_timeout: 0.5s
    load_assignment: {cluster_name: dead, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]}
`

// stack is a running proxy with its JWKS server and upstream app.
type stack struct {
	url  string
	jwks *jwksServer
	app  *upstreamApp
}

func startStack(t *testing.T, keys ...signingKey) *stack {
	t.Helper()
	testKeys(t)
	if len(keys) == 0 {
		keys = []signingKey{rsKey, esKey, edKey}
	}
	s := &stack{jwks: newJWKSServer(t, keys...), app: newUpstreamApp(t)}
	dead := closedPort(t)
	src := fmt.Sprintf(proxyBootstrap, port(t, s.app.srv.Listener.Addr().String()), port(t, s.jwks.addr), dead)
	js, err := yaml.YAMLToJSON([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &b); err != nil {
		t.Fatal(err)
	}
	p := server.New(server.Options{Logger: slog.New(slog.DiscardHandler), DrainTimeout: time.Second})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	if err := p.ApplyBootstrap(&b); err != nil {
		t.Fatal(err)
	}
	for _, l := range p.Listeners() {
		if l.Name == "ingress" {
			s.url = "http://" + l.Address
		}
	}
	if s.url == "" {
		t.Fatal("listener not running")
	}
	return s
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	_, _ = fmt.Sscan(p, &n)
	return n
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := port(t, l.Addr().String())
	_ = l.Close()
	return p
}

type answer struct {
	code   int
	body   string
	header http.Header
}

var client = &http.Client{Timeout: 10 * time.Second}

// get sends a GET with the given headers ("Name: value").
func (s *stack) get(t *testing.T, path string, headers ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "app.example"
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b), resp.Header}
}

func bearer(tok string) string { return "Authorization: Bearer " + tok }

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 20s: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

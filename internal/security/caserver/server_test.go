package caserver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "istio.io/api/security/v1alpha1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/internal/security/ca"
	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

func TestMain(m *testing.M) { os.Exit(kubeenv.Run(m)) }

// syncBuffer collects log output written from the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testServer struct {
	srv  *Server
	auth *ca.Authority
	logs *syncBuffer
}

// startServer runs a CA server on loopback, stopped when the test ends.
func startServer(t *testing.T, auth *ca.Authority, mod func(*Options)) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	opts := Options{
		Address:        "127.0.0.1:0",
		Authority:      auth,
		Authenticators: []Authenticator{BootstrapTokens{Authority: auth}},
		Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&opts)
	}
	srv, err := Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{srv: srv, auth: auth, logs: logs}
}

func newAuthority(t *testing.T) (*ca.Authority, string) {
	t.Helper()
	dir := t.TempDir()
	a, err := ca.LoadOrCreateDir(dir, ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return a, dir
}

// client dials the server as a proxy does: trusting only the CA root and
// naming istiod.
func (ts *testServer) client(t *testing.T, serverName string) pb.IstioCertificateServiceClient {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ts.auth.Root())
	conn, err := grpc.NewClient(ts.srv.Addr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: serverName})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewIstioCertificateServiceClient(conn)
}

func csrPEM(t *testing.T, uris ...string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	for _, raw := range uris {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func withToken(t *testing.T, token string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func parseChain(t *testing.T, pems []string) []*x509.Certificate {
	t.Helper()
	var chain []*x509.Certificate
	for i, p := range pems {
		block, rest := pem.Decode([]byte(p))
		if block == nil || len(bytes.TrimSpace(rest)) != 0 {
			t.Fatalf("cert_chain[%d] is not one PEM certificate", i)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	return chain
}

func TestCSRWithBootstrapTokenGetsAChainForItsIdentity(t *testing.T) {
	auth, _ := newAuthority(t)
	ts := startServer(t, auth, nil)
	token, err := auth.MintBootstrapToken("default", "sleep", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.client(t, "istiod.istio-system.svc").CreateCertificate(withToken(t, token), &pb.IstioCertificateRequest{
		Csr:              csrPEM(t, "spiffe://cluster.local/ns/default/sa/sleep"),
		ValidityDuration: 3600,
	})
	if err != nil {
		t.Fatal(err)
	}
	chain := parseChain(t, resp.CertChain)
	if len(chain) != 2 || !chain[1].Equal(auth.Root()) {
		t.Fatalf("chain of %d, want leaf then the root", len(chain))
	}
	roots := x509.NewCertPool()
	roots.AddCert(auth.Root())
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/default/sa/sleep" {
		t.Fatalf("URI SANs %v", leaf.URIs)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life != time.Hour+time.Minute {
		t.Fatalf("valid for %s, want the hour asked (plus the minute back-dated)", life)
	}
	logs := ts.logs.String()
	if !strings.Contains(logs, "certificate issued") || !strings.Contains(logs, "spiffe://cluster.local/ns/default/sa/sleep") ||
		!strings.Contains(logs, leaf.SerialNumber.Text(16)) {
		t.Fatalf("issuance not logged with identity and serial:\n%s", logs)
	}
	if strings.Contains(logs, token) || strings.Contains(logs, strings.Split(token, ".")[2]) {
		t.Fatal("the token was logged")
	}
}

func TestValidityDefaultsToADayAndIsCappedAtTheMax(t *testing.T) {
	dir := t.TempDir()
	auth, err := ca.LoadOrCreateDir(dir, ca.Options{MaxTTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, auth, nil)
	c := ts.client(t, "trellis-controlplane")
	token, _ := auth.MintBootstrapToken("default", "sleep", time.Hour)
	for ask, want := range map[int64]time.Duration{0: 24 * time.Hour, 7 * 24 * 3600: 48 * time.Hour} {
		resp, err := c.CreateCertificate(withToken(t, token), &pb.IstioCertificateRequest{
			Csr: csrPEM(t, "spiffe://cluster.local/ns/default/sa/sleep"), ValidityDuration: ask,
		})
		if err != nil {
			t.Fatal(err)
		}
		leaf := parseChain(t, resp.CertChain)[0]
		if got := leaf.NotAfter.Sub(leaf.NotBefore) - time.Minute; got != want {
			t.Errorf("asked %ds: valid %s, want %s", ask, got, want)
		}
	}
}

func TestRequestsAreRefusedWithTheRightCode(t *testing.T) {
	// A CA created two hours ago, so that a token minted then for an hour
	// has expired now.
	dir := t.TempDir()
	past, err := ca.LoadOrCreateDir(dir, ca.Options{Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := past.MintBootstrapToken("default", "sleep", time.Hour)
	auth, err := ca.LoadDir(dir, ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var trustDomain atomic.Value
	trustDomain.Store("cluster.local")
	ts := startServer(t, auth, func(o *Options) { o.TrustDomain = func() string { return trustDomain.Load().(string) } })
	c := ts.client(t, "istiod.istio-system.svc")
	sleep := "spiffe://cluster.local/ns/default/sa/sleep"

	good, err := auth.MintBootstrapToken("default", "sleep", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := newAuthority(t)
	forged, _ := stranger.MintBootstrapToken("default", "sleep", 24*time.Hour)

	for _, tc := range []struct {
		name  string
		token string
		csr   string
		ttl   int64
		want  codes.Code
		msg   string
	}{
		{"another identity", good, csrPEM(t, "spiffe://cluster.local/ns/default/sa/admin"), 0, codes.PermissionDenied, "is for spiffe://cluster.local/ns/default/sa/sleep only"},
		{"another namespace", good, csrPEM(t, "spiffe://cluster.local/ns/kube-system/sa/sleep"), 0, codes.PermissionDenied, "kube-system"},
		{"another trust domain", good, csrPEM(t, "spiffe://evil.example/ns/default/sa/sleep"), 0, codes.PermissionDenied, "evil.example"},
		{"two SANs", good, csrPEM(t, sleep, "spiffe://cluster.local/ns/default/sa/admin"), 0, codes.PermissionDenied, "sa/admin"},
		{"no SAN", good, csrPEM(t), 0, codes.PermissionDenied, "asks for []"},
		{"expired token", expired, csrPEM(t, sleep), 0, codes.Unauthenticated, "expired"},
		{"forged token", forged, csrPEM(t, sleep), 0, codes.Unauthenticated, "signature"},
		{"garbage token", "not-a-jwt", csrPEM(t, sleep), 0, codes.Unauthenticated, "not a compact JWT"},
		{"no token", "", csrPEM(t, sleep), 0, codes.Unauthenticated, "no bearer token"},
		{"malformed CSR", good, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", 0, codes.InvalidArgument, "csr"},
		{"not PEM", good, "hello", 0, codes.InvalidArgument, "PEM"},
		{"negative validity", good, csrPEM(t, sleep), -5, codes.InvalidArgument, "negative"},
	} {
		_, err := c.CreateCertificate(withToken(t, tc.token), &pb.IstioCertificateRequest{Csr: tc.csr, ValidityDuration: tc.ttl})
		st, _ := status.FromError(err)
		if st.Code() != tc.want || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%s: got %v %q, want %v mentioning %q", tc.name, st.Code(), st.Message(), tc.want, tc.msg)
		}
	}

	// The mesh's trust domain is read per request: after a MeshConfig
	// change, identities in the new domain are issued and the old refused.
	trustDomain.Store("corp.example")
	if _, err := c.CreateCertificate(withToken(t, good), &pb.IstioCertificateRequest{Csr: csrPEM(t, "spiffe://corp.example/ns/default/sa/sleep")}); err != nil {
		t.Fatalf("new trust domain: %v", err)
	}
	if _, err := c.CreateCertificate(withToken(t, good), &pb.IstioCertificateRequest{Csr: csrPEM(t, sleep)}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("old trust domain: %v", err)
	}
	if logs := ts.logs.String(); strings.Contains(logs, strings.Split(good, ".")[2]) || strings.Contains(logs, strings.Split(forged, ".")[2]) {
		t.Fatal("a token was logged")
	}
}

func TestServingCertificateNamesIstiodAndIsRenewedAtHalfLife(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	auth, err := ca.LoadOrCreateDir(t.TempDir(), ca.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, auth, func(o *Options) { o.Now = clock })
	addr := ts.srv.Addr().String()
	roots := x509.NewCertPool()
	roots.AddCert(auth.Root())
	handshake := func(name string) *x509.Certificate {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: name, Time: clock})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	first := handshake("istiod.istio-system.svc")
	handshake("trellis-controlplane")
	handshake("127.0.0.1")
	if _, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "other.example"}); err == nil {
		t.Fatal("serving certificate accepted for a name it does not carry")
	}

	// An existing gRPC connection keeps working across the renewal.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{RootCAs: roots, ServerName: "istiod.istio-system.svc", Time: clock})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := pb.NewIstioCertificateServiceClient(conn)
	token, _ := auth.MintBootstrapToken("default", "sleep", 24*time.Hour)
	ask := func() error {
		_, err := c.CreateCertificate(withToken(t, token), &pb.IstioCertificateRequest{Csr: csrPEM(t, "spiffe://cluster.local/ns/default/sa/sleep")})
		return err
	}
	if err := ask(); err != nil {
		t.Fatal(err)
	}
	offset.Store(int64(13 * time.Hour))
	renewed := handshake("istiod.istio-system.svc")
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("serving certificate not renewed past half its lifetime")
	}
	if again := handshake("istiod.istio-system.svc"); again.SerialNumber.Cmp(renewed.SerialNumber) != 0 {
		t.Fatal("serving certificate renewed on every handshake")
	}
	if err := ask(); err != nil {
		t.Fatalf("existing connection after renewal: %v", err)
	}
	if !strings.Contains(ts.logs.String(), "serving certificate renewed") {
		t.Fatal("renewal not logged")
	}
}

func TestListenRefusesMissingAuthorityOrAuthenticators(t *testing.T) {
	auth, _ := newAuthority(t)
	if _, err := Listen(Options{Address: "127.0.0.1:0", Authority: auth}); err == nil {
		t.Error("listened without an authenticator")
	}
	if _, err := Listen(Options{Address: "127.0.0.1:0", Authenticators: []Authenticator{BootstrapTokens{auth}}}); err == nil {
		t.Error("listened without an authority")
	}
}

func TestAnAuthenticatorThatCannotDecideIsUnavailableNotUnauthenticated(t *testing.T) {
	auth, _ := newAuthority(t)
	ts := startServer(t, auth, func(o *Options) { o.Authenticators = []Authenticator{downAuthenticator{}} })
	_, err := ts.client(t, "istiod.istio-system.svc").CreateCertificate(withToken(t, "x"), &pb.IstioCertificateRequest{Csr: csrPEM(t, "spiffe://cluster.local/ns/a/sa/b")})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want Unavailable so that the proxy retries", err)
	}
}

type downAuthenticator struct{}

func (downAuthenticator) Authenticate(context.Context, string) (Caller, error) {
	return Caller{}, errors.Join(ErrUnavailable, errors.New("connection refused"))
}

func TestShutdownReleasesThePortOfAServerThatNeverServed(t *testing.T) {
	auth, _ := newAuthority(t)
	srv, err := Listen(Options{Address: "127.0.0.1:0", Authority: auth, Authenticators: []Authenticator{BootstrapTokens{auth}}})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port still held after Shutdown: %v", err)
	}
	lis.Close()
}

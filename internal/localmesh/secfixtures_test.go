package localmesh_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fixtures of the security matrix: the app, the external authorizer, JWKS and
// JWTs, and certificates from the mesh CA and from elsewhere.

// serveApp starts the server workload's app: it echoes the request it
// received as JSON, marked so tests can tell its answers from the proxy's.
func serveApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Served-By", "security-app")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(appRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header})
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// authService is the ext_authz HTTP service: the session "alice-session" is
// alice with roles admin and buyer; any other is refused with 401.
type authService struct {
	port  string
	srv   *http.Server
	calls atomic.Int64

	mu           sync.Mutex
	path, method string
}

func startAuthService(t *testing.T) *authService {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &authService{}
	_, a.port, _ = net.SplitHostPort(ln.Addr().String())
	a.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.calls.Add(1)
		a.mu.Lock()
		a.path, a.method = r.URL.Path, r.Method
		a.mu.Unlock()
		if r.Header.Get("X-Session") == "alice-session" {
			w.Header().Set("X-User-Id", "alice")
			w.Header().Set("X-User-Roles", "admin,buyer")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Auth-Reason", "unknown-session")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"unknown session"}`)
	})}
	go a.srv.Serve(ln)
	t.Cleanup(a.stop)
	return a
}

func (a *authService) stop() { a.srv.Close() }

func (a *authService) lastPath() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.path
}

func (a *authService) lastMethod() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.method
}

// jwksServer serves a JWKS that the test can change, as an issuer rotating keys.
type jwksServer struct {
	mu      sync.Mutex
	keys    map[string]*ecdsa.PrivateKey
	fetches atomic.Int64
}

func (s *jwksServer) set(keys map[string]*ecdsa.PrivateKey) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

// start serves the key set and returns its URL.
func (s *jwksServer) start(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		keys := s.keys
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, jwksOf(t, keys))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/jwks.json"
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// jwksOf is the JSON Web Key Set of the keys' public halves, by kid.
func jwksOf(t *testing.T, keys map[string]*ecdsa.PrivateKey) string {
	type jwk struct {
		Kty string `json:"kty"`
		Crv string `json:"crv"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
		X   string `json:"x"`
		Y   string `json:"y"`
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	for kid, k := range keys {
		pub, err := k.PublicKey.Bytes() // 0x04 || X || Y
		if err != nil {
			t.Error(err)
			return ""
		}
		set.Keys = append(set.Keys, jwk{Kty: "EC", Crv: "P-256", Kid: kid, Alg: "ES256", Use: "sig",
			X: base64.RawURLEncoding.EncodeToString(pub[1:33]), Y: base64.RawURLEncoding.EncodeToString(pub[33:])})
	}
	out, _ := json.Marshal(set)
	return string(out)
}

func jwtSegment(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// signES256 makes a compact JWS (RFC 7515) signed with key.
func signES256(t *testing.T, key *ecdsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	signed := jwtSegment(t, map[string]string{"alg": "ES256", "kid": kid, "typ": "JWT"}) + "." + jwtSegment(t, claims)
	digest := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// unsignedJWT is the classic attack: alg none and no signature.
func unsignedJWT(t *testing.T, claims map[string]any) string {
	return jwtSegment(t, map[string]string{"alg": "none", "typ": "JWT"}) + "." + jwtSegment(t, claims) + "."
}

// meshCert is a client certificate with the URI SAN uri, signed by the
// mesh's own CA (its root and key as the control plane keeps them).
func (m *secMesh) meshCert(t *testing.T, uri string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(m.caDir, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(m.caDir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(caCert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leafCert(t, root, caCert.PrivateKey, uri, notBefore, notAfter)
}

// foreignCert is a well-formed workload certificate for uri from a root the
// mesh does not trust, with the same subject as the mesh's root.
func foreignCert(t *testing.T, uri string) tls.Certificate {
	t.Helper()
	key := newECKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leafCert(t, root, key, uri, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
}

func leafCert(t *testing.T, issuer *x509.Certificate, issuerKey any, uri string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	key := newECKey(t)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// Package catest runs an in-process Istio CA for tests: IstioCertificateService/CreateCertificate
// over gRPC with TLS, a generated root, bearer-token checking and a configurable certificate
// lifetime. It stands in for the control plane's CA so the proxy's agent is tested against the real
// protocol; it is for tests only.
package catest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	securityv1alpha1 "istio.io/api/security/v1alpha1"
)

// ServerName is the DNS SAN of the CA's serving certificate (the agent's default).
const ServerName = "istiod.istio-system.svc"

// CA is a running test CA.
type CA struct {
	securityv1alpha1.UnimplementedIstioCertificateServiceServer

	// Addr is the gRPC address; RootPEM the root certificate.
	Addr    string
	RootPEM []byte
	Root    *x509.Certificate
	key     *ecdsa.PrivateKey

	// Token, when set, is the bearer token every request must carry.
	Token string

	mu  sync.Mutex
	ttl time.Duration
	// Fail, while set, makes requests fail with Unavailable.
	Fail atomic.Bool

	serial   atomic.Int64
	requests atomic.Int64
	issued   []*x509.Certificate
}

// Start runs a CA on 127.0.0.1:0 until the test ends. Certificates live ttl.
func Start(t testing.TB, ttl time.Duration) *CA {
	t.Helper()
	ca := &CA{ttl: ttl}
	ca.key = mustKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"cluster.local"}, CommonName: "test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ca.key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	ca.Root, _ = x509.ParseCertificate(der)
	ca.RootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	ca.serial.Store(100)

	skey := mustKey(t)
	sder, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		DNSNames:     []string{ServerName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca.Root, &skey.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{sder}, PrivateKey: skey}},
		MinVersion:   tls.VersionTLS12,
	})))
	securityv1alpha1.RegisterIstioCertificateServiceServer(srv, ca)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	ca.Addr = ln.Addr().String()
	return ca
}

// SetTTL changes the lifetime of certificates issued from now on.
func (ca *CA) SetTTL(d time.Duration) {
	ca.mu.Lock()
	ca.ttl = d
	ca.mu.Unlock()
}

// Requests counts CreateCertificate calls that reached the CA.
func (ca *CA) Requests() int64 { return ca.requests.Load() }

// Issued returns the certificates issued so far, oldest first.
func (ca *CA) Issued() []*x509.Certificate {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return append([]*x509.Certificate(nil), ca.issued...)
}

// CreateCertificate implements the Istio CA API: it signs the CSR's single URI SAN.
func (ca *CA) CreateCertificate(ctx context.Context, req *securityv1alpha1.IstioCertificateRequest) (*securityv1alpha1.IstioCertificateResponse, error) {
	ca.requests.Add(1)
	if ca.Fail.Load() {
		return nil, status.Error(codes.Unavailable, "test CA told to fail")
	}
	if ca.Token != "" {
		md, _ := metadata.FromIncomingContext(ctx)
		if a := md.Get("authorization"); len(a) != 1 || a[0] != "Bearer "+ca.Token {
			return nil, status.Error(codes.Unauthenticated, "bad token")
		}
	}
	blk, _ := pem.Decode([]byte(req.GetCsr()))
	if blk == nil {
		return nil, status.Error(codes.InvalidArgument, "no CSR")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil || csr.CheckSignature() != nil || len(csr.URIs) != 1 {
		return nil, status.Error(codes.InvalidArgument, "bad CSR")
	}
	ca.mu.Lock()
	ttl := ca.ttl
	ca.mu.Unlock()
	if v := req.GetValidityDuration(); v > 0 && time.Duration(v)*time.Second < ttl {
		ttl = time.Duration(v) * time.Second
	}
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		URIs:         csr.URIs,
		NotBefore:    now.Add(-time.Second),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca.Root, csr.PublicKey, ca.key)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	leaf, _ := x509.ParseCertificate(der)
	ca.mu.Lock()
	ca.issued = append(ca.issued, leaf)
	ca.mu.Unlock()
	return &securityv1alpha1.IstioCertificateResponse{CertChain: []string{
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(ca.RootPEM),
	}}, nil
}

// HasURI reports whether c carries the URI SAN u.
func HasURI(c *x509.Certificate, u string) bool {
	for _, x := range c.URIs {
		if strings.EqualFold(x.String(), u) {
			return true
		}
	}
	return false
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// IssueLeaf signs a client/server certificate for sans (URIs when they contain "://", else DNS
// names) valid from notBefore to notAfter, for peers that are not agents (and for expired ones).
func (ca *CA) IssueLeaf(t testing.TB, notBefore, notAfter time.Time, sans ...string) tls.Certificate {
	t.Helper()
	key := mustKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, s := range sans {
		if u, err := url.Parse(s); err == nil && strings.Contains(s, "://") {
			tmpl.URIs = append(tmpl.URIs, u)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Root, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// Pool is a cert pool holding the root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Root)
	return p
}

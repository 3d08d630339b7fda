package controlplane

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "istio.io/api/security/v1alpha1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// startWithCA runs Run with a CA on an ephemeral port until the test ends.
func startWithCA(t *testing.T, configDir, caDir string) Ready {
	t.Helper()
	return startRun(t, Options{ConfigDir: configDir, CAAddress: "127.0.0.1:0", CADir: caDir})
}

// startRun runs Run on ephemeral ports until the test ends.
func startRun(t *testing.T, opts Options) Ready {
	t.Helper()
	r, _ := startRunStoppable(t, opts)
	return r
}

// startRunStoppable is startRun with a stop that ends Run before the test
// does (and is a no-op after). opts.Logger, if set, is kept.
func startRunStoppable(t *testing.T, opts Options) (Ready, func()) {
	t.Helper()
	opts.XDSAddress = "127.0.0.1:0"
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan Ready, 1)
	done := make(chan error, 1)
	go func() {
		opts.Ready = func(r Ready) { ready <- r }
		done <- Run(ctx, opts)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	within := 5 * time.Second
	if opts.Kubernetes != nil {
		within = time.Minute // informers sync first
	}
	select {
	case r := <-ready:
		return r, stop
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(within):
		t.Fatal("control plane not ready")
	}
	return Ready{}, stop
}

// requestCert does what a proxy's identity agent does: a CSR for id, the
// bootstrap token, TLS trusting only the CA root.
func requestCert(t *testing.T, r Ready, token, id string) ([]*x509.Certificate, error) {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(r.CA.RootPEM()) {
		t.Fatal("RootPEM holds no certificate")
	}
	conn, err := grpc.NewClient(r.CA.Addr.String(), grpc.WithTransportCredentials(
		credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "istiod.istio-system.svc"})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	resp, err := pb.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
	})
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	for _, p := range resp.CertChain {
		block, _ := pem.Decode([]byte(p))
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	return chain, nil
}

func TestControlPlaneCAIssuesIdentitiesInTheMeshTrustDomainAndKeepsItsRoot(t *testing.T) {
	configDir, caDir := t.TempDir(), filepath.Join(t.TempDir(), "ca")
	writeFile(t, filepath.Join(configDir, "mesh.yaml"), "trustDomain: corp.example\n")
	r := startWithCA(t, configDir, caDir)
	if r.CA == nil {
		t.Fatal("Ready.CA is nil with a CA address")
	}
	token, err := r.CA.MintBootstrapToken("default", "reviews", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The mesh config is applied shortly after Ready; poll until the
	// trust domain is the mesh's.
	want := "spiffe://corp.example/ns/default/sa/reviews"
	deadline := time.Now().Add(10 * time.Second)
	var chain []*x509.Certificate
	for {
		chain, err = requestCert(t, r, token, want)
		if err == nil || status.Code(err) != codes.PermissionDenied || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	if got := chain[0].URIs[0].String(); got != want {
		t.Fatalf("issued %s, want %s", got, want)
	}
	root := chain[len(chain)-1]
	if !bytes.Equal(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}), r.CA.RootPEM()) {
		t.Fatal("the chain does not end with RootPEM")
	}
	if _, err := requestCert(t, r, token, "spiffe://cluster.local/ns/default/sa/reviews"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("identity outside the mesh's trust domain: %v", err)
	}

	// A second control plane on the same directory (a restart) serves the
	// same root, and tokens minted by the first still work.
	again := startWithCA(t, configDir, caDir)
	if !bytes.Equal(again.CA.RootPEM(), r.CA.RootPEM()) {
		t.Fatal("restart created a new root")
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, err = requestCert(t, again, token, want)
		if err == nil || status.Code(err) != codes.PermissionDenied || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

func TestControlPlaneWithoutCAAddressHasNoCA(t *testing.T) {
	if r := startRun(t, Options{ConfigDir: t.TempDir(), CADir: t.TempDir()}); r.CA != nil {
		t.Fatalf("Ready.CA = %+v without a CA address", r.CA)
	}
}

func TestRunRefusesACAWithoutAPlaceForItsRoot(t *testing.T) {
	err := Run(context.Background(), Options{ConfigDir: t.TempDir(), XDSAddress: "127.0.0.1:0", CAAddress: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "CADir") {
		t.Fatalf("err = %v, want one naming CADir", err)
	}
}

package identity_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/identity/catest"
)

// syncBuffer collects log output written from the agent's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runAgent(t *testing.T, cfg identity.Config) *identity.Agent {
	t.Helper()
	a, err := identity.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return a
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAgentGetsCertificateWithSPIFFEIDAndRootOverTokenAuthenticatedTLS(t *testing.T) {
	ca := catest.Start(t, time.Hour)
	ca.Token = "s3cret-token-value"
	var logs syncBuffer
	a := runAgent(t, identity.Config{
		CAAddress: ca.Addr, RootCert: ca.RootPEM,
		Token:     func() (string, error) { return ca.Token + "\n", nil },
		Namespace: "shop", ServiceAccount: "cart",
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	st := a.Store()
	eventually(t, "the first certificate", st.Ready)
	w := st.Workload()
	if got, want := a.SPIFFEID(), "spiffe://cluster.local/ns/shop/sa/cart"; got != want {
		t.Fatalf("SPIFFE ID %q, want %q", got, want)
	}
	if !catest.HasURI(w.Cert.Leaf, a.SPIFFEID()) {
		t.Fatalf("leaf URIs %v", w.Cert.Leaf.URIs)
	}
	if len(w.Cert.Certificate) != 1 {
		t.Errorf("the workload chain has %d certificates, want the leaf only (the root is ROOTCA)", len(w.Cert.Certificate))
	}
	if _, err := w.Cert.Leaf.Verify(x509.VerifyOptions{Roots: st.Roots().Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the leaf does not verify against ROOTCA: %v", err)
	}
	if c, err := st.Certificate(identity.WorkloadSecret); err != nil || c.Leaf != w.Cert.Leaf {
		t.Fatalf("Certificate(default) = %v, %v", c, err)
	}
	if _, err := st.TrustBundle(identity.RootSecret); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Certificate("kubernetes://other"); err == nil {
		t.Fatal("an unknown secret name was served")
	}
	if strings.Contains(logs.String(), ca.Token) || strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Fatalf("the log leaks the token or a key:\n%s", logs.String())
	}
}

func TestAgentRotatesAtHalfLifetimeWithAFreshKey(t *testing.T) {
	ca := catest.Start(t, 2*time.Second)
	a := runAgent(t, identity.Config{CAAddress: ca.Addr, RootCert: ca.RootPEM, Namespace: "default", MinRetry: 50 * time.Millisecond})
	st := a.Store()
	eventually(t, "the first certificate", st.Ready)
	first := st.Workload()
	eventually(t, "a rotation", func() bool { return st.Workload() != first })
	second := st.Workload()
	if second.Cert.Leaf.SerialNumber.Cmp(first.Cert.Leaf.SerialNumber) == 0 {
		t.Fatal("the rotated certificate has the same serial")
	}
	// Half of a 2s lifetime: the rotation must come before the first certificate expires.
	if second.Updated.After(first.Cert.Leaf.NotAfter) {
		t.Fatalf("rotated at %v, after the old certificate expired at %v", second.Updated, first.Cert.Leaf.NotAfter)
	}
	if first.Cert.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(second.Cert.Leaf.PublicKey) {
		t.Fatal("the rotation reused the key")
	}
}

func TestAgentRetriesWithBackoffUntilTheCAAnswers(t *testing.T) {
	ca := catest.Start(t, time.Hour)
	ca.Fail.Store(true)
	a := runAgent(t, identity.Config{CAAddress: ca.Addr, RootCert: ca.RootPEM, Namespace: "default",
		MinRetry: 20 * time.Millisecond, MaxRetry: 100 * time.Millisecond})
	eventually(t, "three failed requests", func() bool { return ca.Requests() >= 3 })
	if a.Store().Ready() {
		t.Fatal("ready without a certificate")
	}
	if _, err := a.Store().Certificate(identity.WorkloadSecret); err == nil {
		t.Fatal("a certificate was served before any was issued")
	}
	ca.Fail.Store(false)
	eventually(t, "the certificate once the CA answers", a.Store().Ready)
}

func TestAgentRefusesACAItDoesNotTrust(t *testing.T) {
	ca := catest.Start(t, time.Hour)
	other := catest.Start(t, time.Hour)
	a := runAgent(t, identity.Config{CAAddress: ca.Addr, RootCert: other.RootPEM, Namespace: "default", MinRetry: 20 * time.Millisecond})
	time.Sleep(300 * time.Millisecond) // a negative: give it a few attempts
	if a.Store().Ready() {
		t.Fatal("got a certificate from a CA whose TLS certificate does not chain to --ca-root-cert")
	}
	if ca.Requests() != 0 {
		t.Fatalf("%d requests reached the untrusted CA", ca.Requests())
	}
}

func TestAgentNeedsNamespaceAndRoot(t *testing.T) {
	if _, err := identity.New(identity.Config{CAAddress: "x:1", RootCert: []byte("junk"), Namespace: "a"}); err == nil {
		t.Error("accepted a root that is not PEM")
	}
	ca := catest.Start(t, time.Hour)
	if _, err := identity.New(identity.Config{CAAddress: "x:1", RootCert: ca.RootPEM}); err == nil {
		t.Error("accepted no namespace")
	}
}

package ca

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"net"
	"testing"
	"time"
)

func newDirAuthority(t *testing.T, opts Options) *Authority {
	t.Helper()
	a, err := LoadOrCreateDir(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestSignIssuesTheCSRIdentityForADayChainedToTheRoot(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	a := newDirAuthority(t, Options{Now: func() time.Time { return now }})
	chain, err := a.Sign(newCSR(t, "spiffe://cluster.local/ns/default/sa/sleep"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 {
		t.Fatalf("chain of %d, want leaf and root", len(chain))
	}
	roots := x509.NewCertPool()
	roots.AddCert(a.Root())
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/default/sa/sleep" {
		t.Fatalf("URI SANs %v", leaf.URIs)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Fatalf("unexpected SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA {
		t.Fatal("workload certificate is a CA")
	}
	if want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment; leaf.KeyUsage != want {
		t.Fatalf("key usage %v, want %v", leaf.KeyUsage, want)
	}
	if got := leaf.ExtKeyUsage; len(got) != 2 || got[0] != x509.ExtKeyUsageServerAuth || got[1] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("extended key usage %v", got)
	}
	if !leaf.NotBefore.Equal(now.Add(-time.Minute)) || !leaf.NotAfter.Equal(now.Add(24*time.Hour)) {
		t.Fatalf("valid %s to %s, want a minute before %s for 24h", leaf.NotBefore, leaf.NotAfter, now)
	}
	if a.Root().Subject.String() != "O=cluster.local" || !a.Root().IsCA {
		t.Fatalf("root subject %q", a.Root().Subject)
	}
	if d := a.Root().NotAfter.Sub(now); d < 3649*24*time.Hour {
		t.Fatalf("root valid for %s, want ten years", d)
	}
}

func TestSignHonoursTheRequestedValidityUpToTheMax(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	a := newDirAuthority(t, Options{MaxTTL: 48 * time.Hour, Now: func() time.Time { return now }})
	for _, tc := range []struct {
		ask, want time.Duration
	}{
		{time.Hour, time.Hour},
		{0, 24 * time.Hour},
		{-time.Hour, 24 * time.Hour},
		{100 * time.Hour, 48 * time.Hour},
	} {
		chain, err := a.Sign(newCSR(t, "spiffe://cluster.local/ns/a/sa/b"), tc.ask)
		if err != nil {
			t.Fatal(err)
		}
		if got := chain[0].NotAfter.Sub(now); got != tc.want {
			t.Errorf("asked %s: valid for %s, want %s", tc.ask, got, tc.want)
		}
	}
}

func TestSignRefusesCSRsThatAreNotOneSPIFFEIdentity(t *testing.T) {
	a := newDirAuthority(t, Options{})
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tampered := newCSR(t, "spiffe://cluster.local/ns/default/sa/sleep")
	tampered[len(tampered)-5] ^= 0xff
	for name, csr := range map[string][]byte{
		"garbage":        []byte("not a CSR"),
		"bad signature":  tampered,
		"no SAN":         newCSR(t),
		"two URI SANs":   newCSR(t, "spiffe://cluster.local/ns/default/sa/sleep", "spiffe://cluster.local/ns/default/sa/admin"),
		"not SPIFFE":     newCSR(t, "https://cluster.local/ns/default/sa/sleep"),
		"not Istio form": newCSR(t, "spiffe://cluster.local/workload/sleep"),
		"a DNS SAN too": csrFor(t, mustKey(t), &x509.CertificateRequest{
			URIs: parseURLs(t, "spiffe://cluster.local/ns/default/sa/sleep"), DNSNames: []string{"evil.example"},
		}),
		"an IP SAN too": csrFor(t, mustKey(t), &x509.CertificateRequest{
			URIs: parseURLs(t, "spiffe://cluster.local/ns/default/sa/sleep"), IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)},
		}),
		"RSA 1024": csrFor(t, weak, &x509.CertificateRequest{URIs: parseURLs(t, "spiffe://cluster.local/ns/default/sa/sleep")}),
	} {
		chain, err := a.Sign(csr, 0)
		if !errors.Is(err, ErrInvalidCSR) {
			t.Errorf("%s: got %d certificates and error %v, want ErrInvalidCSR", name, len(chain), err)
		}
	}
}

func TestSignNeverOutlivesTheSigningCertificate(t *testing.T) {
	now := time.Now()
	a := newDirAuthority(t, Options{MaxTTL: 20 * 365 * 24 * time.Hour, Now: func() time.Time { return now }})
	chain, err := a.Sign(newCSR(t, "spiffe://cluster.local/ns/a/sa/b"), 15*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !chain[0].NotAfter.Equal(a.Root().NotAfter) {
		t.Fatalf("leaf expires %s, root %s", chain[0].NotAfter, a.Root().NotAfter)
	}
}

func TestIssueServingCertifiesHostNamesAndIPs(t *testing.T) {
	a := newDirAuthority(t, Options{})
	tc, err := a.IssueServing([]string{"istiod.istio-system.svc", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(a.Root())
	for _, host := range []string{"istiod.istio-system.svc", "127.0.0.1"} {
		if _, err := tc.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	if _, err := tc.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.example"}); err == nil {
		t.Error("serving certificate valid for a host it was not issued for")
	}
}

func BenchmarkSign(b *testing.B) {
	a, err := LoadOrCreateDir(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	csr := newCSR(b, "spiffe://cluster.local/ns/default/sa/sleep")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Sign(csr, 0); err != nil {
			b.Fatal(err)
		}
	}
}

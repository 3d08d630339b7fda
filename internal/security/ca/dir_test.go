package ca

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRestartReusesThePersistedRootAndTokenKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	first, err := LoadOrCreateDir(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	token, err := first.MintBootstrapToken("default", "sleep", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Fatalf("%s mode %v, want 0600", CAKeyFile, mode)
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v (%v), want 0700", info.Mode().Perm(), err)
	}

	second, err := LoadOrCreateDir(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.RootPEM(), second.RootPEM()) {
		t.Fatal("second load created a new root")
	}
	// Certificates the restarted CA issues chain to the root proxies already trust,
	// and tokens minted before the restart still work.
	chain, err := second.Sign(newCSR(t, "spiffe://cluster.local/ns/default/sa/sleep"), 0)
	if err != nil {
		t.Fatal(err)
	}
	verifyChain(t, chain, first.Root())
	if ns, sa, err := second.VerifyBootstrapToken(token); err != nil || ns != "default" || sa != "sleep" {
		t.Fatalf("token from before the restart: %q %q %v", ns, sa, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if name := e.Name(); name != CACertFile && name != CAKeyFile && name != lockFile {
			t.Errorf("left behind %s", name)
		}
	}
}

func TestConcurrentFirstStartsAgreeOnOneRoot(t *testing.T) {
	dir := t.TempDir()
	const n = 6
	roots := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a, err := LoadOrCreateDir(dir, Options{})
			if err == nil {
				roots[i] = a.RootPEM()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !bytes.Equal(roots[i], roots[0]) {
			t.Fatalf("start %d got a different root", i)
		}
	}
}

func TestLoadDirSaysWhenThereIsNoCA(t *testing.T) {
	_, err := LoadDir(t.TempDir(), Options{})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want fs.ErrNotExist", err)
	}
}

func TestLoadRefusesACertificateWithoutItsKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreateDir(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	// Never silently replace a root that proxies may trust.
	if _, err := LoadOrCreateDir(dir, Options{}); err == nil {
		t.Fatal("loaded a CA without its key")
	}
}

func TestLoadRefusesAKeyOfAnotherCertificate(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	for _, d := range []string{dir, other} {
		if _, err := LoadOrCreateDir(d, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	key, err := os.ReadFile(filepath.Join(other, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string][]byte{CAKeyFile: key})
	if _, err := LoadDir(dir, Options{}); err == nil {
		t.Fatal("loaded a key that does not match the certificate")
	}
}

func TestACrashBetweenKeyAndCertificateIsRecoveredByTheNextStart(t *testing.T) {
	dir := t.TempDir()
	// What a crash after writing the key leaves: a key and no certificate.
	writeFiles(t, dir, map[string][]byte{CAKeyFile: newTestRoot(t, "stale").keyPEM(t)})
	a, err := LoadOrCreateDir(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadDir(dir, Options{})
	if err != nil || !bytes.Equal(a.RootPEM(), b.RootPEM()) {
		t.Fatalf("reload: %v", err)
	}
}

func TestCACertsIntermediateIssuesLeavesThatChainToTheUserRoot(t *testing.T) {
	root := newTestRoot(t, "Example Root CA")
	mid := newTestCA(t, "Example Intermediate", &root, true)
	inter := newTestCA(t, "Trellis cluster CA", &mid, true)
	for name, chainFile := range map[string][]byte{
		// Istio's tools write ca-cert then every intermediate, then the root.
		"chain with ca-cert and root": append(append(encodeCerts(inter.cert), encodeCerts(mid.cert)...), encodeCerts(root.cert)...),
		"chain of intermediates only": encodeCerts(mid.cert),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, map[string][]byte{
				CACertFile:    encodeCerts(inter.cert),
				CAKeyFile:     inter.keyPEM(t),
				RootCertFile:  encodeCerts(root.cert),
				CertChainFile: chainFile,
			})
			a, err := LoadCACerts(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.RootPEM(), encodeCerts(root.cert)) {
				t.Fatal("RootPEM is not the user's root")
			}
			chain, err := a.Sign(newCSR(t, "spiffe://cluster.local/ns/default/sa/sleep"), 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(chain) != 4 || !chain[1].Equal(inter.cert) || !chain[2].Equal(mid.cert) {
				t.Fatalf("chain of %d, want leaf, ca-cert, intermediate, root", len(chain))
			}
			verifyChain(t, chain, root.cert)
		})
	}
}

func TestCACertsWithoutChainFileAcceptsACertSignedByTheRoot(t *testing.T) {
	root := newTestRoot(t, "Example Root CA")
	inter := newTestCA(t, "Trellis cluster CA", &root, true)
	dir := t.TempDir()
	writeFiles(t, dir, map[string][]byte{
		CACertFile: encodeCerts(inter.cert), CAKeyFile: inter.keyPEM(t), RootCertFile: encodeCerts(root.cert),
	})
	a, err := LoadCACerts(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.Sign(newCSR(t, "spiffe://cluster.local/ns/a/sa/b"), 0)
	if err != nil {
		t.Fatal(err)
	}
	verifyChain(t, chain, root.cert)
}

func TestCACertsRefusesWhatCannotIssueTrustedCertificates(t *testing.T) {
	root := newTestRoot(t, "Example Root CA")
	inter := newTestCA(t, "Trellis cluster CA", &root, true)
	notCA := newTestCA(t, "a server", &root, false)
	strangerRoot := newTestRoot(t, "Someone else's root")
	stranger := newTestCA(t, "Someone else's CA", &strangerRoot, true)
	for _, tc := range []struct {
		name  string
		files map[string][]byte
		want  string
	}{
		{"key of another certificate", map[string][]byte{CACertFile: encodeCerts(inter.cert), CAKeyFile: stranger.keyPEM(t), RootCertFile: encodeCerts(root.cert)}, "does not match"},
		{"not a CA", map[string][]byte{CACertFile: encodeCerts(notCA.cert), CAKeyFile: notCA.keyPEM(t), RootCertFile: encodeCerts(root.cert)}, "not a CA"},
		{"does not chain to the root", map[string][]byte{CACertFile: encodeCerts(stranger.cert), CAKeyFile: stranger.keyPEM(t), RootCertFile: encodeCerts(root.cert)}, "does not chain to root-cert.pem"},
		{"no root", map[string][]byte{CACertFile: encodeCerts(inter.cert), CAKeyFile: inter.keyPEM(t)}, "root-cert.pem"},
		{"garbage certificate", map[string][]byte{CACertFile: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), CAKeyFile: inter.keyPEM(t), RootCertFile: encodeCerts(root.cert)}, "ca-cert.pem: certificate 0"},
	} {
		dir := t.TempDir()
		writeFiles(t, dir, tc.files)
		_, err := LoadCACerts(dir, Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}

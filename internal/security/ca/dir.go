package ca

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// lockFile serialises first starts that share a directory (a control plane
// and `trellis token create`, say), so that exactly one root is created.
const lockFile = ".lock"

// LoadOrCreateDir returns the Authority whose self-signed root is kept in
// dir as ca-cert.pem and ca-key.pem, creating the directory (mode 0700) and
// a fresh root on first use. The key file is written with mode 0600, and
// each file appears whole or not at all (written aside, then renamed).
func LoadOrCreateDir(dir string, opts Options) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("CA directory: %w", err)
	}
	unlock, err := lockDir(filepath.Join(dir, lockFile))
	if err != nil {
		return nil, fmt.Errorf("CA directory %s: lock: %w", dir, err)
	}
	defer unlock()

	a, err := LoadDir(dir, opts)
	if !errors.Is(err, fs.ErrNotExist) {
		return a, err
	}
	b, err := newSelfSignedRoot(opts.withDefaults().Now())
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(b.signer)
	if err != nil {
		return nil, err
	}
	// The key first: the certificate's presence says the pair is complete.
	// A crash in between leaves a key alone, which the next start replaces.
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("CA directory: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CACertFile), encodeCerts(b.cert), 0o644); err != nil {
		return nil, fmt.Errorf("CA directory: %w", err)
	}
	return newAuthority(b, "directory "+dir, opts)
}

// LoadDir returns the Authority whose self-signed root is in dir. The
// error wraps fs.ErrNotExist when no root has been created there.
func LoadDir(dir string, opts Options) (*Authority, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("CA directory: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		// A certificate without its key cannot be recovered by creating a
		// new root silently: proxies may trust the old one.
		return nil, fmt.Errorf("CA directory %s: %s exists but %s does not", dir, CACertFile, CAKeyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("CA directory: %w", err)
	}
	b, err := selfSignedFromPEM(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA directory %s: %w", dir, err)
	}
	return newAuthority(b, "directory "+dir, opts)
}

// LoadCACerts returns the Authority of a user-provided CA in Istio's cacerts
// layout: ca-cert.pem (the signing certificate, usually an intermediate),
// ca-key.pem, root-cert.pem and cert-chain.pem (optional when ca-cert.pem is
// signed by the root directly).
func LoadCACerts(dir string, opts Options) (*Authority, error) {
	files := map[string][]byte{}
	for _, name := range []string{CACertFile, CAKeyFile, RootCertFile, CertChainFile} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !(name == CertChainFile && errors.Is(err, fs.ErrNotExist)) {
			return nil, fmt.Errorf("cacerts: %w", err)
		}
		files[name] = data
	}
	b, err := caCertsFromPEM(files)
	if err != nil {
		return nil, fmt.Errorf("cacerts %s: %w", dir, err)
	}
	return newAuthority(b, "cacerts "+dir, opts)
}

// writeFileAtomic writes data beside path and renames it into place, so a
// reader sees the old file or the new one, never a part.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// Istio's file and Secret keys (security/pkg/pki/ca: CACertFile, ...).
const (
	CACertFile    = "ca-cert.pem"
	CAKeyFile     = "ca-key.pem"
	RootCertFile  = "root-cert.pem"
	CertChainFile = "cert-chain.pem"
)

// rootOrganization is the subject of a self-signed root, as Istio's
// (O=cluster.local).
const rootOrganization = "cluster.local"

// bundle is a signing key with its certificate and what chains it to a root.
type bundle struct {
	signer        crypto.Signer
	cert          *x509.Certificate
	intermediates []*x509.Certificate // between cert and root, both excluded
	root          *x509.Certificate
}

// validate checks that the key signs for cert, that cert may sign
// certificates, is valid now, and chains through intermediates to root.
func (b bundle) validate(now time.Time) error {
	pub, ok := b.signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(b.cert.PublicKey) {
		return fmt.Errorf("%s: the private key does not match the certificate's public key", CAKeyFile)
	}
	if !b.cert.IsCA || !b.cert.BasicConstraintsValid {
		return fmt.Errorf("%s: %s is not a CA certificate (basicConstraints CA:TRUE missing)", CACertFile, b.cert.Subject)
	}
	if b.cert.KeyUsage != 0 && b.cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%s: %s may not sign certificates (keyUsage lacks keyCertSign)", CACertFile, b.cert.Subject)
	}
	if now.After(b.cert.NotAfter) {
		return fmt.Errorf("%s: %s expired at %s", CACertFile, b.cert.Subject, b.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if !b.root.IsCA {
		return fmt.Errorf("%s: %s is not a CA certificate", RootCertFile, b.root.Subject)
	}
	roots := x509.NewCertPool()
	roots.AddCert(b.root)
	inter := x509.NewCertPool()
	for _, c := range b.intermediates {
		inter.AddCert(c)
	}
	if _, err := b.cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("%s does not chain to %s through %s: %w", CACertFile, RootCertFile, CertChainFile, err)
	}
	return nil
}

// newSelfSignedRoot makes the key and certificate of a fresh root: ECDSA
// P-256, ten years, O=cluster.local as Istio's self-signed CA.
func newSelfSignedRoot(now time.Time) (bundle, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return bundle{}, err
	}
	serial, err := randomSerial()
	if err != nil {
		return bundle{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{rootOrganization}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(RootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return bundle{}, fmt.Errorf("create root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return bundle{}, err
	}
	return bundle{signer: key, cert: cert, root: cert}, nil
}

// selfSignedFromPEM reads a self-signed root's files (ca-cert.pem, ca-key.pem).
func selfSignedFromPEM(certPEM, keyPEM []byte) (bundle, error) {
	certs, err := parseCerts(CACertFile, certPEM)
	if err != nil {
		return bundle{}, err
	}
	key, err := parseKey(CAKeyFile, keyPEM)
	if err != nil {
		return bundle{}, err
	}
	if len(certs) != 1 {
		return bundle{}, fmt.Errorf("%s: %d certificates, want the root alone", CACertFile, len(certs))
	}
	return bundle{signer: key, cert: certs[0], root: certs[0]}, nil
}

// caCertsFromPEM reads Istio's cacerts layout. cert-chain.pem is the chain
// from ca-cert.pem towards the root; tools differ on whether it starts with
// ca-cert.pem and ends with the root, so both are accepted and dropped here.
// Without cert-chain.pem, ca-cert.pem must be signed by the root directly.
func caCertsFromPEM(files map[string][]byte) (bundle, error) {
	for _, name := range []string{CACertFile, CAKeyFile, RootCertFile} {
		if len(files[name]) == 0 {
			return bundle{}, fmt.Errorf("%s is missing or empty", name)
		}
	}
	certs, err := parseCerts(CACertFile, files[CACertFile])
	if err != nil {
		return bundle{}, err
	}
	roots, err := parseCerts(RootCertFile, files[RootCertFile])
	if err != nil {
		return bundle{}, err
	}
	key, err := parseKey(CAKeyFile, files[CAKeyFile])
	if err != nil {
		return bundle{}, err
	}
	if len(roots) != 1 {
		return bundle{}, fmt.Errorf("%s: %d certificates, want one root", RootCertFile, len(roots))
	}
	b := bundle{signer: key, cert: certs[0], root: roots[0]}
	// Extra certificates after the first in ca-cert.pem are intermediates
	// too (some tools write the chain there).
	chain := certs[1:]
	if len(files[CertChainFile]) > 0 {
		if chain, err = parseCerts(CertChainFile, files[CertChainFile]); err != nil {
			return bundle{}, err
		}
	}
	if len(chain) > 0 && chain[0].Equal(b.cert) {
		chain = chain[1:]
	}
	if len(chain) > 0 && chain[len(chain)-1].Equal(b.root) {
		chain = chain[:len(chain)-1]
	}
	b.intermediates = chain
	return b, nil
}

func parseCerts(name string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %q, want CERTIFICATE", name, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", name, len(certs), err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", name)
	}
	return certs, nil
}

// parseKey reads a PEM private key in PKCS #8, PKCS #1 (RSA) or SEC 1 (EC)
// form: Istio's tools and openssl write all three.
func parseKey(name string, data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM private key", name)
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s: PEM block %q, want PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY", name, block.Type)
	}
	if err != nil {
		// The parser's message never contains key material.
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: %T cannot sign", name, key)
	}
	return signer, nil
}

func encodeCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	k, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("only ECDSA roots are created")
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/trellis-mesh/trellis/internal/security/spiffe"
)

// Istio's defaults: workload certificates live 24 hours unless the request
// asks otherwise, and never longer than 90 days (istiod's
// MAX_WORKLOAD_CERT_TTL). A self-signed root lives ten years.
const (
	DefaultCertTTL = 24 * time.Hour
	DefaultMaxTTL  = 90 * 24 * time.Hour
	RootTTL        = 10 * 365 * 24 * time.Hour
)

// backdate is how far before "now" certificates become valid, so that a peer
// whose clock is slightly behind accepts them at once.
const backdate = time.Minute

// ErrInvalidCSR is wrapped by every error about a certificate request itself
// (unparsable, bad signature, SANs other than one SPIFFE ID, weak key): the
// caller's fault, not the CA's.
var ErrInvalidCSR = errors.New("invalid certificate request")

// Options tune issuance. The zero value gives Istio's defaults.
type Options struct {
	DefaultTTL time.Duration    // 0 means DefaultCertTTL
	MaxTTL     time.Duration    // 0 means DefaultMaxTTL
	Now        func() time.Time // nil means time.Now; for tests
}

func (o Options) withDefaults() Options {
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = DefaultCertTTL
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = DefaultMaxTTL
	}
	if o.DefaultTTL > o.MaxTTL {
		o.DefaultTTL = o.MaxTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Authority issues certificates. It is safe for concurrent use; nothing in
// it changes after it is built.
type Authority struct {
	opts   Options
	signer crypto.Signer
	cert   *x509.Certificate // signs leaves: the root itself, or an intermediate
	// chain is what follows a leaf in every chain handed out: the signing
	// certificate (when it is not the root), further intermediates, the root.
	chain    []*x509.Certificate
	root     *x509.Certificate
	rootPEM  []byte
	source   string
	tokenKey *ecdsa.PrivateKey
}

// newAuthority checks that signer and cert belong together and that cert is
// a CA which chains through intermediates to root, and builds the Authority.
func newAuthority(b bundle, source string, opts Options) (*Authority, error) {
	opts = opts.withDefaults()
	if err := b.validate(opts.Now()); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	a := &Authority{
		opts:    opts,
		signer:  b.signer,
		cert:    b.cert,
		root:    b.root,
		rootPEM: encodeCerts(b.root),
		source:  source,
	}
	if !b.cert.Equal(b.root) {
		a.chain = append(a.chain, b.cert)
	}
	a.chain = append(a.chain, b.intermediates...)
	a.chain = append(a.chain, b.root)
	var err error
	if a.tokenKey, err = deriveTokenKey(b.signer); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return a, nil
}

// Source says where the signing key came from, for logs: a directory or a
// Secret.
func (a *Authority) Source() string { return a.source }

// Root is the trust anchor: the last certificate of every chain.
func (a *Authority) Root() *x509.Certificate { return a.root }

// RootPEM is the root certificate in PEM, what proxies trust.
func (a *Authority) RootPEM() []byte { return bytes.Clone(a.rootPEM) }

// MaxTTL is the longest validity Sign grants.
func (a *Authority) MaxTTL() time.Duration { return a.opts.MaxTTL }

// ParseCSR parses a DER certificate request and checks its signature. It
// does not look at the SANs; Sign does.
func ParseCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrInvalidCSR, err)
	}
	return csr, nil
}

// Sign issues a workload certificate for the CSR's public key and its one
// SPIFFE URI SAN, valid from a minute ago for ttl (0 or less: the default;
// more than MaxTTL: MaxTTL; never past the signing certificate's own
// expiry). It returns the chain: the leaf first, then intermediates, the
// root last. Sign checks the CSR, not whether the caller may hold the
// identity: that is the caller's job.
func (a *Authority) Sign(csrDER []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	csr, err := ParseCSR(csrDER)
	if err != nil {
		return nil, err
	}
	id, err := CSRIdentity(csr)
	if err != nil {
		return nil, err
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	switch {
	case ttl <= 0:
		ttl = a.opts.DefaultTTL
	case ttl > a.opts.MaxTTL:
		ttl = a.opts.MaxTTL
	}
	now := a.opts.Now()
	tmpl := &x509.Certificate{
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		// An empty subject, as Istio's: the identity is the URI SAN alone
		// (which x509 then marks critical, as RFC 5280 asks).
		URIs: []*url.URL{id.URL()},
	}
	return a.issue(tmpl, csr.PublicKey)
}

// CSRIdentity returns the one SPIFFE identity a CSR asks for. A CSR with no
// URI SAN, more than one, or any DNS, IP or e-mail SAN is refused: workload
// certificates carry exactly one identity.
func CSRIdentity(csr *x509.CertificateRequest) (spiffe.Identity, error) {
	if n := len(csr.DNSNames) + len(csr.IPAddresses) + len(csr.EmailAddresses); n > 0 {
		return spiffe.Identity{}, fmt.Errorf("%w: %d DNS, IP or e-mail SANs; a workload certificate carries only its SPIFFE ID", ErrInvalidCSR, n)
	}
	if len(csr.URIs) != 1 {
		return spiffe.Identity{}, fmt.Errorf("%w: %d URI SANs; want exactly one SPIFFE ID", ErrInvalidCSR, len(csr.URIs))
	}
	id, err := spiffe.FromURL(csr.URIs[0])
	if err != nil {
		return spiffe.Identity{}, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	return id, nil
}

// IssueServing makes a fresh key and a server certificate for the given
// host names and IP addresses (the CA's own gRPC endpoint), valid for ttl.
// The chain in the result is the leaf and intermediates, without the root.
func (a *Authority) IssueServing(hosts []string, ttl time.Duration) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := a.opts.Now()
	tmpl := &x509.Certificate{
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(tmpl.DNSNames)+len(tmpl.IPAddresses) == 0 {
		return nil, errors.New("serving certificate: no host names")
	}
	if len(hosts) > 0 {
		tmpl.Subject.CommonName = hosts[0]
	}
	chain, err := a.issue(tmpl, key.Public())
	if err != nil {
		return nil, err
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain[:len(chain)-1] {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}

// issue signs tmpl with a fresh serial and returns it with the chain.
func (a *Authority) issue(tmpl *x509.Certificate, pub crypto.PublicKey) ([]*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	if tmpl.NotAfter.After(a.cert.NotAfter) {
		tmpl.NotAfter = a.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.signer)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return append([]*x509.Certificate{leaf}, a.chain...), nil
}

// randomSerial is 128 random bits, positive, as CA/Browser Forum rules ask
// (at least 64) and Istio does.
func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// checkPublicKey refuses keys too weak to carry a mesh identity.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P224() {
			return errors.New("ECDSA P-224 keys are too weak; use P-256 or larger")
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too weak; use 2048 or more", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("unsupported public key type %T", pub)
	}
	return nil
}

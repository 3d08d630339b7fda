package identity

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Istio's SDS secret names.
const (
	// WorkloadSecret is the workload's certificate chain and private key.
	WorkloadSecret = "default"
	// RootSecret is the trust bundle: the mesh CA's root.
	RootSecret = "ROOTCA"
)

// ErrNotReady is returned for a secret the agent does not hold yet (its first certificate is still
// on its way): the handshake fails and the next one tries again.
var ErrNotReady = errors.New("not issued yet")

// Workload is the workload secret: the certificate chain (leaf first, no root) and its key.
type Workload struct {
	Cert tls.Certificate // Leaf is set
	// Chain is Cert's chain parsed, leaf first.
	Chain   []*x509.Certificate
	Updated time.Time
}

// Bundle is the trust bundle secret.
type Bundle struct {
	Pool    *x509.CertPool
	Certs   []*x509.Certificate
	Updated time.Time
}

// Store holds the secrets a proxy serves to its TLS contexts. Reads are lock-free (one atomic
// load per handshake); writes replace a secret whole.
type Store struct {
	log      *slog.Logger
	workload atomic.Pointer[Workload]
	roots    atomic.Pointer[Bundle]
	// lastWarn rate-limits the warning for handshakes that find no secret yet.
	lastWarn atomic.Int64

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
}

// NewStore returns an empty store; log (slog.Default() when nil) gets a rate-limited warning when
// a handshake needs a secret the store does not hold yet.
func NewStore(log *slog.Logger) *Store {
	if log == nil {
		log = slog.Default()
	}
	return &Store{log: log, changed: make(chan struct{})}
}

// SetWorkload installs the workload secret: chain (leaf first, without the root) and its key.
func (s *Store) SetWorkload(chain []*x509.Certificate, key crypto.Signer) error {
	if len(chain) == 0 {
		return errors.New("empty certificate chain")
	}
	w := &Workload{Chain: chain, Updated: time.Now()}
	w.Cert.PrivateKey = key
	w.Cert.Leaf = chain[0]
	for _, c := range chain {
		w.Cert.Certificate = append(w.Cert.Certificate, c.Raw)
	}
	s.workload.Store(w)
	s.notify()
	return nil
}

// SetRoots installs the trust bundle.
func (s *Store) SetRoots(certs []*x509.Certificate) error {
	if len(certs) == 0 {
		return errors.New("empty trust bundle")
	}
	b := &Bundle{Pool: x509.NewCertPool(), Certs: certs, Updated: time.Now()}
	for _, c := range certs {
		b.Pool.AddCert(c)
	}
	s.roots.Store(b)
	s.notify()
	return nil
}

func (s *Store) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Changed returns a channel closed at the next change of either secret.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Workload returns the workload secret, nil before the first certificate.
func (s *Store) Workload() *Workload { return s.workload.Load() }

// Roots returns the trust bundle, nil before the first one.
func (s *Store) Roots() *Bundle { return s.roots.Load() }

// Ready reports whether both secrets are there.
func (s *Store) Ready() bool { return s.workload.Load() != nil && s.roots.Load() != nil }

// Certificate serves the tls_certificate_sds_secret_configs secret name (xdsconfig.SecretSource).
func (s *Store) Certificate(name string) (*tls.Certificate, error) {
	if name != WorkloadSecret {
		return nil, fmt.Errorf("SDS secret %q: the identity agent serves only %q as a certificate", name, WorkloadSecret)
	}
	w := s.workload.Load()
	if w == nil {
		s.warnMissing(name)
		return nil, fmt.Errorf("SDS secret %q: %w", name, ErrNotReady)
	}
	return &w.Cert, nil
}

// TrustBundle serves the validation_context_sds_secret_config secret name (xdsconfig.SecretSource).
func (s *Store) TrustBundle(name string) (*x509.CertPool, error) {
	if name != RootSecret {
		return nil, fmt.Errorf("SDS secret %q: the identity agent serves only %q as a trust bundle", name, RootSecret)
	}
	b := s.roots.Load()
	if b == nil {
		s.warnMissing(name)
		return nil, fmt.Errorf("SDS secret %q: %w", name, ErrNotReady)
	}
	return b.Pool, nil
}

// warnMissing logs, at most every 10s, that a handshake failed for want of a secret: the mTLS
// listener or cluster is configured but waits for the agent.
func (s *Store) warnMissing(name string) {
	now := time.Now().UnixNano()
	last := s.lastWarn.Load()
	if now-last < int64(10*time.Second) || !s.lastWarn.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("TLS handshake needs an SDS secret the identity agent does not hold yet; failing it", "secret", name)
}

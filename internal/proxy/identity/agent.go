package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	securityv1alpha1 "istio.io/api/security/v1alpha1"
)

// Defaults, Istio's.
const (
	DefaultTrustDomain = "cluster.local"
	// DefaultCAServerName is the name the CA's serving certificate is checked for, whatever address
	// it is reached at (Istio's agent does the same with istiod's name).
	DefaultCAServerName = "istiod.istio-system.svc"
	// DefaultGracePeriodRatio is SECRET_GRACE_PERIOD_RATIO: rotate when half the lifetime is left.
	DefaultGracePeriodRatio = 0.5
	DefaultRequestTimeout   = 10 * time.Second
	DefaultMinRetry         = 500 * time.Millisecond
	DefaultMaxRetry         = 30 * time.Second
)

// Config configures the agent.
type Config struct {
	// CAAddress is the CA's host:port (Istio's 15012).
	CAAddress string
	// RootCert is the PEM the CA's TLS certificate must chain to (--ca-root-cert).
	RootCert []byte
	// Token returns the bearer token sent with each request; it is called every time (tokens
	// rotate). nil sends none.
	Token func() (string, error)
	// TrustDomain (default cluster.local), Namespace and ServiceAccount (default "default") make
	// the SPIFFE ID the certificate is asked for.
	TrustDomain, Namespace, ServiceAccount string
	// CAServerName is the name the CA's certificate is verified for; default DefaultCAServerName.
	CAServerName string
	// Validity is the lifetime asked for; 0 leaves it to the CA (24h by default).
	Validity time.Duration
	// GracePeriodRatio: the certificate is renewed when this fraction of its lifetime is left
	// (default 0.5).
	GracePeriodRatio float64
	// MinRetry and MaxRetry bound the exponential back-off between failed requests.
	MinRetry, MaxRetry time.Duration
	// Logger (slog.Default() when nil).
	Logger *slog.Logger
}

// Agent fetches and rotates the workload certificate into its Store.
type Agent struct {
	cfg      Config
	spiffeID *url.URL
	roots    *x509.CertPool
	rootPEM  []*x509.Certificate
	store    *Store
	log      *slog.Logger
}

// New checks cfg and returns an agent with an empty store; Run fills it.
func New(cfg Config) (*Agent, error) {
	if cfg.CAAddress == "" {
		return nil, errors.New("identity: a CA address is required")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("identity: the workload's namespace is unknown (node ID or NAMESPACE metadata)")
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = DefaultTrustDomain
	}
	if cfg.ServiceAccount == "" {
		cfg.ServiceAccount = "default"
	}
	if cfg.CAServerName == "" {
		cfg.CAServerName = DefaultCAServerName
	}
	if cfg.GracePeriodRatio <= 0 || cfg.GracePeriodRatio >= 1 {
		cfg.GracePeriodRatio = DefaultGracePeriodRatio
	}
	if cfg.MinRetry <= 0 {
		cfg.MinRetry = DefaultMinRetry
	}
	if cfg.MaxRetry < cfg.MinRetry {
		cfg.MaxRetry = max(DefaultMaxRetry, cfg.MinRetry)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	roots, err := parseCerts(cfg.RootCert)
	if err != nil || len(roots) == 0 {
		return nil, fmt.Errorf("identity: CA root certificate: no PEM certificate found (%v)", err)
	}
	a := &Agent{
		cfg:      cfg,
		spiffeID: &url.URL{Scheme: "spiffe", Host: cfg.TrustDomain, Path: "/ns/" + cfg.Namespace + "/sa/" + cfg.ServiceAccount},
		roots:    x509.NewCertPool(),
		rootPEM:  roots,
		log:      cfg.Logger,
		store:    NewStore(cfg.Logger),
	}
	for _, r := range roots {
		a.roots.AddCert(r)
	}
	return a, nil
}

// Store is where the agent's secrets are served from.
func (a *Agent) Store() *Store { return a.store }

// SPIFFEID is the identity the agent asks for, spiffe://<td>/ns/<ns>/sa/<sa>.
func (a *Agent) SPIFFEID() string { return a.spiffeID.String() }

// Run fetches the first certificate (retrying until it gets one), then renews it when
// GracePeriodRatio of its lifetime is left, until ctx ends. It returns nil when ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	conn, err := grpc.NewClient(a.cfg.CAAddress, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs:    a.roots,
		ServerName: a.cfg.CAServerName,
		MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		return fmt.Errorf("identity: CA client: %w", err)
	}
	defer conn.Close()
	client := securityv1alpha1.NewIstioCertificateServiceClient(conn)
	retry := a.cfg.MinRetry
	var wait time.Duration
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		w, err := a.fetch(ctx, client)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait = retry
			// Never sleep past the current certificate's expiry by more than a retry step.
			if cur := a.store.Workload(); cur != nil {
				if left := time.Until(cur.Cert.Leaf.NotAfter); left > 0 && left < wait {
					wait = left
				}
			}
			a.log.Warn("workload certificate request failed; retrying", "ca", a.cfg.CAAddress, "retry_in", wait, "error", err)
			retry = min(retry*2, a.cfg.MaxRetry)
			continue
		}
		retry = a.cfg.MinRetry
		leaf := w.Cert.Leaf
		life := leaf.NotAfter.Sub(leaf.NotBefore)
		renewAt := leaf.NotAfter.Add(-time.Duration(float64(life) * a.cfg.GracePeriodRatio))
		wait = max(time.Until(renewAt), a.cfg.MinRetry)
		a.log.Info("workload certificate issued", "spiffe_id", a.SPIFFEID(), "serial", leaf.SerialNumber.Text(16),
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "rotate_in", wait.Round(time.Millisecond))
	}
}

// fetch makes a new key and CSR, asks the CA, checks the answer and installs it.
func (a *Agent) fetch(ctx context.Context, client securityv1alpha1.IstioCertificateServiceClient) (*Workload, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{a.spiffeID}}, key)
	if err != nil {
		return nil, fmt.Errorf("CSR: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, DefaultRequestTimeout)
	defer cancel()
	if a.cfg.Token != nil {
		tok, err := a.cfg.Token()
		if err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
		rctx = metadata.AppendToOutgoingContext(rctx, "authorization", "Bearer "+strings.TrimSpace(tok))
	}
	resp, err := client.CreateCertificate(rctx, &securityv1alpha1.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		ValidityDuration: int64(a.cfg.Validity / time.Second),
	})
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	for i, p := range resp.GetCertChain() {
		certs, err := parseCerts([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("cert_chain[%d]: %w", i, err)
		}
		chain = append(chain, certs...)
	}
	if len(chain) == 0 {
		return nil, errors.New("the CA answered with an empty cert_chain")
	}
	// Istio's order: leaf first, root last. The root is the trust bundle; the rest goes on the wire.
	roots := a.rootPEM
	if len(chain) > 1 && chain[len(chain)-1].IsCA {
		roots = chain[len(chain)-1:]
		chain = chain[:len(chain)-1]
	}
	if err := a.check(chain, roots, key); err != nil {
		return nil, err
	}
	if err := a.store.SetRoots(roots); err != nil {
		return nil, err
	}
	if err := a.store.SetWorkload(chain, key); err != nil {
		return nil, err
	}
	return a.store.Workload(), nil
}

// check refuses a certificate that is not for our key and identity or does not chain to roots.
func (a *Agent) check(chain, roots []*x509.Certificate, key *ecdsa.PrivateKey) error {
	leaf := chain[0]
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("the issued certificate is not for the key of the request")
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != a.SPIFFEID() {
		return fmt.Errorf("the issued certificate's URI SANs %v are not %s", leaf.URIs, a.SPIFFEID())
	}
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("the issued certificate does not verify: %w", err)
	}
	return nil
}

// parseCerts reads every CERTIFICATE block of a PEM bundle.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

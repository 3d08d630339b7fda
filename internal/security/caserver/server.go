package caserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	pb "istio.io/api/security/v1alpha1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/internal/security/ca"
	"github.com/trellis-mesh/trellis/internal/security/spiffe"
)

// The names the serving certificate always carries (besides the listen
// host): Istio proxies dial istiod.istio-system.svc; trellis-controlplane is
// ours.
var defaultHosts = []string{"istiod.istio-system.svc", "trellis-controlplane"}

// servingTTL is the serving certificate's lifetime; it is replaced at half.
const servingTTL = 24 * time.Hour

// maxCSRBytes bounds what is parsed from a caller.
const maxCSRBytes = 64 << 10

// Options configure a Server. Address, Authority and at least one
// Authenticator are required.
type Options struct {
	Address        string // host:port; port 0 picks a free one
	Authority      *ca.Authority
	Authenticators []Authenticator // tried in order; the first to accept wins
	// TrustDomain returns the mesh's trust domain (MeshConfig trustDomain,
	// which may change with the config); nil means cluster.local.
	TrustDomain func() string
	// Hosts are extra DNS names or IPs for the serving certificate.
	Hosts  []string
	Logger *slog.Logger     // nil means slog.Default()
	Now    func() time.Time // nil means time.Now; for tests of rotation
}

// Server is the CA's gRPC endpoint.
type Server struct {
	pb.UnimplementedIstioCertificateServiceServer
	opts  Options
	log   *slog.Logger
	lis   net.Listener
	grpc  *grpc.Server
	hosts []string

	mu      sync.Mutex
	serving *tls.Certificate
}

// Listen binds the address and prepares the server; Serve starts it.
func Listen(opts Options) (*Server, error) {
	if opts.Authority == nil {
		return nil, errors.New("CA server: no Authority")
	}
	if len(opts.Authenticators) == 0 {
		return nil, errors.New("CA server: no Authenticator")
	}
	if opts.TrustDomain == nil {
		opts.TrustDomain = func() string { return spiffe.DefaultTrustDomain }
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	host, _, err := net.SplitHostPort(opts.Address)
	if err != nil {
		return nil, fmt.Errorf("CA server: address %q: %w", opts.Address, err)
	}
	s := &Server{opts: opts, log: opts.Logger, hosts: servingHosts(host, opts.Hosts)}
	// Issue once now: a CA that cannot certify itself should not start.
	if _, err := s.servingCert(); err != nil {
		return nil, fmt.Errorf("CA server: serving certificate: %w", err)
	}
	if s.lis, err = net.Listen("tcp", opts.Address); err != nil {
		return nil, fmt.Errorf("CA server: listen on %s: %w", opts.Address, err)
	}
	tlsConf := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.servingCert() },
	}
	s.grpc = grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConf)))
	pb.RegisterIstioCertificateServiceServer(s.grpc, s)
	return s, nil
}

// servingHosts is the serving certificate's names: Istio's, ours, the
// listen host, and loopback when listening on every address.
func servingHosts(host string, extra []string) []string {
	hosts := append([]string(nil), defaultHosts...)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		hosts = append(hosts, "localhost", "127.0.0.1", "::1")
	} else {
		hosts = append(hosts, host)
	}
	return append(hosts, extra...)
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Serve serves until ctx is done or Shutdown is called; it returns nil then.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, s.grpc.Stop)
	defer stop()
	if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("CA server: %w", err)
	}
	return nil
}

// Shutdown lets requests in flight finish, up to ctx, then closes the rest.
// It also releases the port of a server that never served.
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.lis.Close() // gRPC closes it only if Serve ran; a second close is harmless
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		return ctx.Err()
	}
}

// servingCert returns the serving certificate, replacing it once half its
// lifetime has passed, so it never expires under a running server. Only new
// handshakes see the new one.
func (s *Server) servingCert() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.serving; c != nil {
		half := c.Leaf.NotBefore.Add(c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) / 2)
		if s.opts.Now().Before(half) {
			return c, nil
		}
	}
	c, err := s.opts.Authority.IssueServing(s.hosts, servingTTL)
	if err != nil {
		if s.serving != nil {
			s.log.Error("CA server: could not renew the serving certificate; keeping the old one", "error", err)
			return s.serving, nil
		}
		return nil, err
	}
	if s.serving != nil {
		s.log.Info("CA server: serving certificate renewed", "serial", c.Leaf.SerialNumber.Text(16), "expires", c.Leaf.NotAfter)
	}
	s.serving = c
	return c, nil
}

// CreateCertificate authenticates the caller, checks that the CSR asks for
// the caller's identity and nothing else, and signs it.
func (s *Server) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	caller, err := s.authenticate(ctx)
	if err != nil {
		s.log.Warn("certificate request refused", "reason", err.Error())
		return nil, err
	}
	want := spiffe.Identity{TrustDomain: s.opts.TrustDomain(), Namespace: caller.Namespace, ServiceAccount: caller.ServiceAccount}
	chain, err := s.sign(caller, want, req)
	if err != nil {
		s.log.Warn("certificate request refused", "caller", want.String(), "authenticated_by", caller.By, "reason", err.Error())
		return nil, err
	}
	leaf := chain[0]
	s.log.Info("certificate issued", "identity", want.String(), "serial", leaf.SerialNumber.Text(16),
		"expires", leaf.NotAfter.UTC(), "authenticated_by", caller.By)
	resp := &pb.IstioCertificateResponse{CertChain: make([]string, len(chain))}
	for i, c := range chain {
		resp.CertChain[i] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return resp, nil
}

func (s *Server) sign(caller Caller, want spiffe.Identity, req *pb.IstioCertificateRequest) ([]*x509.Certificate, error) {
	if req.GetValidityDuration() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "validity_duration %d is negative", req.GetValidityDuration())
	}
	if len(req.GetCsr()) > maxCSRBytes {
		return nil, status.Error(codes.InvalidArgument, "csr: too large")
	}
	block, _ := pem.Decode([]byte(req.GetCsr()))
	if block == nil || (block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST") {
		return nil, status.Error(codes.InvalidArgument, "csr: want a PEM CERTIFICATE REQUEST")
	}
	csr, err := ca.ParseCSR(block.Bytes)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	// The CSR must name the caller's identity and only it.
	if got, err := ca.CSRIdentity(csr); err != nil || got != want {
		asked := make([]string, 0, len(csr.URIs)+len(csr.DNSNames))
		for _, u := range csr.URIs {
			asked = append(asked, u.String())
		}
		asked = append(asked, csr.DNSNames...)
		return nil, status.Errorf(codes.PermissionDenied,
			"the CSR asks for [%s] but the token (%s) is for %s only", strings.Join(asked, ", "), caller.By, want)
	}
	chain, err := s.opts.Authority.Sign(block.Bytes, time.Duration(req.GetValidityDuration())*time.Second)
	if errors.Is(err, ca.ErrInvalidCSR) {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sign: %v", err)
	}
	return chain, nil
}

// authenticate reads the bearer token and asks each authenticator in turn.
func (s *Server) authenticate(ctx context.Context) (Caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return Caller{}, status.Error(codes.Unauthenticated, "no bearer token: send gRPC metadata \"authorization: Bearer <token>\"")
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return Caller{}, status.Error(codes.Unauthenticated, "authorization metadata is not \"Bearer <token>\"")
	}
	token = strings.TrimSpace(token)
	var reasons []string
	unavailable := false
	for _, a := range s.opts.Authenticators {
		caller, err := a.Authenticate(ctx, token)
		if err == nil {
			return caller, nil
		}
		unavailable = unavailable || errors.Is(err, ErrUnavailable)
		reasons = append(reasons, err.Error())
	}
	code := codes.Unauthenticated
	if unavailable {
		code = codes.Unavailable
	}
	return Caller{}, status.Errorf(code, "authentication failed: %s", strings.Join(reasons, "; "))
}

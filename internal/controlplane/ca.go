package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/security/ca"
	"github.com/trellis-mesh/trellis/internal/security/caserver"
	"github.com/trellis-mesh/trellis/internal/security/spiffe"
)

// DefaultCAAddress is istiod's CA port (15012), on loopback.
const DefaultCAAddress = "127.0.0.1:15012"

// DefaultCADir is where file mode keeps the CA's root unless told
// otherwise: $XDG_STATE_HOME/trellis/ca, else ~/.trellis/ca.
func DefaultCADir() (string, error) {
	if state := os.Getenv("XDG_STATE_HOME"); state != "" {
		return filepath.Join(state, "trellis", "ca"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("CA directory: %w", err)
	}
	return filepath.Join(home, ".trellis", "ca"), nil
}

// ReadyCA is the running CA, for whoever starts proxies (local mode): it
// mints their bootstrap tokens (MintBootstrapToken) and gives the root they
// must trust (RootPEM). Addr is where it serves certificates.
type ReadyCA struct {
	*ca.Authority
	Addr net.Addr
}

// caService is the optional CA: its methods do nothing when it is nil.
type caService struct {
	srv         *caserver.Server
	ready       *ReadyCA
	trustDomain atomic.Pointer[string]
}

// startCA loads or creates the CA and binds its gRPC port; nil when
// opts.CAAddress is "".
func startCA(opts Options) (*caService, error) {
	if opts.CAAddress == "" {
		return nil, nil
	}
	var (
		auth *ca.Authority
		err  error
	)
	var kube kubernetes.Interface
	if opts.Kubernetes != nil {
		if kube, err = kubernetes.NewForConfig(opts.Kubernetes); err != nil {
			return nil, fmt.Errorf("control plane: CA: %w", err)
		}
	}
	switch {
	case opts.CACertsDir != "":
		auth, err = ca.LoadCACerts(opts.CACertsDir, ca.Options{})
	case opts.CADir != "":
		auth, err = ca.LoadOrCreateDir(opts.CADir, ca.Options{})
	case kube != nil:
		// As istiod: the cacerts Secret if the user plugged one in, else the
		// self-signed root kept in istio-ca-secret.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		auth, err = ca.LoadKubernetes(ctx, kube, opts.istioNamespace(), ca.Options{})
		cancel()
	default:
		err = errors.New("a CA address needs CADir, CACertsDir or the Kubernetes source")
	}
	if err != nil {
		return nil, fmt.Errorf("control plane: CA: %w", err)
	}
	// Pods prove who they are with their service-account token (TokenReview,
	// as istiod); bootstrap tokens keep working for workloads outside the
	// cluster and are checked first, locally, sparing the API server.
	authenticators := []caserver.Authenticator{caserver.BootstrapTokens{Authority: auth}}
	if kube != nil {
		authenticators = append(authenticators, caserver.TokenReview{Client: kube})
	}
	c := &caService{}
	td := spiffe.DefaultTrustDomain
	c.trustDomain.Store(&td)
	c.srv, err = caserver.Listen(caserver.Options{
		Address:        opts.CAAddress,
		Authority:      auth,
		Authenticators: authenticators,
		TrustDomain:    func() string { return *c.trustDomain.Load() },
		Logger:         opts.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	c.ready = &ReadyCA{Authority: auth, Addr: c.srv.Addr()}
	opts.Logger.Info("serving CA (istio.v1.auth.IstioCertificateService, TLS)", "address", c.srv.Addr().String(),
		"root", auth.Source())
	return c, nil
}

// serve runs the CA until ctx is done; the channel closes once it has
// stopped. A CA that fails is logged: xDS keeps serving.
func (c *caService) serve(ctx context.Context, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	if c == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		if err := c.srv.Serve(ctx); err != nil {
			log.Error("CA stopped", "error", err)
		}
	}()
	return done
}

func (c *caService) info() *ReadyCA {
	if c == nil {
		return nil
	}
	return c.ready
}

// accept follows MeshConfig trustDomain: identities are issued in it.
func (c *caService) accept(cfg *model.Config) {
	if c == nil {
		return
	}
	td := cfg.Mesh.GetTrustDomain()
	if td == "" {
		td = spiffe.DefaultTrustDomain
	}
	c.trustDomain.Store(&td)
}

func (c *caService) shutdown(ctx context.Context) error {
	if c == nil {
		return nil
	}
	return c.srv.Shutdown(ctx)
}

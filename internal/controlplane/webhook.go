package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/internal/inject"
	"github.com/trellis-mesh/trellis/internal/install"
	"github.com/trellis-mesh/trellis/internal/model"
)

// injectorService is the optional injection webhook; its methods do
// nothing when it is nil.
type injectorService struct {
	lis     net.Listener
	tls     *tls.Config
	src     *inject.KubeSource
	params  inject.Params
	log     *slog.Logger
	handler atomic.Pointer[http.Handler]
}

// istioNamespace is where install puts the control plane and its Services.
func (opts *Options) istioNamespace() string {
	if opts.IstioNamespace == "" {
		return "istio-system"
	}
	return opts.IstioNamespace
}

// InjectParams are the injection template's inputs with the control plane's
// defaults: inject.DefaultParams, addresses on the istiod Service of the
// istio namespace. The trust domain follows MeshConfig.
func (opts *Options) injectParams() inject.Params {
	p, def := opts.Inject, inject.DefaultParams()
	svc := install.IstiodAlias + "." + opts.istioNamespace() + ".svc"
	if p.ProxyImage == "" {
		p.ProxyImage = def.ProxyImage
	}
	if p.XDSAddress == "" {
		p.XDSAddress = fmt.Sprintf("%s:%d", svc, install.PortXDS)
	}
	if p.CAAddress == "" {
		p.CAAddress = fmt.Sprintf("%s:%d", svc, install.PortCA)
	}
	if p.TrustDomain == "" {
		p.TrustDomain = def.TrustDomain
	}
	return p
}

// webhookHosts are the names the serving certificate carries: the two
// Services install creates (the API server dials <svc>.<ns>.svc), and
// loopback, for a webhook registered by URL on the node or through a
// port-forward.
func webhookHosts(namespace string) []string {
	hosts := inject.ServiceHosts(install.ControlPlaneName, namespace)
	hosts = append(hosts, inject.ServiceHosts(install.IstiodAlias, namespace)...)
	return append(hosts, "localhost", "127.0.0.1", "::1")
}

// startInjector binds the webhook's port and fills its cluster cache; nil
// when opts.WebhookAddress is "". Its certificate comes from the CA, whose
// root is the caBundle the leader keeps in install's webhook configuration
// (cabundle.go).
func startInjector(ctx context.Context, opts Options, caSvc *caService) (*injectorService, error) {
	if opts.WebhookAddress == "" {
		return nil, nil
	}
	if opts.Kubernetes == nil {
		return nil, errors.New("control plane: the injection webhook needs the Kubernetes source (--kubernetes or --kubeconfig)")
	}
	if caSvc == nil {
		return nil, errors.New("control plane: the injection webhook needs the CA (its serving certificate comes from it); set a CA address")
	}
	cfg, err := inject.ServingTLS(caSvc.ready.Authority, webhookHosts(opts.istioNamespace()))
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	kube, err := kubernetes.NewForConfig(opts.Kubernetes)
	if err != nil {
		return nil, fmt.Errorf("control plane: webhook: %w", err)
	}
	ic, err := istioclient.NewForConfig(opts.Kubernetes)
	if err != nil {
		return nil, fmt.Errorf("control plane: webhook: %w", err)
	}
	src, err := inject.NewKubeSource(ctx, kube, ic, opts.istioNamespace())
	if err != nil {
		return nil, fmt.Errorf("control plane: webhook: %w", err)
	}
	lis, err := net.Listen("tcp", opts.WebhookAddress)
	if err != nil {
		src.Stop()
		return nil, fmt.Errorf("control plane: webhook listen on %s: %w", opts.WebhookAddress, err)
	}
	w := &injectorService{lis: lis, tls: cfg, src: src, params: opts.injectParams(), log: opts.Logger}
	w.setTrustDomain(w.params.TrustDomain)
	opts.Logger.Info("serving the sidecar injection webhook (HTTPS)", "address", lis.Addr().String(),
		"path", inject.WebhookPath, "proxy_image", w.params.ProxyImage, "xds", w.params.XDSAddress, "ca", w.params.CAAddress)
	return w, nil
}

// setTrustDomain swaps in a handler whose template uses td.
func (w *injectorService) setTrustDomain(td string) {
	p := w.params
	p.TrustDomain = td
	h := inject.NewWebhook(inject.WebhookOptions{Params: p, Source: w.src, Logger: w.log})
	w.handler.Store(&h)
}

func (w *injectorService) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	(*w.handler.Load()).ServeHTTP(rw, r)
}

// accept follows MeshConfig trustDomain, as the CA does.
func (w *injectorService) accept(cfg *model.Config) {
	if w == nil {
		return
	}
	td := cfg.Mesh.GetTrustDomain()
	if td == "" {
		td = w.params.TrustDomain
	}
	w.setTrustDomain(td)
}

// serve runs the webhook until ctx is done, then stops its cache; the
// channel closes once both have stopped. A webhook that fails is logged:
// xDS keeps serving.
func (w *injectorService) serve(ctx context.Context, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	if w == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		defer w.src.Stop()
		if err := inject.Serve(ctx, w.lis, w.tls, w); err != nil {
			log.Error("injection webhook stopped", "error", err)
		}
	}()
	return done
}

// close releases what startInjector took when Run does not get to serve.
func (w *injectorService) close() {
	if w == nil {
		return
	}
	w.lis.Close()
	w.src.Stop()
}

func (w *injectorService) addr() net.Addr {
	if w == nil {
		return nil
	}
	return w.lis.Addr()
}

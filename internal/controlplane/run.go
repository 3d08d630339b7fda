package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/internal/inject"
	"github.com/trellis-mesh/trellis/internal/kubesource"
	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/translate"
	"github.com/trellis-mesh/trellis/internal/xds"
)

// DefaultXDSAddress is Istio's plaintext xDS port on loopback.
const DefaultXDSAddress = "127.0.0.1:15010"

// shutdownGrace bounds how long Run waits for open xDS streams to end.
const shutdownGrace = 5 * time.Second

// Options configure Run. One source is required: ConfigDir or Kubernetes.
type Options struct {
	ConfigDir string
	// Kubernetes, if set, reads config from that cluster (Services,
	// EndpointSlices, Pods and Istio's resources; see internal/kubesource)
	// instead of a directory; KubernetesConfig makes one.
	Kubernetes *rest.Config
	// IstioNamespace holds the istio ConfigMap (MeshConfig) read with
	// Kubernetes; "" means istio-system.
	IstioNamespace string
	XDSAddress     string       // "" means DefaultXDSAddress; port 0 picks a free one
	Logger         *slog.Logger // nil means slog.Default()
	// DebugAddress serves metrics and debug endpoints (istiod's 15014:
	// /metrics, /debug/syncz, /debug/configz, ...); "" disables them.
	// DefaultDebugAddress is what the CLI uses.
	DebugAddress string

	// Ready, if set, is called once the xDS listener is bound, before any
	// config is applied; proxies may connect from then on.
	Ready func(Ready)
	// OnConfig, if set, is called with every accepted snapshot after it has
	// been handed to the xDS server.
	OnConfig func(*model.Snapshot)
	// OnConfigError, if set, is called with every rejected config after it
	// has been logged; the last good config keeps serving.
	OnConfigError func(error)

	// UIAddress, if set, serves the console there (ui.DefaultAddress is
	// the usual one); "" means no console.
	UIAddress string

	// CAAddress, if set, serves the CA there (Istio's CreateCertificate on
	// TLS; DefaultCAAddress is the usual one), its root kept in CADir, or
	// the user's CA in Istio's cacerts layout in CACertsDir. "" means no CA.
	CAAddress  string
	CADir      string
	CACertsDir string

	// WebhookAddress, if set, serves Istio's sidecar injection webhook
	// (HTTPS POST /inject, istiod's 15017) with a certificate from the CA
	// for the Services install creates; it needs Kubernetes and the CA.
	// Inject are the template's inputs; empty strings get
	// inject.DefaultParams, with xDS and CA on istiod.<IstioNamespace>.svc,
	// and the trust domain follows MeshConfig. NativeSidecars is taken as
	// given (the CLI's --native-sidecars defaults to true, as DefaultParams).
	WebhookAddress string
	Inject         inject.Params

	// AutoScope lists the namespaces ("*": all) whose sidecars are scoped
	// automatically to the services they were observed calling (see
	// docs/scoping.md); empty means off. AutoScopeTTL is how long a
	// dependency stays after it was last seen (0: one hour).
	// AutoScopeMetricsPort replaces the proxies' status port (15020) it
	// scrapes, and AutoScopeInterval the 2 s between scrapes; for tests.
	AutoScope            []string
	AutoScopeTTL         time.Duration
	AutoScopeMetricsPort int
	AutoScopeInterval    time.Duration

	// LeaderElection tunes the election among replicas in Kubernetes mode:
	// every replica serves xDS, only the Lease holder writes to the cluster
	// (status, root ConfigMaps, the webhook's caBundle). Config is filled in; the Lease is in
	// $POD_NAMESPACE, else IstioNamespace; zero values are defaults.
	LeaderElection kubesource.ElectorOptions

	// AutoRegisterGrace is how long an auto-registered WorkloadEntry
	// outlives its proxy's last stream (istiod's
	// PILOT_WORKLOAD_ENTRY_GRACE_PERIOD); 0 means 10 s.
	AutoRegisterGrace time.Duration
	// AutoRegisterSweepInterval is how often, in Kubernetes mode, the
	// leader deletes auto-registered WorkloadEntries that no replica looks
	// after (their replica crashed); 0 means ten grace periods, as istiod.
	AutoRegisterSweepInterval time.Duration

	// Translate replaces translate.Build; for tests.
	Translate xds.TranslateFunc
}

// Ready describes a running control plane.
type Ready struct {
	XDSAddr   net.Addr
	DebugAddr net.Addr    // nil when Options.DebugAddress is ""
	XDS       *xds.Server // for proxy status; do not Shutdown it, cancel Run's ctx
	UIAddr    net.Addr    // the console's address; nil without one
	CA        *ReadyCA    // the CA; nil without one
	// WebhookAddr is the injection webhook's address; nil without one.
	WebhookAddr net.Addr
}

// Run serves until ctx is done, then shuts down gracefully and returns nil.
// It returns an error if it cannot start (bad options, the address is in
// use, the config directory cannot be watched) or if serving fails.
func Run(ctx context.Context, opts Options) error {
	if opts.XDSAddress == "" {
		opts.XDSAddress = DefaultXDSAddress
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	var shareKey xds.ShareKeyFunc // a test's Translate may read anything of the proxy
	var endpointDelta func(old, new *model.Snapshot) (model.EndpointChange, bool)
	if opts.Translate == nil {
		opts.Translate, shareKey = build, xds.TranslateShareKey
		// An endpoint-only change replaces just the changed load
		// assignments in each class's snapshot (docs/endpoint-updates.md).
		endpointDelta = translate.EndpointDelta
	}
	log := opts.Logger
	elector, err := opts.elector()
	if err != nil {
		return err
	}
	src, err := opts.source(elector)
	if err != nil {
		return err
	}

	lis, err := net.Listen("tcp", opts.XDSAddress)
	if err != nil {
		return fmt.Errorf("control plane: xDS listen on %s: %w", opts.XDSAddress, err)
	}
	tel := newTelemetry()
	autoReg, err := newAutoRegistration(opts, elector)
	if err != nil {
		lis.Close()
		return err
	}
	srv := xds.NewServer(xds.Options{Translate: opts.Translate, ShareKey: shareKey, Logger: log, Metrics: tel.xds,
		EndpointDelta: endpointDelta, TranslateEndpoints: translate.BuildEndpoints,
		OnConnect: autoReg.ctrl.OnConnect, OnDisconnect: autoReg.ctrl.OnDisconnect, OnHealth: autoReg.ctrl.OnHealth})
	autoReg.maxConnAge = srv.MaxConnectionAge()
	scoper := newAutoScoper(opts, srv)
	dbg, err := listenDebug(opts.DebugAddress, tel, srv, scoper, log)
	if err != nil {
		lis.Close()
		return err
	}
	caSvc, err := startCA(opts)
	if err != nil {
		lis.Close()
		_ = dbg.shutdown(context.Background())
		return err
	}
	rootCerts, err := newRootCertWriter(opts.Kubernetes, caSvc, elector, log)
	var injector *injectorService
	if err == nil {
		injector, err = startInjector(ctx, opts, caSvc)
	}
	var caBundle *caBundlePatcher
	if err == nil {
		if caBundle, err = newCABundlePatcher(opts, caSvc, elector); err != nil {
			injector.close()
		}
	}
	var console console
	if err == nil {
		if console, err = startConsole(opts, srv); err != nil {
			injector.close()
		}
	}
	if err != nil {
		lis.Close()
		_ = dbg.shutdown(context.Background())
		_ = caSvc.shutdown(context.Background())
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	consoleDone := console.serve(ctx, log)
	caDone := caSvc.serve(ctx, log)
	injectorDone := injector.serve(ctx, log)
	rootCertsDone := rootCerts.run(ctx)
	caBundleDone := caBundle.run(ctx)
	electorDone := elector.Run(ctx)
	scoperDone := scoper.run(ctx, opts.AutoScopeInterval)
	if opts.Ready != nil {
		opts.Ready(Ready{XDSAddr: lis.Addr(), DebugAddr: dbg.addr(), XDS: srv, UIAddr: console.addr(), CA: caSvc.info(),
			WebhookAddr: injector.addr()})
	}

	// Configs from the source and re-applies with new auto-registered
	// entries (file mode) go through here one at a time.
	var applyMu sync.Mutex
	var lastCfg *model.Config
	var lastSnap *model.Snapshot
	applyLocked := func(cfg *model.Config) {
		cfg = autoReg.accept(cfg)
		snap := scoper.apply(srv, cfg, lastSnap)
		lastSnap = snap
		tel.state.Applied(cfg, snap)
		console.accept(snap)
		caSvc.accept(cfg)
		injector.accept(cfg)
		log.Info("config applied", "source", src.String(), "services", len(snap.Services),
			"virtual_services", len(cfg.VirtualServices), "destination_rules", len(cfg.DestinationRules))
		if opts.OnConfig != nil {
			opts.OnConfig(snap)
		}
	}
	onConfig := func(cfg *model.Config) {
		applyMu.Lock()
		defer applyMu.Unlock()
		lastCfg = cfg
		applyLocked(cfg)
	}
	reapply := func() {
		applyMu.Lock()
		defer applyMu.Unlock()
		if lastCfg != nil {
			applyLocked(lastCfg)
		}
	}
	_, selfLogging := src.(interface{ LogsProblems() bool })
	onError := func(err error) {
		if !selfLogging { // the Kubernetes source logs each problem once, not on every change
			logConfigError(log, src.String(), err)
		}
		tel.state.Rejected(err)
		console.reject(err)
		if opts.OnConfigError != nil {
			opts.OnConfigError(err)
		}
	}
	autoRegDone := autoReg.run(ctx, reapply)
	watched := make(chan error, 1)
	go func() { watched <- src.Watch(ctx, onConfig, onError) }()

	// A nil channel drops out of the select once its goroutine has ended.
	var runErr error
	for runErr == nil && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case err := <-served:
			served, runErr = nil, err
			if err == nil {
				runErr = errors.New("control plane: xDS server stopped unexpectedly")
			}
		case err := <-watched:
			// nil: the watch carries on in the background until ctx ends.
			watched = nil
			if err != nil && ctx.Err() == nil {
				runErr = fmt.Errorf("control plane: watch %s: %w", src, err)
			}
		}
	}
	cancel()

	sctx, scancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("xDS streams did not end in time; closed them", "error", err)
	}
	if err := dbg.shutdown(sctx); err != nil {
		log.Warn("debug server did not stop cleanly", "error", err)
	}
	if err := caSvc.shutdown(sctx); err != nil {
		log.Warn("CA requests did not end in time; closed them", "error", err)
	}
	if served != nil {
		if err := <-served; err != nil && runErr == nil {
			runErr = err
		}
	}
	if watched != nil {
		<-watched // the watcher's goroutines end with ctx; do not outlive them
	}
	<-consoleDone
	<-caDone
	<-injectorDone
	<-rootCertsDone
	<-caBundleDone
	<-electorDone
	<-autoRegDone
	<-scoperDone
	log.Info("control plane stopped")
	return runErr
}

// logConfigError logs each problem in a rejected config on its own line,
// with the text config produced (file:line: Kind ns/name: path: reason).
func logConfigError(log *slog.Logger, source string, err error) {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) && len(joined.Unwrap()) > 0 {
		for _, e := range joined.Unwrap() {
			log.Error("config rejected; serving the last good config", "source", source, "error", e.Error())
		}
		return
	}
	log.Error("config rejected; serving the last good config", "source", source, "error", err.Error())
}

// build adapts translate.Build to the xds package's resource set, which
// xds defines itself so that it does not depend on translation.
func build(snap *model.Snapshot, proxy *model.Proxy) (*xds.Resources, error) {
	res, err := translate.Build(snap, proxy)
	if err != nil {
		return nil, err
	}
	return &xds.Resources{
		Listeners: res.Listeners,
		Routes:    res.Routes,
		Clusters:  res.Clusters,
		Endpoints: res.Endpoints,
	}, nil
}

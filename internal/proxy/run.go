package proxy

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/proxy/accesslog"
	"github.com/trellis-mesh/trellis/internal/proxy/admin"
	"github.com/trellis-mesh/trellis/internal/proxy/dnsproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/istiometrics"
	"github.com/trellis-mesh/trellis/internal/proxy/server"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/status"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsclient"
)

// Defaults.
const (
	DefaultAdminAddress  = "127.0.0.1:15000"
	DefaultDrainDuration = 5 * time.Second
)

// KeyTrustDomain is the node metadata key naming the workload's SPIFFE trust domain (Istio's).
const KeyTrustDomain = "TRUST_DOMAIN"

// Options configures a proxy run.
type Options struct {
	// XDSAddress is the control plane's host:port (plaintext ADS). Empty means the bootstrap's
	// ads_config cluster, or no control plane at all (static config only).
	XDSAddress string
	// NodeID is the xDS node ID, e.g. "sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local".
	NodeID string
	// Cluster is node.cluster; empty derives it from the node ID ("reviews-v1.default").
	Cluster string
	// Metadata is merged into node.metadata as strings (e.g. INTERCEPTION_MODE=NONE). Istio's
	// identity keys (NAME, NAMESPACE, WORKLOAD_NAME, SERVICE_ACCOUNT, CLUSTER_ID, MESH_ID) name the
	// workload in Istio's metrics and in the metadata exchange.
	Metadata map[string]string
	// Labels are merged into node.metadata.LABELS (a Struct, as Istio sends it): app, version,
	// service.istio.io/canonical-name and -revision label the workload's metrics.
	Labels map[string]string
	// StatusAddress serves /stats/prometheus (Envoy stats and Istio's standard metrics) and
	// /healthz/ready, Istio's 15020; HealthAddress serves /healthz/ready, Istio's 15021. Empty
	// leaves them off (the default: many proxies share one host in tests and `trellis up`, which
	// gives each its own <ip>:15020).
	StatusAddress, HealthAddress string
	// AdminAddress is used when the bootstrap has no admin.address; default 127.0.0.1:15000.
	AdminAddress string
	// BootstrapPath is an Envoy bootstrap file (YAML or JSON); Bootstrap gives one directly instead.
	BootstrapPath string
	Bootstrap     *bootstrapv3.Bootstrap
	// DrainDuration is the drain period on shutdown (Envoy's --drain-time-s): listeners keep
	// accepting but close every connection after its response, then stop; requests still in flight
	// then get as long again before their connections are closed. Also the graceful period of
	// /drain_listeners?graceful. Default 5s.
	DrainDuration time.Duration
	// Logger is where logs go (slog.Default() when nil). Unless LogLevels is set, its handler's own
	// level filters as before and /logging can only raise component levels above it.
	Logger *slog.Logger
	// LogLevels, when set, holds the per-component levels (cmd/trellis-proxy builds it from
	// --log-level and --component-log-level) and replaces Logger.
	LogLevels *LogLevels
	// OnStarted, if set, is called once the admin server and the static listeners are up, with the
	// admin server's bound address.
	OnStarted func(adminAddress string)
	// Identity, when set, runs the identity agent: it gets the workload's certificate from the CA
	// and serves it (and the CA's root) as the SDS secrets "default" and "ROOTCA"; the proxy is not
	// ready until it holds one. Namespace, ServiceAccount and TrustDomain left empty come from the
	// node (the node ID's namespace, metadata SERVICE_ACCOUNT and TRUST_DOMAIN).
	Identity *identity.Config
	// OnStatusStarted, if set, is called once the status and health servers are up, with their
	// bound addresses ("" for one that is off).
	OnStatusStarted func(statusAddress, healthAddress string)
	// DNSAddress serves the DNS proxy (Istio's 15053) over UDP and TCP: mesh names from the xDS
	// config, everything else forwarded to DNSUpstreams (default: /etc/resolv.conf's
	// nameservers). Empty leaves it off. See docs/dns-proxy.md.
	DNSAddress   string
	DNSUpstreams []string
	// OnDNSStarted, if set, is called with the DNS proxy's bound address once it serves.
	OnDNSStarted func(address string)
}

// Run runs a proxy until ctx is cancelled, then drains gracefully (see DrainDuration) and returns
// nil; POST /quitquitquit stops it at once, without the drain period. It returns an error early
// when the configuration is invalid or a socket cannot be bound.
func Run(ctx context.Context, opts Options) error {
	if opts.DrainDuration <= 0 {
		opts.DrainDuration = DefaultDrainDuration
	}
	b := &bootstrapv3.Bootstrap{}
	switch {
	case opts.Bootstrap != nil:
		b = proto.Clone(opts.Bootstrap).(*bootstrapv3.Bootstrap)
	case opts.BootstrapPath != "":
		var err error
		if b, err = LoadBootstrap(opts.BootstrapPath); err != nil {
			return err
		}
	}
	node := buildNode(b.GetNode(), &opts)
	b.Node = node
	xdsAddr, err := xdsAddress(b, opts.XDSAddress)
	if err != nil {
		return err
	}
	if xdsAddr != "" && node.GetId() == "" {
		return errors.New("a node ID is required to talk to a control plane (--node-id or the bootstrap's node.id)")
	}
	levels := opts.LogLevels
	if levels == nil {
		base := slog.Default()
		if opts.Logger != nil {
			base = opts.Logger
		}
		// Lowest level: the caller's handler keeps deciding what is written.
		levels = NewLogLevels(base.Handler(), slog.LevelDebug-4)
	}
	logFor := func(component string) *slog.Logger { return levels.Logger(component).With("node", node.GetId()) }
	log := logFor("main")

	var client atomic.Pointer[xdsclient.Client]
	store := stats.NewStore()
	self := istiometrics.IdentityFromNode(node.GetId(), node.GetMetadata())
	tel := istiometrics.New(self)
	var agent *identity.Agent
	if opts.Identity != nil {
		cfg := *opts.Identity
		if cfg.Namespace == "" {
			cfg.Namespace = self.Namespace
		}
		if cfg.ServiceAccount == "" {
			cfg.ServiceAccount = self.ServiceAccount
		}
		if cfg.TrustDomain == "" {
			cfg.TrustDomain = node.GetMetadata().GetFields()[KeyTrustDomain].GetStringValue()
		}
		if cfg.Logger == nil {
			cfg.Logger = logFor("secret")
		}
		if agent, err = identity.New(cfg); err != nil {
			return err
		}
	}
	sopts := server.Options{
		Telemetry:    tel,
		Logger:       logFor("config"),
		HTTPLogger:   logFor("http"),
		ConnLogger:   logFor("conn_handler"),
		Stats:        store,
		DrainTimeout: opts.DrainDuration,
		WaitForLDS:   xdsAddr != "",
		WaitForCDS:   xdsAddr != "",
		Versions: func(typeURL string) string {
			if c := client.Load(); c != nil {
				return c.Status().Types[typeURL].AckedVersion
			}
			return ""
		},
	}
	var certs func() *adminv3.Certificates
	if agent != nil {
		st := agent.Store()
		sopts.Secrets, sopts.SecretsReady, sopts.SecretsDump = st, st.Ready, st.SecretsConfigDump
		certs = func() *adminv3.Certificates { return st.Certificates(time.Now()) }
	}
	p := server.New(sopts)
	store.GaugeFunc("control_plane.connected_state", func() int64 {
		if c := client.Load(); c != nil && c.Status().Connected {
			return 1
		}
		return 0
	})
	stopCtx := func() {
		sctx, cancel := context.WithTimeout(context.Background(), opts.DrainDuration)
		defer cancel()
		_ = p.Shutdown(sctx)
	}
	if err := p.ApplyBootstrap(b); err != nil {
		stopCtx()
		return err
	}

	quitCh := make(chan struct{})
	var quitOnce sync.Once
	adm := admin.New(admin.Config{
		Address:    adminAddress(b, opts.AdminAddress),
		Source:     p,
		Stats:      store,
		Logger:     logFor("admin"),
		Quit:       func() { quitOnce.Do(func() { close(quitCh) }) },
		Logging:    levels,
		ReopenLogs: accesslog.Default.Reopen,
		Certs:      certs,
	})
	if err := adm.Start(); err != nil {
		stopCtx()
		return err
	}
	st := status.New(status.Config{
		StatusAddress: opts.StatusAddress,
		HealthAddress: opts.HealthAddress,
		Stats:         store,
		Telemetry:     tel,
		Ready:         p.Ready,
		Logger:        logFor("admin"),
	})
	if err := st.Start(); err != nil {
		stopCtx()
		actx, acancel := context.WithTimeout(context.Background(), time.Second)
		defer acancel()
		_ = adm.Shutdown(actx)
		return err
	}
	if opts.OnStatusStarted != nil {
		opts.OnStatusStarted(st.StatusAddr(), st.HealthAddr())
	}

	var dnsSrv *dnsproxy.Server
	if opts.DNSAddress != "" {
		if dnsSrv, err = dnsproxy.New(dnsproxy.Config{
			Address: opts.DNSAddress, Upstreams: opts.DNSUpstreams, Namespace: self.Namespace, Logger: logFor("dns"),
		}); err == nil {
			err = dnsSrv.Start()
		}
		if err != nil {
			stopCtx()
			actx, acancel := context.WithTimeout(context.Background(), time.Second)
			defer acancel()
			_ = adm.Shutdown(actx)
			_ = st.Shutdown(actx)
			return err
		}
		if opts.OnDNSStarted != nil {
			opts.OnDNSStarted(dnsSrv.Addr())
		}
	}

	// The xDS client keeps running through the drain period, as Envoy's does.
	clientCtx, stopClient := context.WithCancel(context.WithoutCancel(ctx))
	defer stopClient()
	var wg sync.WaitGroup
	if agent != nil {
		// The agent keeps the certificate fresh through the drain period too.
		wg.Go(func() {
			if err := agent.Run(clientCtx); err != nil {
				log.Error("identity agent stopped", "error", err)
			}
		})
	}
	if xdsAddr != "" {
		var w xdsclient.Watcher = p
		if dnsSrv != nil {
			w = dnsSrv.Watch(p)
		}
		c := xdsclient.New(xdsclient.Config{Address: xdsAddr, Node: node, Watcher: w, Logger: logFor("config")})
		client.Store(c)
		p.SetSubscriber(c)
		wg.Go(func() {
			if err := c.Run(clientCtx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("xDS client stopped", "error", err)
			}
		})
	}
	log.Info("trellis-proxy started", "xds", xdsAddr, "admin", adm.Addr())
	if opts.OnStarted != nil {
		opts.OnStarted(adm.Addr())
	}

	graceful := true
	select {
	case <-ctx.Done():
	case <-quitCh:
		graceful = false
	}
	if graceful {
		// Envoy's shutdown drain: /ready says DRAINING so load balancers stop sending, while
		// listeners keep accepting and tell every client to go (Connection: close, GOAWAY).
		log.Info("trellis-proxy draining", "drain", opts.DrainDuration)
		p.DrainListeners(false, true)
		t := time.NewTimer(opts.DrainDuration)
		select {
		case <-t.C:
		case <-quitCh:
			graceful = false
		}
		t.Stop()
	}
	// Listeners stop accepting. Requests in flight get up to the drain duration again (the listener
	// manager's drain timeout; the extra second lets it close what is left itself); after
	// /quitquitquit they are cut at once.
	dctx, cancel := context.WithTimeout(context.Background(), opts.DrainDuration+time.Second)
	defer cancel()
	if !graceful {
		log.Info("trellis-proxy quitting")
		cancel()
	}
	if err := p.Shutdown(dctx); err != nil && graceful {
		log.Warn("drain incomplete", "error", err)
	}
	stopClient()
	wg.Wait()
	actx, acancel := context.WithTimeout(context.Background(), time.Second)
	defer acancel()
	if err := adm.Shutdown(actx); err != nil {
		log.Warn("admin shutdown", "error", err)
	}
	if err := st.Shutdown(actx); err != nil {
		log.Warn("status server shutdown", "error", err)
	}
	if dnsSrv != nil {
		if err := dnsSrv.Shutdown(actx); err != nil {
			log.Warn("dns proxy shutdown", "error", err)
		}
	}
	if err := accesslog.Default.Flush(); err != nil {
		log.Warn("access log flush", "error", err)
	}
	log.Info("trellis-proxy stopped")
	return nil
}

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
	"github.com/trellis-mesh/trellis/internal/proxy/apphealth"
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
	// DefaultTerminationDrainDuration is Istio's terminationDrainDuration: how long a terminating
	// proxy lets requests in flight finish.
	DefaultTerminationDrainDuration = 5 * time.Second
)

// KeyTrustDomain is the node metadata key naming the workload's SPIFFE trust domain (Istio's).
const KeyTrustDomain = "TRUST_DOMAIN"

// KeyProxyConfig is the node metadata key holding the proxy's ProxyConfig as a Struct (Istio's
// agent sends its whole PROXY_CONFIG there); the control plane expects health reports from a proxy
// whose PROXY_CONFIG has a readinessProbe.
const KeyProxyConfig = "PROXY_CONFIG"

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
	// DrainDuration is Envoy's --drain-time-s: how long the connections of a listener that LDS
	// removes or replaces may finish, and the graceful period of /drain_listeners?graceful.
	// Default 5s.
	DrainDuration time.Duration
	// TerminationDrainDuration is Istio's terminationDrainDuration, the termination drain (see
	// Run): the longest requests in flight get once the proxy is told to stop. Zero means
	// DrainDuration (cmd/trellis-proxy sets it: default 5s, as Istio).
	TerminationDrainDuration time.Duration
	// DrainFullDuration makes the termination drain always last TerminationDrainDuration, Istio's
	// default (EXIT_ON_ZERO_ACTIVE_CONNECTIONS=false). Without it the proxy exits as soon as no
	// downstream connection is open on any listener (after MinimumDrainDuration): at once when
	// nothing is in flight, e.g. a native sidecar stopped after its app has exited.
	DrainFullDuration bool
	// MinimumDrainDuration is Istio's MINIMUM_DRAIN_DURATION: the termination drain lasts at
	// least this long even with no connections left (default 0).
	MinimumDrainDuration time.Duration
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
	// ProxyConfig is Istio's PROXY_CONFIG, from apphealth.ParseProxyConfig (cmd/trellis-proxy reads
	// $PROXY_CONFIG). Its Metadata becomes the node metadata PROXY_CONFIG, over the bootstrap's and
	// Metadata's. With a control plane, its ReadinessProbe (or, when ProxyConfig is nil, the
	// readinessProbe of a PROXY_CONFIG the bootstrap's node metadata carries) is run for as long as
	// the proxy runs, and each transition of the application's health is reported on the ADS stream
	// (Istio's HealthInformation), so that an auto-registered WorkloadEntry is an endpoint only while
	// its application is healthy. The proxy's own readiness counts: a proxy not (or no longer) ready
	// reports unhealthy, as Istio's agent does.
	ProxyConfig *apphealth.ProxyConfig
}

// Run runs a proxy until ctx is cancelled or POST /quitquitquit arrives on the status port
// (Istio's pilot-agent), then goes through the termination drain and returns nil: /ready and
// /healthz/ready answer DRAINING, inbound listeners stop accepting at once (new connections are
// refused, so clients' proxies pick another endpoint), their connections close after the response
// in flight (HTTP/1 Connection: close, HTTP/2 GOAWAY), and outbound listeners keep serving the
// app. The drain ends when no downstream connection is left (unless DrainFullDuration) or after
// TerminationDrainDuration, when whatever is left is cut. POST /quitquitquit on the admin port
// (Envoy's) stops it at once, without the drain. It returns an error early when the configuration
// is invalid or a socket cannot be bound.
func Run(ctx context.Context, opts Options) error {
	if opts.DrainDuration <= 0 {
		opts.DrainDuration = DefaultDrainDuration
	}
	if opts.TerminationDrainDuration <= 0 {
		opts.TerminationDrainDuration = opts.DrainDuration
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

	probe, err := readinessProbe(node, opts.ProxyConfig)
	if err != nil {
		return err
	}
	if probe != nil && xdsAddr == "" {
		log.Warn("readinessProbe not run: no control plane to report the application's health to")
		probe = nil
	}
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
		// Ready (what `trellis-proxy wait` polls) waits for routes and endpoints too.
		WaitForWarming: xdsAddr != "",
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
	var health *apphealth.Runner
	if probe != nil {
		health, err = apphealth.New(apphealth.Config{
			Probe:      probe,
			ProxyReady: p.Ready, // what /healthz/ready answers
			Report: func(healthy bool, message string) {
				if c := client.Load(); c != nil {
					c.SetHealth(healthy, message)
				}
			},
			Logger: logFor("healthcheck"),
		})
		if err != nil {
			stopCtx()
			return err
		}
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
	termCh := make(chan struct{})
	var termOnce sync.Once
	st := status.New(status.Config{
		Quit:          func() { termOnce.Do(func() { close(termCh) }) },
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
		if health != nil {
			// Through the drain too: the proxy is DRAINING then, which the check reports.
			wg.Go(func() { health.Run(clientCtx) })
		}
	}
	log.Info("trellis-proxy started", "xds", xdsAddr, "admin", adm.Addr())
	if opts.OnStarted != nil {
		opts.OnStarted(adm.Addr())
	}

	graceful := true
	select {
	case <-ctx.Done():
	case <-termCh:
		log.Info("/quitquitquit on the status port")
	case <-quitCh:
		graceful = false
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if graceful {
		log.Info("trellis-proxy draining", "termination_drain", opts.TerminationDrainDuration,
			"exit_on_zero_active_connections", !opts.DrainFullDuration, "minimum_drain", opts.MinimumDrainDuration)
		// The listeners' own drain timeout is a backstop: terminationDrain's deadline cuts first.
		p.Terminate(opts.TerminationDrainDuration + time.Second)
		if !terminationDrain(p, &opts, quitCh, log) {
			cancel() // the drain deadline, or /quitquitquit on the admin port: cut what is left
		}
	} else {
		log.Info("trellis-proxy quitting")
		cancel()
	}
	if err := p.Shutdown(shutdownCtx); err != nil && graceful {
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

// terminationDrain waits for the end of the termination drain: no downstream connection left
// (after the minimum drain, unless DrainFullDuration), or the drain deadline, or quit. It reports
// whether the connections finished by themselves.
func terminationDrain(p *server.Proxy, opts *Options, quit <-chan struct{}, log *slog.Logger) bool {
	start := time.Now()
	deadline := time.NewTimer(opts.TerminationDrainDuration)
	defer deadline.Stop()
	// Istio's agent polls the stats every second; a tenth keeps a Job's exit prompt.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if !opts.DrainFullDuration && time.Since(start) >= opts.MinimumDrainDuration {
			if n := p.ActiveConnections(); n == 0 {
				log.Info("no active connections left; exiting", "drained_in", time.Since(start).Round(time.Millisecond))
				return true
			}
		}
		select {
		case <-deadline.C:
			if n := p.ActiveConnections(); n > 0 {
				log.Warn("termination drain deadline: closing connections still open", "connections", n)
				return false
			}
			return true
		case <-quit:
			return false
		case <-tick.C:
		}
	}
}

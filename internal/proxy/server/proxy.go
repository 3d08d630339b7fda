package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/hcm"
	"github.com/trellis-mesh/trellis/internal/proxy/istiometrics"
	"github.com/trellis-mesh/trellis/internal/proxy/listener"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/tracing"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsclient"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// Type URLs of the resources a Proxy accepts: the xDS client's.
const (
	ListenerType = xdsclient.ListenerType
	RouteType    = xdsclient.RouteType
	ClusterType  = xdsclient.ClusterType
	EndpointType = xdsclient.EndpointType
)

// Subscriber is the part of the xDS client the proxy drives: which RDS and EDS names it wants.
type Subscriber interface {
	Subscribe(typeURL string, names []string)
}

// Options configures a Proxy.
type Options struct {
	// Logger logs config updates (Envoy's "config" component). HTTPLogger, for the connection
	// managers, and ConnLogger, for listeners and connections (Envoy's "http" and "conn_handler"),
	// default to it.
	Logger, HTTPLogger, ConnLogger *slog.Logger
	// Stats receives every metric; nil means a fresh store.
	Stats *stats.Store
	// DrainTimeout bounds how long a removed listener's requests may take (default 5s).
	DrainTimeout time.Duration
	// WaitForLDS and WaitForCDS hold readiness until the first LDS / CDS update is applied.
	// ApplyBootstrap turns them on when the bootstrap has lds_config / cds_config.
	WaitForLDS, WaitForCDS bool
	// WaitForWarming also holds readiness, once, until every RDS and EDS name the config needs has
	// arrived (Envoy's init manager: listener and cluster warming), or InitialFetchTimeout (default
	// 15s, Envoy's initial_fetch_timeout) has passed since Ready first found it waiting. With it,
	// `trellis-proxy wait` returns only when the app's first request can be routed.
	WaitForWarming      bool
	InitialFetchTimeout time.Duration
	// Versions reports the last accepted version_info of a type, for /config_dump; may be nil.
	Versions func(typeURL string) string
	// Telemetry is the proxy's Istio telemetry (identity and metrics) for the istio.stats filters;
	// nil leaves them inert.
	Telemetry *istiometrics.Telemetry
	// Secrets serves the SDS secrets TLS contexts reference (the identity agent's store); nil
	// fails their handshakes. SecretsReady, when set, holds readiness until it reports true (the
	// agent holds its first certificate).
	Secrets      xdsconfig.SecretSource
	SecretsReady func() bool
	// SecretsDump, when set, adds the secrets section to /config_dump (private keys redacted).
	SecretsDump func() *adminv3.SecretsConfigDump
}

// Proxy is the running data plane. Its methods are safe for concurrent use.
type Proxy struct {
	log       *slog.Logger
	httpLog   *slog.Logger
	stats     *stats.Store
	listeners *listener.Manager
	versions  func(string) string
	envOpts   []filters.EnvOption
	parseOpts []xdsconfig.Option
	// secretsReady holds readiness until the identity agent has a certificate; nil: no agent.
	secretsReady func() bool
	secretsDump  func() *adminv3.SecretsConfigDump
	// localCert is the workload certificate listeners present (XFCC's By); nil without an agent.
	localCert func() *tls.Certificate
	snap      atomic.Pointer[hcm.Snapshot]
	draining  atomic.Bool
	// tracers export the connection managers' spans; they outlive config pushes.
	tracers *tracing.Registry

	mu         sync.Mutex
	sub        Subscriber
	bootstrap  *bootstrapv3.Bootstrap
	bootLoaded time.Time
	static     resources
	dynamic    resources
	failures   map[string]map[string]*failure // type URL → name → last rejected version of it
	clusters   map[string]*upstream.Cluster   // running, static and dynamic
	rdsNames   []string
	edsNames   []string
	waitLDS    bool
	waitCDS    bool
	gotLDS     bool
	gotCDS     bool
	// waitWarm, live and warmingSince hold the first LIVE until RDS and EDS have arrived: live
	// latches it, warmingSince is when Ready first found the config waiting.
	waitWarm     bool
	live         bool
	warmingSince time.Time
	fetchTimeout time.Duration
	generation   uint64

	xds map[string]*xdsStats
}

type resources struct {
	listeners map[string]*listenerEntry
	routes    map[string]*routeEntry
	clusters  map[string]*clusterEntry
	endpoints map[string]*endpointEntry
}

func newResources() resources {
	return resources{
		listeners: map[string]*listenerEntry{},
		routes:    map[string]*routeEntry{},
		clusters:  map[string]*clusterEntry{},
		endpoints: map[string]*endpointEntry{},
	}
}

type listenerEntry struct {
	raw *listenerv3.Listener
	cfg *xdsconfig.Listener
	// chains are the listener's filter chains, built once per config (handlers hold their stats).
	chains  []listener.Chain
	def     *listener.Chain
	gen     string // changes whenever the listener's config does
	updated time.Time
}

type routeEntry struct {
	raw     *routev3.RouteConfiguration
	table   *route.Table
	updated time.Time
}

type clusterEntry struct {
	raw     *clusterv3.Cluster
	cfg     upstream.Config
	updated time.Time
}

type endpointEntry struct {
	raw     *endpointv3.ClusterLoadAssignment
	eps     []upstream.Endpoint
	updated time.Time
}

type failure struct {
	raw     proto.Message
	details string
	at      time.Time
}

type xdsStats struct{ attempt, success, rejected *stats.Counter }

// New returns a proxy with no configuration: no listeners, and not ready.
func New(opts Options) *Proxy {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HTTPLogger == nil {
		opts.HTTPLogger = opts.Logger
	}
	if opts.ConnLogger == nil {
		opts.ConnLogger = opts.Logger.With("component", "listener")
	}
	if opts.Stats == nil {
		opts.Stats = stats.NewStore()
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	p := &Proxy{
		log:          opts.Logger,
		httpLog:      opts.HTTPLogger,
		stats:        opts.Stats,
		listeners:    listener.NewManager(opts.ConnLogger, opts.Stats, opts.DrainTimeout),
		versions:     opts.Versions,
		envOpts:      []filters.EnvOption{filters.WithTelemetry(opts.Telemetry)},
		parseOpts:    []xdsconfig.Option{xdsconfig.WithSecrets(opts.Secrets)},
		secretsReady: opts.SecretsReady,
		localCert:    localCertificate(opts.Secrets),
		secretsDump:  opts.SecretsDump,
		static:       newResources(),
		dynamic:      newResources(),
		failures:     map[string]map[string]*failure{},
		clusters:     map[string]*upstream.Cluster{},
		waitLDS:      opts.WaitForLDS,
		waitCDS:      opts.WaitForCDS,
		waitWarm:     opts.WaitForWarming,
		fetchTimeout: cmp.Or(opts.InitialFetchTimeout, 15*time.Second),
		xds:          map[string]*xdsStats{},
	}
	for typeURL, prefix := range map[string]string{
		ListenerType: "listener_manager.lds.", ClusterType: "cluster_manager.cds.",
		RouteType: "control_plane.rds.", EndpointType: "control_plane.eds.",
	} {
		p.xds[typeURL] = &xdsStats{
			attempt:  p.stats.Counter(prefix + "update_attempt"),
			success:  p.stats.Counter(prefix + "update_success"),
			rejected: p.stats.Counter(prefix + "update_rejected"),
		}
	}
	p.stats.GaugeFunc("cluster_manager.active_clusters", func() int64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return int64(len(p.clusters))
	})
	p.snap.Store(&hcm.Snapshot{Routes: map[string]*route.Table{}, Clusters: map[string]*upstream.Cluster{}})
	p.envOpts = append(p.envOpts, filters.WithClusters(p.cluster))
	p.tracers = tracing.NewRegistry(p.cluster, p.stats, p.log.With("component", "tracing"))
	return p
}

// Stats returns the proxy's metric store.
func (p *Proxy) Stats() *stats.Store { return p.stats }

// SetSubscriber installs the xDS client the proxy tells which RDS and EDS names it needs. The
// current needs are sent at once.
func (p *Proxy) SetSubscriber(s Subscriber) {
	p.mu.Lock()
	p.sub = s
	rds, eds := p.rdsNames, p.edsNames
	p.mu.Unlock()
	if s != nil {
		s.Subscribe(RouteType, rds)
		s.Subscribe(EndpointType, eds)
	}
}

// OnResources applies the complete current set of one resource type, as the xDS client's Watcher.
// A non-nil error means nothing changed.
func (p *Proxy) OnResources(typeURL string, resources []proto.Message) error {
	st := p.xds[typeURL]
	if st == nil {
		return fmt.Errorf("resource type %q is not supported by trellis-proxy", typeURL)
	}
	st.attempt.Inc()
	p.mu.Lock()
	var err error
	switch typeURL {
	case ListenerType:
		err = p.updateListeners(resources)
	case RouteType:
		err = p.updateRoutes(resources)
	case ClusterType:
		err = p.updateClusters(resources)
	case EndpointType:
		err = p.updateEndpoints(resources)
	}
	if err != nil {
		p.recordFailure(typeURL, resources, err)
	} else {
		delete(p.failures, typeURL)
	}
	sub, rds, eds, rdsChanged, edsChanged := p.subscriptionsLocked()
	p.mu.Unlock()

	if err != nil {
		st.rejected.Inc()
		p.log.Warn("xDS update rejected", "type", typeURL, "error", err)
		return err
	}
	st.success.Inc()
	if sub != nil && rdsChanged {
		sub.Subscribe(RouteType, rds)
	}
	if sub != nil && edsChanged {
		sub.Subscribe(EndpointType, eds)
	}
	return nil
}

// subscriptionsLocked recomputes the RDS and EDS names the config needs.
func (p *Proxy) subscriptionsLocked() (sub Subscriber, rds, eds []string, rdsChanged, edsChanged bool) {
	for _, set := range []map[string]*listenerEntry{p.static.listeners, p.dynamic.listeners} {
		for _, l := range set {
			for _, h := range l.cfg.HTTPManagers() {
				if n := h.RDSName; n != "" {
					rds = append(rds, n)
				}
			}
		}
	}
	for _, c := range p.clusters {
		if cfg := c.Config(); cfg.Type == upstream.EDS {
			eds = append(eds, cfg.EDSServiceName)
		}
	}
	slices.Sort(rds)
	slices.Sort(eds)
	rds, eds = slices.Compact(rds), slices.Compact(eds)
	rdsChanged, edsChanged = !slices.Equal(rds, p.rdsNames), !slices.Equal(eds, p.edsNames)
	p.rdsNames, p.edsNames = rds, eds
	// The xDS client forgets resources it no longer subscribes to without telling the watcher.
	pruned := false
	for name := range p.dynamic.routes {
		if _, ok := slices.BinarySearch(rds, name); !ok {
			delete(p.dynamic.routes, name)
			pruned = true
		}
	}
	for name := range p.dynamic.endpoints {
		if _, ok := slices.BinarySearch(eds, name); !ok {
			delete(p.dynamic.endpoints, name)
		}
	}
	if pruned {
		p.publishLocked()
	}
	return p.sub, rds, eds, rdsChanged, edsChanged
}

// recordFailure remembers, for /config_dump's error_state, the resources of a rejected update that
// differ from what is serving.
func (p *Proxy) recordFailure(typeURL string, msgs []proto.Message, err error) {
	now := time.Now()
	m := map[string]*failure{}
	for _, msg := range msgs {
		name := xdsclient.ResourceName(msg)
		var current proto.Message
		switch typeURL {
		case ListenerType:
			if e := p.dynamic.listeners[name]; e != nil {
				current = e.raw
			}
		case ClusterType:
			if e := p.dynamic.clusters[name]; e != nil {
				current = e.raw
			}
		}
		if current == nil || !proto.Equal(current, msg) {
			m[name] = &failure{raw: msg, details: err.Error(), at: now}
		}
	}
	p.failures[typeURL] = m
}

// nextGen returns a fresh listener generation.
func (p *Proxy) nextGen() string {
	p.generation++
	return strconv.FormatUint(p.generation, 10)
}

// publishLocked makes the current routes and clusters visible to new requests.
func (p *Proxy) publishLocked() {
	s := &hcm.Snapshot{
		Routes:   make(map[string]*route.Table, len(p.dynamic.routes)),
		Clusters: make(map[string]*upstream.Cluster, len(p.clusters)),
	}
	for name, r := range p.dynamic.routes {
		s.Routes[name] = r.table
	}
	for name, c := range p.clusters {
		s.Clusters[name] = c
	}
	p.snap.Store(s)
}

// Ready reports Envoy's server state: "LIVE" once the bootstrap is applied, the first LDS and CDS
// updates it waits for have been, and the identity agent (if any) holds its certificate;
// "PRE_INITIALIZING" before, "DRAINING" after Shutdown began.
func (p *Proxy) Ready() (state string, ready bool) {
	if p.draining.Load() {
		return "DRAINING", false
	}
	if p.secretsReady != nil && !p.secretsReady() {
		return "PRE_INITIALIZING", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bootLoaded.IsZero() || (p.waitLDS && !p.gotLDS) || (p.waitCDS && !p.gotCDS) {
		return "PRE_INITIALIZING", false
	}
	if p.waitWarm && !p.live && !p.warmLocked() {
		if p.warmingSince.IsZero() {
			p.warmingSince = time.Now()
		}
		if time.Since(p.warmingSince) < p.fetchTimeout {
			return "PRE_INITIALIZING", false
		}
		p.log.Warn("initial fetch timeout: LIVE without every route and endpoint set", "timeout", p.fetchTimeout)
	}
	p.live = true // once LIVE, later updates do not take readiness back
	return "LIVE", true
}

// warmLocked reports whether every RDS and EDS name the config needs has arrived.
func (p *Proxy) warmLocked() bool {
	for _, n := range p.rdsNames {
		if p.dynamic.routes[n] == nil {
			return false
		}
	}
	for _, n := range p.edsNames {
		if p.dynamic.endpoints[n] == nil {
			return false
		}
	}
	return true
}

// Listeners lists the running listeners with their bound addresses.
func (p *Proxy) Listeners() []listener.Info { return p.listeners.Listeners() }

// Clusters lists the running clusters, sorted by name.
func (p *Proxy) Clusters() []*upstream.Cluster {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*upstream.Cluster, 0, len(p.clusters))
	for _, c := range p.clusters {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *upstream.Cluster) int {
		switch {
		case a.Name() < b.Name():
			return -1
		case a.Name() > b.Name():
			return 1
		}
		return 0
	})
	return out
}

// DrainListeners is Envoy's POST /drain_listeners: it drains every listener, or only those with
// traffic_direction INBOUND, gracefully (a drain period of the drain timeout in which listeners
// still accept but close each connection after its response, then they stop) or at once. The
// server state becomes DRAINING, so /ready answers 503 from now on.
func (p *Proxy) DrainListeners(inboundOnly, graceful bool) {
	p.draining.Store(true)
	p.listeners.Drain(inboundOnly, graceful)
}

// Terminate starts a terminating proxy's drain (Istio's pilot-agent on SIGTERM): /ready answers
// DRAINING, inbound listeners stop accepting at once, so new connections are refused and the
// client's proxy picks another endpoint, and their connections close after the response in
// flight (HTTP/1 Connection: close, HTTP/2 GOAWAY; idle ones now), within timeout. Outbound
// listeners keep serving: the app may still call out while it finishes. Shutdown ends it.
func (p *Proxy) Terminate(timeout time.Duration) {
	p.draining.Store(true)
	p.listeners.SetDrainTimeout(timeout)
	p.listeners.Drain(true, false)
}

// ActiveConnections is the number of downstream connections open on every listener, stopped
// ones included (the sum of their downstream_cx_active): what Istio's
// EXIT_ON_ZERO_ACTIVE_CONNECTIONS waits to reach zero.
func (p *Proxy) ActiveConnections() int64 {
	var n int64
	for _, st := range p.stats.Snapshot(activeConnectionsStat) {
		n += st.Value
	}
	return n
}

// activeConnectionsStat matches every listener's downstream_cx_active (Envoy names them
// listener.<address>.downstream_cx_active; the admin server is not a listener here).
var activeConnectionsStat = regexp.MustCompile(`^listener\..+\.downstream_cx_active$`)

// Shutdown stops the listeners accepting, waits for requests in flight to finish (bounded by the
// drain timeout and ctx), and closes upstream connections.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.draining.Store(true)
	err := p.listeners.Shutdown(ctx)
	_ = p.tracers.Close(ctx) // flushes the spans of the requests that just finished
	p.mu.Lock()
	for _, c := range p.clusters {
		c.Close()
	}
	p.mu.Unlock()
	return err
}

// localCertificate reads the workload certificate from the identity agent's secrets.
func localCertificate(s xdsconfig.SecretSource) func() *tls.Certificate {
	if s == nil {
		return nil
	}
	return func() *tls.Certificate {
		c, err := s.Certificate(xdsconfig.SDSWorkloadSecret)
		if err != nil {
			return nil
		}
		return c
	}
}

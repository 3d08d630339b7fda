package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/h1"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
)

// Stats are a cluster's Envoy-named counters (cluster.<name>.*).
type Stats struct {
	RqTotal                             *stats.Counter
	RqClass                             stats.StatusClasses
	RqTimeout, RqCompleted              *stats.Counter
	CxTotal, CxConnectFail, NoneHealthy *stats.Counter
	CxActive, RqActive                  *stats.Gauge
	MembershipTotal, MembershipHealthy  *stats.Gauge
	MembershipDegraded                  *stats.Gauge
}

func newStats(s *stats.Store, cluster string) Stats {
	p := "cluster." + cluster + "."
	return Stats{
		RqTotal:            s.Counter(p + "upstream_rq_total"),
		RqClass:            s.StatusClasses(p + "upstream_rq_"),
		RqTimeout:          s.Counter(p + "upstream_rq_timeout"),
		RqCompleted:        s.Counter(p + "upstream_rq_completed"),
		CxTotal:            s.Counter(p + "upstream_cx_total"),
		CxConnectFail:      s.Counter(p + "upstream_cx_connect_fail"),
		NoneHealthy:        s.Counter(p + "upstream_cx_none_healthy"),
		CxActive:           s.Gauge(p + "upstream_cx_active"),
		RqActive:           s.Gauge(p + "upstream_rq_active"),
		MembershipTotal:    s.Gauge(p + "membership_total"),
		MembershipHealthy:  s.Gauge(p + "membership_healthy"),
		MembershipDegraded: s.Gauge(p + "membership_degraded"),
	}
}

// RecordStatus counts a response by class (upstream_rq_2xx and friends).
func (s *Stats) RecordStatus(code int) {
	s.RqCompleted.Inc()
	s.RqClass.Record(code)
}

// Cluster is a running cluster. All methods are safe for concurrent use.
type Cluster struct {
	cfg   Config
	Stats Stats

	h1 *h1.Transport
	h2 *http.Transport

	hosts atomic.Pointer[hostSet]
	lb    lbState

	cb *breakers
	od *outlierDetector // nil without outlier_detection
	hc *healthChecker   // nil without health_checks

	// done is closed by Close; the cluster's goroutines (health checks, outlier timer) stop on it.
	done      chan struct{}
	closeOnce sync.Once

	mu               sync.Mutex
	pool             map[string]*Host // by address (and transport), so hosts outlive endpoint updates
	list             []*Host          // the current hosts in EDS order
	overprovisioning uint32
}

// New starts a cluster from cfg, with cfg.Endpoints as its initial endpoints. Metrics are registered
// in store under the cluster's name. Close stops its health checks and timers.
func New(cfg Config, store *stats.Store) *Cluster {
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	cfg.LBConfig = cfg.LBConfig.withDefaults()
	statName := cfg.StatName
	if statName == "" {
		statName = cfg.Name
	}
	c := &Cluster{
		cfg:              cfg,
		Stats:            newStats(store, statName),
		pool:             make(map[string]*Host),
		done:             make(chan struct{}),
		overprovisioning: DefaultOverprovisioningFactor,
	}
	c.cb = newBreakers(cfg.CircuitBreakers, store, "cluster."+statName+".")
	if cfg.Outlier != nil {
		c.od = newOutlierDetector(c, *cfg.Outlier, store, "cluster."+statName+".outlier_detection.")
	}
	if cfg.HealthCheck != nil {
		c.hc = newHealthChecker(c, *cfg.HealthCheck, store, "cluster."+statName+".health_check.")
	}
	switch cfg.Protocol {
	case HTTP1:
		c.h1 = c.newH1Transport()
	case HTTP2:
		c.h2 = c.newTransport()
	case UseDownstream:
		c.h1, c.h2 = c.newH1Transport(), c.newTransport()
	}
	c.SetEndpoints(cfg.Endpoints)
	if c.od != nil {
		go c.od.run()
	}
	return c
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.cfg.Name }

// Config returns the cluster's configuration.
func (c *Cluster) Config() Config { return c.cfg }

// SetEndpoints replaces the cluster's endpoints. Requests already under way keep the host they
// picked; hosts that stay keep their counters, health-check and outlier state. Under active health
// checking a host EDS removes stays (flagged pending_dynamic_removal) until it fails a check, as in
// Envoy, unless the cluster sets ignore_health_on_host_removal.
func (c *Cluster) SetEndpoints(eps []Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		return
	default:
	}
	all := make([]*Host, 0, len(eps))
	next := make(map[string]*Host, len(eps))
	c.overprovisioning = DefaultOverprovisioningFactor
	for _, ep := range eps {
		key, ts := ep.Address, 0
		if len(c.cfg.TransportMatches) > 0 {
			// A host whose transport changes is a new host: its pooled connections are the old
			// transport's.
			ts = c.cfg.transportFor(ep.TransportSocketMatch)
			key = transportTarget(ts, ep.Address)
		}
		if _, dup := next[key]; dup {
			continue
		}
		if ep.Overprovisioning > 0 {
			c.overprovisioning = ep.Overprovisioning
		}
		h := c.pool[key]
		if h == nil {
			h = newHost(ep.Address)
			if key != ep.Address {
				h.target = key
			}
			if c.hc != nil {
				// Envoy: a new host under active health checking is not used until a check passes.
				h.setFlag(FailedActiveHC|PendingActiveHC, true)
			}
		}
		h.weight.Store(max(ep.Weight, 1))
		h.priority.Store(ep.Priority)
		h.locality.Store(&endpointMeta{Locality: ep.Locality, LocalityWeight: ep.LocalityWeight,
			Hostname: ep.Hostname, IstioWorkload: ep.IstioWorkload, HealthCheckPort: ep.HealthCheckPort})
		h.setFlag(FailedEDSHealth, !ep.Healthy)
		h.setFlag(DegradedEDSHealth, ep.Degraded)
		h.setFlag(PendingDynamicRemoval, false)
		next[key] = h
		all = append(all, h)
	}
	for addr, h := range c.pool {
		if _, stays := next[addr]; stays {
			continue
		}
		if c.hc != nil && !c.cfg.IgnoreHealthOnHostRemoval && h.Flags()&FailedActiveHC == 0 {
			h.setFlag(PendingDynamicRemoval, true)
			next[addr] = h
			all = append(all, h)
			continue
		}
		c.removeHostLocked(h)
	}
	c.pool = next
	c.list = all
	if c.hc != nil {
		for _, h := range all {
			c.hc.start(h)
		}
	}
	c.rebuildLocked()
}

// removeHostLocked forgets h: its health checks stop and its outlier state goes.
func (c *Cluster) removeHostLocked(h *Host) {
	if c.hc != nil {
		c.hc.stop(h)
	}
	if c.od != nil {
		c.od.forget(h)
	}
}

// rebuildLocked recomputes the load balancer's view after endpoints or host health changed.
func (c *Cluster) rebuildLocked() {
	hs := buildHostSet(c.list, &c.cfg, c.overprovisioning)
	c.hosts.Store(hs)
	c.Stats.MembershipTotal.Set(int64(len(c.list)))
	c.Stats.MembershipHealthy.Set(int64(hs.healthyCount))
	c.Stats.MembershipDegraded.Set(int64(len(c.list) - hs.healthyCount - hs.unhealthy()))
}

// healthChanged rebuilds the load balancer after a health check or outlier decision changed a
// host's health.
func (c *Cluster) healthChanged() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rebuildLocked()
}

// Hosts returns the cluster's current hosts, healthy or not.
func (c *Cluster) Hosts() []*Host { return slices.Clone(c.hosts.Load().all) }

// Pick chooses a host for a request with the cluster's LB policy, or returns nil when no host may
// be picked (Envoy's "no healthy upstream"). Hash-based policies pick at random: use PickHash for
// requests with a hash. ORIGINAL_DST clusters pick with OriginalDst instead.
func (c *Cluster) Pick() *Host { return pick(c.hosts.Load(), &c.cfg, &c.lb, 0, false) }

// PickHash is Pick for a request whose route computed a hash (RouteAction.hash_policy): RING_HASH
// and MAGLEV clusters send equal hashes to the same host; other policies ignore it.
func (c *Cluster) PickHash(hash uint64) *Host { return pick(c.hosts.Load(), &c.cfg, &c.lb, hash, true) }

// IsOriginalDst reports whether requests choose their own target (ORIGINAL_DST clusters).
func (c *Cluster) IsOriginalDst() bool { return c.cfg.Type == OriginalDst }

// OriginalDst returns the host for an ORIGINAL_DST request: the x-envoy-original-dst-host header
// value when the cluster allows it and it is set, else the downstream connection's local address.
func (c *Cluster) OriginalDst(header, localAddr string) *Host {
	addr := localAddr
	if c.cfg.OriginalDstFromHeader && header != "" {
		addr = header
	}
	if addr == "" {
		return nil
	}
	h := newHost(addr)
	h.weight.Store(1)
	return h
}

// Transport returns the round tripper for a request whose downstream side used HTTP/2 (or not).
func (c *Cluster) Transport(downstreamHTTP2 bool) http.RoundTripper {
	if c.h2 != nil && (c.h1 == nil || downstreamHTTP2) {
		return c.h2
	}
	return c.h1
}

// closeGrace is when Close looks again for connections that were busy at first.
const closeGrace = 5 * time.Second

// Close stops the cluster's health checks and outlier timer, and drops its idle pooled connections
// now and again after closeGrace, by which time most requests that were under way have returned
// theirs; stragglers go with the idle timeout. Call it when the cluster is removed or replaced.
// Calling it again does nothing.
func (c *Cluster) Close() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		close(c.done)
		c.mu.Unlock()
		if c.hc != nil {
			c.hc.wait()
		}
		if c.od != nil {
			<-c.od.stopped
		}
		c.closeIdle()
		time.AfterFunc(closeGrace, c.closeIdle)
	})
}

func (c *Cluster) closeIdle() {
	if c.h1 != nil {
		c.h1.CloseIdleConnections()
	}
	if c.h2 != nil {
		c.h2.CloseIdleConnections()
	}
}

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// dialer opens upstream connections for both HTTP transports and the TCP proxy: within
// max_connections, counted per cluster and per host, failures wrapped in ConnectError.
func (c *Cluster) dialer() dialFunc {
	dialer := &net.Dialer{Timeout: c.cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	var bound *net.Dialer // for TCP when upstream_bind_config sets a source address
	if c.cfg.SourceIP.IsValid() {
		d := *dialer
		d.LocalAddr = &net.TCPAddr{IP: c.cfg.SourceIP.AsSlice()}
		bound = &d
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var host *Host
		if _, real, key, ok := c.transportTarget(addr); ok {
			host = c.hostByKey(key)
			addr = real
		}
		if path, ok := unixPath(addr); ok {
			network, addr = "unix", path
		} else if path, ok := strings.CutPrefix(addr, UnixPrefix); ok {
			network, addr = "unix", path
		}
		if c.cfg.Type == OriginalDst {
			// upstream_bind_config holds here too: Istio's InboundPassthroughCluster connects
			// from 127.0.0.6, which iptables lets through instead of capturing it again.
			d := dialer
			if bound != nil && network != "unix" {
				d = bound
			}
			return c.dialOriginalDst(ctx, d, network, addr)
		}
		// max_connections is enforced here, below whatever transport pools the connections.
		if err := c.cb.acquireConnection(ctx, c.cfg.ConnectTimeout); err != nil {
			return nil, err
		}
		if host == nil {
			host = c.hostByDialAddr(network, addr)
		}
		d := dialer
		if bound != nil && network != "unix" {
			d = bound
		}
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			c.cb.releaseConnection()
			c.Stats.CxConnectFail.Inc()
			if host != nil {
				host.cxConnectFail.Add(1)
			}
			return nil, &ConnectError{Address: addr, Err: err}
		}
		c.Stats.CxTotal.Inc()
		c.Stats.CxActive.Inc()
		cc := &countedConn{Conn: conn, active: c.Stats.CxActive, slot: c.cb}
		if host != nil {
			host.cxTotal.Add(1)
			host.cxActive.Add(1)
			cc.hostActive = &host.cxActive
		}
		return cc, nil
	}
}

// newH1Transport is the HTTP/1.1 transport: trellis's own codec (internal/proxy/h1), which runs a
// round trip on the caller's goroutine. Bodies pass through untouched (no compression).
func (c *Cluster) newH1Transport() *h1.Transport {
	return &h1.Transport{
		DialContext:         c.withTLS(c.dialer(), "http/1.1"),
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     c.cfg.IdleTimeout,
	}
}

// newTransport is the HTTP/2 (prior knowledge) transport.
func (c *Cluster) newTransport() *http.Transport {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{
		Proxy:                 nil, // never the environment's HTTP_PROXY: the proxy is the one applications use
		DialContext:           c.withTLS(c.dialer(), "h2"),
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       c.cfg.IdleTimeout,
		DisableCompression:    true, // bodies pass through untouched
		ExpectContinueTimeout: time.Second,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
		Protocols:             &p,
	}
}

// ConnectError is a failure to open a connection to an upstream host.
type ConnectError struct {
	Address string
	Err     error
}

func (e *ConnectError) Error() string { return "connect to " + e.Address + ": " + e.Err.Error() }

func (e *ConnectError) Unwrap() error { return e.Err }

// IsConnectFailure reports whether err (from a round trip) means no connection could be opened.
func IsConnectFailure(err error) bool {
	var ce *ConnectError
	return errors.As(err, &ce)
}

// dialOriginalDst dials for ORIGINAL_DST clusters, whose hosts are made per request: cluster
// counters and max_connections only.
func (c *Cluster) dialOriginalDst(ctx context.Context, dialer *net.Dialer, network, addr string) (net.Conn, error) {
	if err := c.cb.acquireConnection(ctx, c.cfg.ConnectTimeout); err != nil {
		return nil, err
	}
	conn, err := dialer.DialContext(ctx, network, addr)
	if err != nil {
		c.cb.releaseConnection()
		c.Stats.CxConnectFail.Inc()
		return nil, &ConnectError{Address: addr, Err: err}
	}
	c.Stats.CxTotal.Inc()
	c.Stats.CxActive.Inc()
	return &countedConn{Conn: conn, active: c.Stats.CxActive, slot: c.cb}, nil
}

// hostByDialAddr finds the host a connection is for, to count it per host (once per connection,
// not per request).
func (c *Cluster) hostByDialAddr(network, addr string) *Host {
	if network == "unix" {
		addr = UnixPrefix + addr
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pool[addr]
}

// hostByKey finds a host by its pool key.
func (c *Cluster) hostByKey(key string) *Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pool[key]
}

// countedConn keeps upstream_cx_active, the host's cx_active and the max_connections slot right
// however the transport ends a connection.
type countedConn struct {
	net.Conn
	active     *stats.Gauge
	hostActive *atomic.Int64
	slot       *breakers
	once       sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.active.Dec()
		if c.hostActive != nil {
			c.hostActive.Add(-1)
		}
		c.slot.releaseConnection()
	})
	return c.Conn.Close()
}

// removePending drops a host EDS had removed once it fails active health checking.
func (c *Cluster) removePending(h *Host) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pool[h.Address] != h || h.Flags()&PendingDynamicRemoval == 0 {
		return
	}
	key := h.Address
	if len(c.cfg.TransportMatches) > 0 {
		key = h.target
	}
	delete(c.pool, key)
	c.list = slices.DeleteFunc(slices.Clone(c.list), func(x *Host) bool { return x == h })
	c.removeHostLocked(h)
	c.rebuildLocked()
}

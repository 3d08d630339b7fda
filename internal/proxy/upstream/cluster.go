package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
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
}

func newStats(s *stats.Store, cluster string) Stats {
	p := "cluster." + cluster + "."
	return Stats{
		RqTotal:           s.Counter(p + "upstream_rq_total"),
		RqClass:           s.StatusClasses(p + "upstream_rq_"),
		RqTimeout:         s.Counter(p + "upstream_rq_timeout"),
		RqCompleted:       s.Counter(p + "upstream_rq_completed"),
		CxTotal:           s.Counter(p + "upstream_cx_total"),
		CxConnectFail:     s.Counter(p + "upstream_cx_connect_fail"),
		NoneHealthy:       s.Counter(p + "upstream_cx_none_healthy"),
		CxActive:          s.Gauge(p + "upstream_cx_active"),
		RqActive:          s.Gauge(p + "upstream_rq_active"),
		MembershipTotal:   s.Gauge(p + "membership_total"),
		MembershipHealthy: s.Gauge(p + "membership_healthy"),
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
	rr    atomic.Uint64

	mu   sync.Mutex
	pool map[string]*Host // by address, so hosts outlive endpoint updates
}

// New starts a cluster from cfg, with cfg.Endpoints as its initial endpoints. Metrics are registered
// in store under the cluster's name.
func New(cfg Config, store *stats.Store) *Cluster {
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	statName := cfg.StatName
	if statName == "" {
		statName = cfg.Name
	}
	c := &Cluster{cfg: cfg, Stats: newStats(store, statName), pool: make(map[string]*Host)}
	switch cfg.Protocol {
	case HTTP1:
		c.h1 = c.newH1Transport()
	case HTTP2:
		c.h2 = c.newTransport()
	case UseDownstream:
		c.h1, c.h2 = c.newH1Transport(), c.newTransport()
	}
	c.SetEndpoints(cfg.Endpoints)
	return c
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.cfg.Name }

// Config returns the cluster's configuration.
func (c *Cluster) Config() Config { return c.cfg }

// SetEndpoints replaces the cluster's endpoints. Requests already under way keep the host they
// picked; hosts that stay keep their counters.
func (c *Cluster) SetEndpoints(eps []Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := make([]*Host, 0, len(eps))
	next := make(map[string]*Host, len(eps))
	healthy := 0
	for _, ep := range eps {
		if _, dup := next[ep.Address]; dup {
			continue
		}
		h := c.pool[ep.Address]
		if h == nil {
			h = newHost(ep.Address)
		}
		h.weight.Store(max(ep.Weight, 1))
		h.priority.Store(ep.Priority)
		h.healthy.Store(ep.Healthy)
		if ep.Healthy {
			healthy++
		}
		next[ep.Address] = h
		all = append(all, h)
	}
	c.pool = next
	c.hosts.Store(newHostSet(all))
	c.Stats.MembershipTotal.Set(int64(len(all)))
	c.Stats.MembershipHealthy.Set(int64(healthy))
}

// Hosts returns the cluster's current hosts, healthy or not.
func (c *Cluster) Hosts() []*Host { return slices.Clone(c.hosts.Load().all) }

// Pick chooses a host for a request with the cluster's LB policy, or returns nil when no healthy
// host exists (Envoy's "no healthy upstream"). ORIGINAL_DST clusters pick with OriginalDst instead.
func (c *Cluster) Pick() *Host { return pick(c.hosts.Load(), c.cfg.LB, &c.rr) }

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
	h.healthy.Store(true)
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

// Close drops the cluster's idle pooled connections now and again after closeGrace, by which time
// most requests that were under way have returned theirs; stragglers go with the idle timeout.
// Call it when the cluster is removed or replaced.
func (c *Cluster) Close() {
	c.closeIdle()
	time.AfterFunc(closeGrace, c.closeIdle)
}

func (c *Cluster) closeIdle() {
	if c.h1 != nil {
		c.h1.CloseIdleConnections()
	}
	if c.h2 != nil {
		c.h2.CloseIdleConnections()
	}
}

// dialer opens upstream connections for both transports, counting them and wrapping failures in
// ConnectError.
type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

func (c *Cluster) dialer() dialFunc {
	dialer := &net.Dialer{Timeout: c.cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if path, ok := unixPath(addr); ok {
			network, addr = "unix", path
		}
		conn, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			c.Stats.CxConnectFail.Inc()
			return nil, &ConnectError{Address: addr, Err: err}
		}
		c.Stats.CxTotal.Inc()
		c.Stats.CxActive.Inc()
		return &countedConn{Conn: conn, active: c.Stats.CxActive}, nil
	}
}

// newH1Transport is the HTTP/1.1 transport: trellis's own codec (internal/proxy/h1), which runs a
// round trip on the caller's goroutine. Bodies pass through untouched (no compression).
func (c *Cluster) newH1Transport() *h1.Transport {
	return &h1.Transport{
		DialContext:         c.withTLS(c.dialer(), false),
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
		DialContext:           c.withTLS(c.dialer(), true),
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

// countedConn keeps upstream_cx_active right however the transport ends a connection.
type countedConn struct {
	net.Conn
	active *stats.Gauge
	once   sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(c.active.Dec)
	return c.Conn.Close()
}

package upstream

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
)

// Thresholds are one routing priority's circuit breaker limits (Envoy's
// CircuitBreakers.Thresholds). With Set false Envoy's defaults apply.
type Thresholds struct {
	Set                bool
	MaxConnections     uint32
	MaxPendingRequests uint32
	MaxRequests        uint32
	MaxRetries         uint32
	// TrackRemaining publishes circuit_breakers.<priority>.remaining_* gauges.
	TrackRemaining bool
}

// Envoy's circuit breaker defaults.
const (
	DefaultMaxConnections     = 1024
	DefaultMaxPendingRequests = 1024
	DefaultMaxRequests        = 1024
	DefaultMaxRetries         = 3
)

// DefaultThresholds are the limits of a cluster that configures none.
var DefaultThresholds = Thresholds{Set: true, MaxConnections: DefaultMaxConnections,
	MaxPendingRequests: DefaultMaxPendingRequests, MaxRequests: DefaultMaxRequests, MaxRetries: DefaultMaxRetries}

// CircuitBreakers are a cluster's limits per routing priority. Routes of HIGH priority are not
// distinguished by trellis-proxy's router, so only Default is enforced; High is kept for /clusters.
type CircuitBreakers struct {
	Default, High Thresholds
}

func (t Thresholds) orDefault() Thresholds {
	if !t.Set {
		return DefaultThresholds
	}
	return t
}

// resource is one limit: a counter that may not pass max, with Envoy's open and remaining gauges.
type resource struct {
	max       int64
	cur       atomic.Int64
	open      *stats.Gauge
	remaining *stats.Gauge // nil unless track_remaining

	// freed is closed and replaced whenever a slot is released, waking waiters (connections only).
	mu    sync.Mutex
	freed chan struct{}
}

func newResource(max uint32, store *stats.Store, prefix, open, remaining string, track bool) *resource {
	r := &resource{max: int64(max), open: store.Gauge(prefix + open), freed: make(chan struct{})}
	if track {
		r.remaining = store.Gauge(prefix + remaining)
	}
	r.publish(0)
	return r
}

func (r *resource) tryAcquire() bool {
	for {
		c := r.cur.Load()
		if c >= r.max {
			return false
		}
		if r.cur.CompareAndSwap(c, c+1) {
			r.publish(c + 1)
			return true
		}
	}
}

func (r *resource) release() {
	r.publish(r.cur.Add(-1))
}

func (r *resource) publish(n int64) {
	if n >= r.max {
		r.open.Set(1)
	} else {
		r.open.Set(0)
	}
	r.remaining.Set(max(r.max-n, 0))
}

// Remaining is how many more may be acquired now.
func (r *resource) Remaining() int64 { return max(r.max-r.cur.Load(), 0) }

// breakers are a cluster's circuit breakers and their overflow counters.
type breakers struct {
	cfg                         CircuitBreakers
	cx, pending, rq, retry      *resource
	cxOverflow, pendingOverflow *stats.Counter
	retryOverflow               *stats.Counter
}

func newBreakers(cfg CircuitBreakers, store *stats.Store, clusterPrefix string) *breakers {
	t := cfg.Default.orDefault()
	cfg.Default, cfg.High = t, cfg.High.orDefault()
	p := clusterPrefix + "circuit_breakers.default."
	b := &breakers{
		cfg:             cfg,
		cxOverflow:      store.Counter(clusterPrefix + "upstream_cx_overflow"),
		pendingOverflow: store.Counter(clusterPrefix + "upstream_rq_pending_overflow"),
		retryOverflow:   store.Counter(clusterPrefix + "upstream_rq_retry_overflow"),
	}
	b.cx = newResource(t.MaxConnections, store, p, "cx_open", "remaining_cx", t.TrackRemaining)
	b.pending = newResource(t.MaxPendingRequests, store, p, "rq_pending_open", "remaining_pending", t.TrackRemaining)
	b.rq = newResource(t.MaxRequests, store, p, "rq_open", "remaining_rq", t.TrackRemaining)
	b.retry = newResource(t.MaxRetries, store, p, "rq_retry_open", "remaining_retries", t.TrackRemaining)
	return b
}

// OverflowError is a request refused by a circuit breaker: it never reached the upstream. Envoy
// answers 503 with response flag UO.
type OverflowError struct{ Limit string }

func (e *OverflowError) Error() string {
	return "upstream overflow: " + e.Limit + " circuit breaker open"
}

// IsOverflow reports whether err (from a round trip) is a circuit breaker overflow.
func IsOverflow(err error) bool {
	var oe *OverflowError
	return errors.As(err, &oe)
}

// acquireConnection takes a max_connections slot for a new connection. When none is free the
// request waits as a pending request (bounded by max_pending_requests) for a connection to close,
// as Envoy's HTTP/1 pool queues it; waiting longer than the connect timeout is an overflow too.
func (b *breakers) acquireConnection(ctx context.Context, wait time.Duration) error {
	b.cx.mu.Lock()
	freed := b.cx.freed
	b.cx.mu.Unlock()
	if b.cx.tryAcquire() {
		return nil
	}
	b.cxOverflow.Inc()
	if !b.pending.tryAcquire() {
		b.pendingOverflow.Inc()
		return &OverflowError{Limit: "max_pending_requests"}
	}
	defer b.pending.release()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return &OverflowError{Limit: "max_connections"}
		}
		b.cx.mu.Lock()
		freed = b.cx.freed
		b.cx.mu.Unlock()
		if b.cx.tryAcquire() {
			return nil
		}
	}
}

// releaseConnection frees a max_connections slot and wakes pending requests.
func (b *breakers) releaseConnection() {
	b.cx.release()
	b.cx.mu.Lock()
	close(b.cx.freed)
	b.cx.freed = make(chan struct{})
	b.cx.mu.Unlock()
}

// TryRequest takes one of the cluster's max_requests slots for a request about to be sent
// upstream; ReleaseRequest must follow once its response body is done. When it returns false the
// request must fail locally with 503 and response flag UO, without contacting the upstream; the
// overflow is counted as upstream_rq_pending_overflow, as Envoy's connection pools count it.
func (c *Cluster) TryRequest() bool {
	if c.cb.rq.tryAcquire() {
		return true
	}
	c.cb.pendingOverflow.Inc()
	return false
}

// ReleaseRequest returns a slot taken by TryRequest.
func (c *Cluster) ReleaseRequest() { c.cb.rq.release() }

// TryRetry takes one of the cluster's max_retries slots before a retry is sent; ReleaseRetry must
// follow when that retry attempt finishes. When it returns false the retry must not happen (Envoy
// counts upstream_rq_retry_overflow, counted here, and the request ends with the last attempt's
// result).
func (c *Cluster) TryRetry() bool {
	if c.cb.retry.tryAcquire() {
		return true
	}
	c.cb.retryOverflow.Inc()
	return false
}

// ReleaseRetry returns a slot taken by TryRetry.
func (c *Cluster) ReleaseRetry() { c.cb.retry.release() }

// CircuitBreakers returns the cluster's limits (defaults filled in), for /clusters.
func (c *Cluster) CircuitBreakers() CircuitBreakers { return c.cb.cfg }

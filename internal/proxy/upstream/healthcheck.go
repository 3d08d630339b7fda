package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
)

// HealthCheck is Envoy's core.HealthCheck for one cluster, defaults filled in by the parser.
type HealthCheck struct {
	Timeout  time.Duration
	Interval time.Duration
	// IntervalJitter and IntervalJitterPercent add a random delay to each interval; InitialJitter
	// delays the first check.
	IntervalJitter, InitialJitter time.Duration
	IntervalJitterPercent         uint32
	// UnhealthyThreshold failures in a row make a healthy host unhealthy (an HTTP answer outside
	// the expected and retriable statuses does at once); HealthyThreshold successes make an
	// unhealthy host healthy again (the first check of a new host needs one).
	UnhealthyThreshold, HealthyThreshold uint32
	// Intervals by state, Envoy's: NoTrafficInterval until the cluster has made a connection
	// (NoTrafficHealthyInterval for healthy hosts), UnhealthyInterval while unhealthy, the edge
	// intervals while a change of state is pending.
	NoTrafficInterval, NoTrafficHealthyInterval time.Duration
	UnhealthyInterval, UnhealthyEdgeInterval    time.Duration
	HealthyEdgeInterval                         time.Duration
	HTTP                                        *HTTPHealthCheck
	TCP                                         *TCPHealthCheck
}

// HTTPHealthCheck is http_health_check.
type HTTPHealthCheck struct {
	Path string
	// Host is the Host header; empty means the cluster's name (Envoy's default).
	Host string
	// Expected and Retriable are status ranges [Start, End); Expected defaults to 200 only.
	Expected, Retriable []StatusRange
	Headers             []HealthCheckHeader
	RemoveHeaders       []string
	HTTP2               bool
	Method              string
}

// StatusRange is an HTTP status range, Start included, End excluded.
type StatusRange struct{ Start, End int }

// HealthCheckHeader is one of request_headers_to_add.
type HealthCheckHeader struct {
	Name, Value string
	Append      bool
}

// TCPHealthCheck is tcp_health_check: connect, write Send if any, then wait until every Receive
// block has been read, in order. Empty Send and Receive only check that the port accepts.
type TCPHealthCheck struct {
	Send    []byte
	Receive [][]byte
}

// checkResult is one check's outcome.
type checkResult int

const (
	checkSuccess checkResult = iota
	checkNetworkFailure
	checkNetworkTimeout
	checkActiveFailure          // an answer that marks the host unhealthy at once
	checkActiveRetriableFailure // an answer in retriable_statuses
)

type healthChecker struct {
	c                                         *Cluster
	cfg                                       HealthCheck
	wg                                        sync.WaitGroup
	attempt, success, failure, networkFailure *stats.Counter
	transport                                 *http.Transport
}

// hcSession is one host's checker goroutine; it is owned by the cluster.
type hcSession struct {
	stop chan struct{}
}

func newHealthChecker(c *Cluster, cfg HealthCheck, store *stats.Store, prefix string) *healthChecker {
	hc := &healthChecker{
		c: c, cfg: cfg,
		attempt:        store.Counter(prefix + "attempt"),
		success:        store.Counter(prefix + "success"),
		failure:        store.Counter(prefix + "failure"),
		networkFailure: store.Counter(prefix + "network_failure"),
	}
	store.GaugeFunc(prefix+"healthy", func() int64 {
		n := 0
		for _, h := range c.hosts.Load().all {
			if h.Flags()&FailedActiveHC == 0 {
				n++
			}
		}
		return int64(n)
	})
	if cfg.HTTP != nil {
		dialer := &net.Dialer{Timeout: cfg.Timeout}
		hc.transport = &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if path, ok := unixPath(addr); ok {
					network, addr = "unix", path
				}
				return dialer.DialContext(ctx, network, addr)
			},
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     max(cfg.Interval, cfg.NoTrafficInterval, cfg.UnhealthyInterval) + 10*time.Second,
			DisableCompression:  true,
		}
		if cfg.HTTP.HTTP2 {
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			hc.transport.Protocols = &p
		}
	}
	return hc
}

// start runs h's checker if it has none. Called with the cluster's lock held.
func (hc *healthChecker) start(h *Host) {
	if h.hc != nil {
		return
	}
	s := &hcSession{stop: make(chan struct{})}
	h.hc = s
	hc.wg.Add(1)
	go hc.run(h, s)
}

// stop ends h's checker. Called with the cluster's lock held.
func (hc *healthChecker) stop(h *Host) {
	if h.hc != nil {
		close(h.hc.stop)
		h.hc = nil
	}
}

// wait returns once every checker has stopped (after the cluster's done is closed).
func (hc *healthChecker) wait() {
	hc.wg.Wait()
	if hc.transport != nil {
		hc.transport.CloseIdleConnections()
	}
}

type transition int

const (
	unchanged transition = iota
	changePending
	changed
)

func (hc *healthChecker) run(h *Host, s *hcSession) {
	defer hc.wg.Done()
	first := true
	var numHealthy, numUnhealthy uint32
	delay := time.Duration(0)
	if j := hc.cfg.InitialJitter; j > 0 {
		delay = time.Duration(rand.Int64N(int64(j)))
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
		case <-s.stop:
			return
		case <-hc.c.done:
			return
		}
		hc.attempt.Inc()
		res := hc.check(h, s)
		healthy := res == checkSuccess
		tr := unchanged
		if healthy {
			// Envoy's handleSuccess: the first result of a new host counts as enough.
			numUnhealthy = 0
			if h.Flags()&FailedActiveHC != 0 {
				numHealthy++
				if first || numHealthy >= hc.cfg.HealthyThreshold {
					tr = changed
				} else {
					tr = changePending
				}
			}
			hc.success.Inc()
		} else {
			// Envoy's setUnhealthy: a non-retriable bad answer fails the host at once, anything
			// else after unhealthy_threshold in a row.
			numHealthy = 0
			if h.Flags()&FailedActiveHC == 0 {
				numUnhealthy++
				if res == checkActiveFailure || numUnhealthy >= hc.cfg.UnhealthyThreshold {
					tr = changed
				} else {
					tr = changePending
				}
			}
			hc.failure.Inc()
			if res == checkNetworkFailure || res == checkNetworkTimeout {
				hc.networkFailure.Inc()
			}
		}
		wasPending := h.Flags()&PendingActiveHC != 0
		first = false
		lbChanged := false
		if tr == changed {
			lbChanged = h.setFlag(FailedActiveHC, !healthy)
		}
		if wasPending { // the first result, whatever it is, ends the wait (Envoy)
			h.setFlag(PendingActiveHC, false)
		}
		switch {
		case !healthy && tr == changed && h.Flags()&PendingDynamicRemoval != 0:
			// EDS already removed it; it stayed only while it passed its checks.
			hc.c.removePending(h)
		case lbChanged:
			hc.c.healthChanged()
		}
		if healthy && hc.c.od != nil {
			hc.c.od.healthCheckPassed(h)
		}
		timer.Reset(hc.interval(healthy, tr))
	}
}

// interval is Envoy's HealthCheckerImplBase::interval.
func (hc *healthChecker) interval(healthy bool, tr transition) time.Duration {
	cfg := &hc.cfg
	var base time.Duration
	switch {
	case hc.c.Stats.CxTotal.Value() == 0:
		base = cfg.NoTrafficInterval
		if healthy && tr != changePending {
			base = cfg.NoTrafficHealthyInterval
		}
	case !healthy && tr == changePending:
		base = cfg.UnhealthyEdgeInterval
	case !healthy:
		base = cfg.UnhealthyInterval
	case tr == changePending:
		base = cfg.HealthyEdgeInterval
	default:
		base = cfg.Interval
	}
	if m := int64(cfg.IntervalJitterPercent) * int64(base) / 100; m > 0 {
		base += time.Duration(rand.Int64N(m))
	}
	if j := cfg.IntervalJitter; j > 0 {
		base += time.Duration(rand.Int64N(int64(j)))
	}
	return base
}

// checkAddr is where checks go: the host, or its health_check_config port.
func checkAddr(h *Host) string {
	addr := h.Target()
	if p := h.locality.Load().HealthCheckPort; p != 0 {
		if host, _, err := net.SplitHostPort(h.Address); err == nil {
			addr = net.JoinHostPort(host, strconv.FormatUint(uint64(p), 10))
		}
	}
	return addr
}

func (hc *healthChecker) check(h *Host, s *hcSession) checkResult {
	ctx, cancel := context.WithTimeout(context.Background(), hc.cfg.Timeout)
	defer cancel()
	go func() {
		select {
		case <-s.stop:
		case <-hc.c.done:
		case <-ctx.Done():
		}
		cancel()
	}()
	var res checkResult
	if hc.cfg.HTTP != nil {
		res = hc.checkHTTP(ctx, h)
	} else {
		res = hc.checkTCP(ctx, h)
	}
	if res == checkNetworkFailure && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		res = checkNetworkTimeout
	}
	return res
}

func (hc *healthChecker) checkHTTP(ctx context.Context, h *Host) checkResult {
	cfg := hc.cfg.HTTP
	host := cfg.Host
	if host == "" {
		host = hc.c.cfg.Name
	}
	method := cfg.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+checkAddr(h)+cfg.Path, nil)
	if err != nil {
		return checkNetworkFailure
	}
	req.Host = host
	req.Header.Set("User-Agent", "Envoy/HC")
	for _, hd := range cfg.Headers {
		if hd.Append {
			req.Header.Add(hd.Name, hd.Value)
		} else {
			req.Header.Set(hd.Name, hd.Value)
		}
	}
	for _, name := range cfg.RemoveHeaders {
		req.Header.Del(name)
	}
	resp, err := hc.transport.RoundTrip(req)
	if err != nil {
		return checkNetworkFailure
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	expected := cfg.Expected
	if len(expected) == 0 {
		expected = []StatusRange{{200, 201}}
	}
	if inRanges(resp.StatusCode, expected) {
		return checkSuccess
	}
	if inRanges(resp.StatusCode, cfg.Retriable) {
		return checkActiveRetriableFailure
	}
	return checkActiveFailure
}

func inRanges(code int, rs []StatusRange) bool {
	for _, r := range rs {
		if code >= r.Start && code < r.End {
			return true
		}
	}
	return false
}

func (hc *healthChecker) checkTCP(ctx context.Context, h *Host) checkResult {
	network, addr := "tcp", checkAddr(h)
	if path, ok := unixPath(addr + ":0"); ok {
		network, addr = "unix", path
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return checkNetworkFailure
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	cfg := hc.cfg.TCP
	if len(cfg.Send) > 0 {
		if _, err := conn.Write(cfg.Send); err != nil {
			return checkNetworkFailure
		}
	}
	if len(cfg.Receive) == 0 {
		return checkSuccess
	}
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if containsInOrder(got, cfg.Receive) {
			return checkSuccess
		}
		if err != nil || len(got) > 1<<20 {
			return checkNetworkFailure
		}
	}
}

// containsInOrder is Envoy's TCP health check matching: every block appears, each after the last.
func containsInOrder(data []byte, blocks [][]byte) bool {
	for _, b := range blocks {
		i := bytes.Index(data, b)
		if i < 0 {
			return false
		}
		data = data[i+len(b):]
	}
	return true
}

// DefaultNoTrafficInterval is Envoy's interval between checks of a cluster that has made no
// connection yet.
const DefaultNoTrafficInterval = 60 * time.Second

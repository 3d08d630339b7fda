package upstream

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
)

// OutlierConfig is Envoy's OutlierDetection, with its defaults filled in by the parser
// (DefaultOutlierConfig). Percentages are 0..100.
type OutlierConfig struct {
	Consecutive5xx, ConsecutiveGatewayFailure, ConsecutiveLocalOriginFailure                     uint32
	EnforcingConsecutive5xx, EnforcingConsecutiveGatewayFailure, EnforcingConsecutiveLocalOrigin uint32
	Interval, BaseEjectionTime, MaxEjectionTime, MaxEjectionTimeJitter                           time.Duration
	MaxEjectionPercent                                                                           uint32
	// SplitExternalLocalOriginErrors counts connect failures, resets and timeouts apart from the
	// upstream's 5xx answers (consecutive_local_origin_failure).
	SplitExternalLocalOriginErrors bool
	// Success-rate detection: hosts whose success rate falls StdevFactor/1000 standard deviations
	// below the mean, among at least MinimumHosts hosts with RequestVolume requests in an interval.
	SuccessRateMinimumHosts, SuccessRateRequestVolume, SuccessRateStdevFactor uint32
	EnforcingSuccessRate, EnforcingLocalOriginSuccessRate                     uint32
	// Failure-percentage detection: hosts failing at least Threshold percent of RequestVolume.
	FailurePercentageThreshold, FailurePercentageMinimumHosts, FailurePercentageRequestVolume uint32
	EnforcingFailurePercentage, EnforcingFailurePercentageLocalOrigin                         uint32
	// AlwaysEjectOneHost ejects one host even when max_ejection_percent would allow none.
	AlwaysEjectOneHost bool
	// SuccessfulActiveHealthCheckUnejectHost unejects a host when it passes an active health check.
	SuccessfulActiveHealthCheckUnejectHost bool
}

// DefaultOutlierConfig is Envoy's OutlierDetection with every field unset.
var DefaultOutlierConfig = OutlierConfig{
	Consecutive5xx: 5, ConsecutiveGatewayFailure: 5, ConsecutiveLocalOriginFailure: 5,
	EnforcingConsecutive5xx: 100, EnforcingConsecutiveGatewayFailure: 0, EnforcingConsecutiveLocalOrigin: 100,
	Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second,
	MaxEjectionPercent:      10,
	SuccessRateMinimumHosts: 5, SuccessRateRequestVolume: 100, SuccessRateStdevFactor: 1900,
	EnforcingSuccessRate: 100, EnforcingLocalOriginSuccessRate: 100,
	FailurePercentageThreshold: 85, FailurePercentageMinimumHosts: 5, FailurePercentageRequestVolume: 50,
	SuccessfulActiveHealthCheckUnejectHost: true,
}

// ejection types, Envoy's OutlierEjectionType.
type ejectionType int

const (
	ejConsecutive5xx ejectionType = iota
	ejSuccessRate
	ejConsecutiveGatewayFailure
	ejConsecutiveLocalOrigin
	ejLocalOriginSuccessRate
	ejFailurePercentage
	ejFailurePercentageLocalOrigin
	numEjectionTypes
)

var ejectionNames = [numEjectionTypes]string{"consecutive_5xx", "success_rate", "consecutive_gateway_failure",
	"consecutive_local_origin_failure", "local_origin_success_rate", "failure_percentage", "failure_percentage_local_origin"}

// outlierState is a host's outlier detection state; it lives in the Host so it survives endpoint
// updates.
type outlierState struct {
	consecutive5xx, consecutiveGateway, consecutiveLocal atomic.Uint32
	// This interval's requests, for success rate and failure percentage.
	extTotal, extSuccess, localTotal, localSuccess atomic.Uint64

	// Guarded by the detector's lock.
	ejections    uint32 // times ejected, ever
	backoff      uint32 // the ejection time multiplier
	lastEjection time.Time
	jitter       time.Duration
	// successRate and localSuccessRate are the last interval's, or -1 (for /clusters).
	successRate, localSuccessRate float64
}

type outlierDetector struct {
	c       *Cluster
	cfg     OutlierConfig
	stopped chan struct{}

	ejectionsActive                 *stats.Gauge
	ejectionsEnforcedTotal          *stats.Counter
	ejectionsOverflow, ejectionsTot *stats.Counter
	enforced, detected              [numEjectionTypes]*stats.Counter

	mu     sync.Mutex
	active int
	// success rate average and ejection threshold of the last interval, or -1 (for /clusters).
	srAverage, srThreshold, localSRAverage, localSRThreshold float64
}

func newOutlierDetector(c *Cluster, cfg OutlierConfig, store *stats.Store, prefix string) *outlierDetector {
	d := &outlierDetector{
		c: c, cfg: cfg, stopped: make(chan struct{}),
		ejectionsActive:        store.Gauge(prefix + "ejections_active"),
		ejectionsEnforcedTotal: store.Counter(prefix + "ejections_enforced_total"),
		ejectionsOverflow:      store.Counter(prefix + "ejections_overflow"),
		ejectionsTot:           store.Counter(prefix + "ejections_total"),
		srAverage:              -1, srThreshold: -1, localSRAverage: -1, localSRThreshold: -1,
	}
	for t := range numEjectionTypes {
		d.enforced[t] = store.Counter(prefix + "ejections_enforced_" + ejectionNames[t])
		d.detected[t] = store.Counter(prefix + "ejections_detected_" + ejectionNames[t])
	}
	return d
}

// ReportResponse tells outlier detection that h answered with code (the upstream's own status).
// Call it for every response whose headers came back.
func (c *Cluster) ReportResponse(h *Host, code int) {
	d := c.od
	if d == nil || h == nil {
		return
	}
	if d.cfg.SplitExternalLocalOriginErrors {
		d.localOriginSuccess(h)
	}
	d.putHTTPCode(h, code)
}

// ReportLocalFailure tells outlier detection that a request to h failed on our side: the
// connection could not be made or was reset before a response (timeout false), or the upstream
// timed out (timeout true). Overflows are not reported: they never reach the host.
func (c *Cluster) ReportLocalFailure(h *Host, timeout bool) {
	if h == nil {
		return
	}
	if timeout {
		h.rqTimeout.Add(1)
	}
	d := c.od
	if d == nil {
		return
	}
	if !d.cfg.SplitExternalLocalOriginErrors {
		// Envoy maps local failures to the codes a gateway would answer with.
		code := 503
		if timeout {
			code = 504
		}
		d.putHTTPCode(h, code)
		return
	}
	o := &h.od
	o.localTotal.Add(1)
	if o.consecutiveLocal.Add(1) == d.cfg.ConsecutiveLocalOriginFailure {
		d.onConsecutive(h, ejConsecutiveLocalOrigin)
	}
}

func (d *outlierDetector) localOriginSuccess(h *Host) {
	o := &h.od
	o.localTotal.Add(1)
	o.localSuccess.Add(1)
	o.consecutiveLocal.Store(0)
}

// putHTTPCode is Envoy's DetectorHostMonitorImpl::putHttpResponseCode.
func (d *outlierDetector) putHTTPCode(h *Host, code int) {
	o := &h.od
	o.extTotal.Add(1)
	if code < 500 || code > 599 {
		o.extSuccess.Add(1)
		o.consecutive5xx.Store(0)
		o.consecutiveGateway.Store(0)
		return
	}
	if code == 502 || code == 503 || code == 504 {
		if o.consecutiveGateway.Add(1) == d.cfg.ConsecutiveGatewayFailure {
			d.onConsecutive(h, ejConsecutiveGatewayFailure)
		}
	} else {
		o.consecutiveGateway.Store(0)
	}
	if o.consecutive5xx.Add(1) == d.cfg.Consecutive5xx {
		d.onConsecutive(h, ejConsecutive5xx)
	}
}

// onConsecutive is Envoy's onConsecutiveErrorWorker: count the detection, eject if allowed, and
// reset the counter so another bout can be detected.
func (d *outlierDetector) onConsecutive(h *Host, t ejectionType) {
	d.mu.Lock()
	changed := false
	if h.Flags()&FailedOutlierCheck == 0 && d.known(h) {
		d.detected[t].Inc()
		changed = d.ejectLocked(h, t, time.Now())
		switch t {
		case ejConsecutive5xx:
			h.od.consecutive5xx.Store(0)
		case ejConsecutiveGatewayFailure:
			h.od.consecutiveGateway.Store(0)
		case ejConsecutiveLocalOrigin:
			h.od.consecutiveLocal.Store(0)
		}
	}
	d.mu.Unlock()
	if changed {
		d.c.healthChanged()
	}
}

// known reports whether h is still one of the cluster's hosts.
func (d *outlierDetector) known(h *Host) bool {
	for _, x := range d.c.hosts.Load().all {
		if x == h {
			return true
		}
	}
	return false
}

func (d *outlierDetector) enforcing(t ejectionType) uint32 {
	switch t {
	case ejConsecutive5xx:
		return d.cfg.EnforcingConsecutive5xx
	case ejConsecutiveGatewayFailure:
		return d.cfg.EnforcingConsecutiveGatewayFailure
	case ejConsecutiveLocalOrigin:
		return d.cfg.EnforcingConsecutiveLocalOrigin
	case ejSuccessRate:
		return d.cfg.EnforcingSuccessRate
	case ejLocalOriginSuccessRate:
		return d.cfg.EnforcingLocalOriginSuccessRate
	case ejFailurePercentage:
		return d.cfg.EnforcingFailurePercentage
	}
	return d.cfg.EnforcingFailurePercentageLocalOrigin
}

// ejectLocked is Envoy's DetectorImpl::ejectHost: bounded by max_ejection_percent of the cluster's
// hosts (one is always allowed with always_eject_one_host), enforced with the type's enforcing
// percentage. It reports whether the host was ejected.
func (d *outlierDetector) ejectLocked(h *Host, t ejectionType, now time.Time) bool {
	n := len(d.c.hosts.Load().all)
	if n == 0 {
		return false
	}
	pct := 100 * float64(d.active+1) / float64(n)
	if pct > float64(min(d.cfg.MaxEjectionPercent, 100)) && !(d.cfg.AlwaysEjectOneHost && d.active == 0) {
		d.ejectionsOverflow.Inc()
		return false
	}
	if t == ejConsecutive5xx || t == ejSuccessRate {
		d.ejectionsTot.Inc() // Envoy's deprecated counter
	}
	if e := d.enforcing(t); e == 0 || rand.Uint32N(100) >= e {
		return false
	}
	o := &h.od
	// The multiplier grows with each ejection until base*multiplier passes max_ejection_time.
	if time.Duration(o.backoff)*d.cfg.BaseEjectionTime < d.cfg.MaxEjectionTime+d.cfg.BaseEjectionTime {
		o.backoff++
	}
	o.ejections++
	o.lastEjection = now
	o.jitter = 0
	if j := d.cfg.MaxEjectionTimeJitter; j > 0 {
		o.jitter = time.Duration(rand.Int64N(int64(j)))
	}
	d.active++
	d.ejectionsActive.Set(int64(d.active))
	d.ejectionsEnforcedTotal.Inc()
	d.enforced[t].Inc()
	h.setFlag(FailedOutlierCheck, true)
	return true
}

// unejectLocked returns h to service and clears its counters, so a few new errors cannot eject it
// again at once.
func (d *outlierDetector) unejectLocked(h *Host) {
	if h.Flags()&FailedOutlierCheck == 0 {
		return
	}
	d.active--
	d.ejectionsActive.Set(int64(d.active))
	h.od.consecutive5xx.Store(0)
	h.od.consecutiveGateway.Store(0)
	h.od.consecutiveLocal.Store(0)
	h.setFlag(FailedOutlierCheck, false)
}

// forget drops a removed host from the ejection count.
func (d *outlierDetector) forget(h *Host) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h.Flags()&FailedOutlierCheck != 0 {
		d.active--
		d.ejectionsActive.Set(int64(d.active))
	}
}

// healthCheckPassed unejects h when it passes an active health check (Envoy's
// successful_active_health_check_uneject_host).
func (d *outlierDetector) healthCheckPassed(h *Host) {
	if !d.cfg.SuccessfulActiveHealthCheckUnejectHost || h.Flags()&FailedOutlierCheck == 0 {
		return
	}
	d.mu.Lock()
	d.unejectLocked(h)
	d.mu.Unlock()
	d.c.healthChanged()
}

// run is the interval timer, owned by the cluster and stopped by Close.
func (d *outlierDetector) run() {
	defer close(d.stopped)
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-d.c.done:
			return
		case now := <-t.C:
			if d.tick(now) {
				d.c.healthChanged()
			}
		}
	}
}

// tick is Envoy's onIntervalTimer: uneject hosts whose time is up, decay the multiplier of hosts
// that stayed in service, then run success-rate and failure-percentage detection over the
// interval's requests.
func (d *outlierDetector) tick(now time.Time) bool {
	hosts := d.c.hosts.Load().all
	d.mu.Lock()
	defer d.mu.Unlock()
	changed := false
	type sample struct {
		h      *Host
		rate   float64
		volume uint64
	}
	var ext, local []sample
	for _, h := range hosts {
		o := &h.od
		if h.Flags()&FailedOutlierCheck == 0 {
			if o.backoff > 0 && !o.lastEjection.IsZero() && now.Sub(o.lastEjection) >= d.cfg.BaseEjectionTime {
				o.backoff--
			}
		} else {
			ejectFor := min(d.cfg.BaseEjectionTime*time.Duration(o.backoff), d.cfg.MaxEjectionTime) + o.jitter
			if now.Sub(o.lastEjection) >= ejectFor {
				d.unejectLocked(h)
				changed = true
			}
		}
		et, es := o.extTotal.Swap(0), o.extSuccess.Swap(0)
		lt, ls := o.localTotal.Swap(0), o.localSuccess.Swap(0)
		o.successRate, o.localSuccessRate = -1, -1
		if h.Flags()&FailedOutlierCheck != 0 {
			continue
		}
		if et > 0 {
			ext = append(ext, sample{h, 100 * float64(es) / float64(et), et})
		}
		if lt > 0 {
			local = append(local, sample{h, 100 * float64(ls) / float64(lt), lt})
		}
	}
	n := uint32(len(hosts))
	successRate := func(samples []sample, t ejectionType, avg, threshold *float64, rate func(*outlierState) *float64) {
		*avg, *threshold = -1, -1
		if n < d.cfg.SuccessRateMinimumHosts {
			return
		}
		var valid []sample
		sum := 0.0
		for _, s := range samples {
			if s.volume >= uint64(d.cfg.SuccessRateRequestVolume) {
				valid = append(valid, s)
				sum += s.rate
			}
		}
		if len(valid) == 0 || uint32(len(valid)) < d.cfg.SuccessRateMinimumHosts {
			return
		}
		mean := sum / float64(len(valid))
		variance := 0.0
		for _, s := range valid {
			variance += (s.rate - mean) * (s.rate - mean)
		}
		stdev := math.Sqrt(variance / float64(len(valid)))
		*avg, *threshold = mean, mean-float64(d.cfg.SuccessRateStdevFactor)/1000*stdev
		for _, s := range valid {
			*rate(&s.h.od) = s.rate
			if s.rate < *threshold && s.h.Flags()&FailedOutlierCheck == 0 {
				d.detected[t].Inc()
				changed = d.ejectLocked(s.h, t, now) || changed
			}
		}
	}
	failurePercentage := func(samples []sample, t ejectionType) {
		if n < d.cfg.FailurePercentageMinimumHosts {
			return
		}
		var valid []sample
		for _, s := range samples {
			if s.volume >= uint64(d.cfg.FailurePercentageRequestVolume) {
				valid = append(valid, s)
			}
		}
		if uint32(len(valid)) < d.cfg.FailurePercentageMinimumHosts {
			return
		}
		for _, s := range valid {
			if 100-s.rate >= float64(d.cfg.FailurePercentageThreshold) && s.h.Flags()&FailedOutlierCheck == 0 {
				d.detected[t].Inc()
				changed = d.ejectLocked(s.h, t, now) || changed
			}
		}
	}
	successRate(ext, ejSuccessRate, &d.srAverage, &d.srThreshold, func(o *outlierState) *float64 { return &o.successRate })
	if d.cfg.SplitExternalLocalOriginErrors {
		successRate(local, ejLocalOriginSuccessRate, &d.localSRAverage, &d.localSRThreshold, func(o *outlierState) *float64 { return &o.localSuccessRate })
	}
	failurePercentage(ext, ejFailurePercentage)
	if d.cfg.SplitExternalLocalOriginErrors {
		failurePercentage(local, ejFailurePercentageLocalOrigin)
	}
	return changed
}

// OutlierInfo is what /clusters prints about a cluster's outlier detection.
type OutlierInfo struct {
	SuccessRateAverage, SuccessRateEjectionThreshold                       float64
	LocalOriginSuccessRateAverage, LocalOriginSuccessRateEjectionThreshold float64
}

// Outlier returns the outlier detector's last success-rate figures; ok is false without
// outlier_detection.
func (c *Cluster) Outlier() (info OutlierInfo, ok bool) {
	d := c.od
	if d == nil {
		return info, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return OutlierInfo{d.srAverage, d.srThreshold, d.localSRAverage, d.localSRThreshold}, true
}

// SuccessRate is the host's success rate (percent) over the last outlier detection interval, and
// the same for local-origin results; -1 when not computed (Envoy's /clusters success_rate).
func (c *Cluster) SuccessRate(h *Host) (external, localOrigin float64) {
	d := c.od
	if d == nil {
		return -1, -1
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return h.od.successRate, h.od.localSuccessRate
}

package upstream

import (
	"encoding/hex"
	"strconv"
	"strings"
	"sync/atomic"
)

// HealthFlag is one reason a host is not (fully) healthy, as Envoy's Host::HealthFlag. A host with
// no failure flag set is healthy.
type HealthFlag uint32

// The flags, in Envoy's order (HEALTH_FLAG_ENUM_VALUES), which is the order HealthFlags prints them.
const (
	FailedActiveHC        HealthFlag = 1 << iota // active health checking failed (or has not passed yet)
	FailedOutlierCheck                           // ejected by outlier detection
	FailedEDSHealth                              // EDS says UNHEALTHY, DRAINING or TIMEOUT
	DegradedActiveHC                             // unused: no degraded signal from our checkers
	DegradedEDSHealth                            // EDS says DEGRADED
	PendingDynamicRemoval                        // removed by EDS, kept while it passes active HC
	PendingActiveHC                              // no active health check result yet
)

var flagNames = [...]string{"failed_active_hc", "failed_outlier_check", "failed_eds_health",
	"degraded_active_hc", "degraded_eds_health", "pending_dynamic_removal", "pending_active_hc"}

// failureFlags make a host unhealthy; the degraded flags only make it degraded.
const failureFlags = FailedActiveHC | FailedOutlierCheck | FailedEDSHealth

// Locality is where a host runs (Envoy's core.Locality).
type Locality struct {
	Region, Zone, SubZone string
}

// Host is one endpoint of a cluster. Hosts are kept across endpoint updates (keyed by address), so
// their counters, health-check state and outlier state outlive EDS pushes.
type Host struct {
	Address string
	// target is what requests put in their URL's host to reach this host: Address itself, or for a
	// Unix socket a name the cluster's dialer decodes back into the path.
	target string

	// Set by SetEndpoints (under the cluster's lock), read by the LB when it rebuilds.
	weight   atomic.Uint32
	priority atomic.Uint32
	locality atomic.Pointer[endpointMeta]

	flags atomic.Uint32

	rqTotal, rqError, rqSuccess, rqTimeout atomic.Uint64
	rqActive                               atomic.Int64
	cxTotal, cxConnectFail                 atomic.Uint64
	cxActive                               atomic.Int64

	od outlierState
	hc *hcSession // nil unless the cluster health checks
}

// endpointMeta is what EDS says about a host besides its address and weight.
type endpointMeta struct {
	Locality       Locality
	LocalityWeight uint32
	Hostname       string
	IstioWorkload  string
	// HealthCheckPort, when non-zero, replaces the port active health checks connect to.
	HealthCheckPort uint32
}

func newHost(addr string) *Host {
	h := &Host{Address: addr, target: addr}
	h.locality.Store(&endpointMeta{})
	h.od.successRate, h.od.localSuccessRate = -1, -1
	if path, ok := strings.CutPrefix(addr, UnixPrefix); ok {
		h.target = unixHostPrefix + hex.EncodeToString([]byte(path))
	}
	return h
}

// unixHostPrefix marks URL hosts that stand for Unix socket paths (hex-encoded after it).
const unixHostPrefix = "unix-socket-"

// transportHostPrefix marks the URL hosts of clusters with transport_socket_matches,
// "tsm<transport>-<hex address>": the transport is part of the host, so hosts on different
// transports (plaintext and mTLS) never share a pooled connection.
const transportHostPrefix = "tsm"

func transportTarget(ts int, addr string) string {
	return transportHostPrefix + strconv.Itoa(ts) + "-" + hex.EncodeToString([]byte(addr))
}

// transportTarget decodes a dial address made from a transport target: the transport index, the
// host's address and its pool key. ok is false for other addresses, and always in clusters without
// transport_socket_matches (whose hosts could have any name).
func (c *Cluster) transportTarget(dialAddr string) (ts int, addr, key string, ok bool) {
	if len(c.cfg.TransportMatches) == 0 {
		return 0, "", "", false
	}
	rest, ok := strings.CutPrefix(dialAddr, transportHostPrefix)
	if !ok {
		return 0, "", "", false
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		rest = rest[:i] // the transport adds a default port
	}
	n, hexAddr, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, "", "", false
	}
	ts, err := strconv.Atoi(n)
	if err != nil {
		return 0, "", "", false
	}
	b, err := hex.DecodeString(hexAddr)
	if err != nil {
		return 0, "", "", false
	}
	return ts, string(b), transportHostPrefix + rest, true
}

// unixPath decodes a dial address made from a Host's target; ok is false for TCP addresses.
func unixPath(dialAddr string) (path string, ok bool) {
	rest, ok := strings.CutPrefix(dialAddr, unixHostPrefix)
	if !ok {
		return "", false
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		rest = rest[:i] // the transport adds a default port
	}
	b, err := hex.DecodeString(rest)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// Target is the authority to put in the URL of a request for this host (not the Host header).
func (h *Host) Target() string { return h.target }

// Weight is the host's load-balancing weight.
func (h *Host) Weight() uint32 { return h.weight.Load() }

// Priority is the host's priority level (0 is preferred).
func (h *Host) Priority() uint32 { return h.priority.Load() }

// Locality is the host's region, zone and sub-zone.
func (h *Host) Locality() Locality { return h.locality.Load().Locality }

// Hostname is the endpoint's hostname from EDS, if any.
func (h *Host) Hostname() string { return h.locality.Load().Hostname }

// IstioWorkload is the endpoint's Istio workload metadata from EDS, if any.
func (h *Host) IstioWorkload() string { return h.locality.Load().IstioWorkload }

// Healthy reports whether the host may be picked outside panic mode: no failure flag is set
// (active health check, outlier detection and EDS all agree), as Envoy's coarseHealth.
func (h *Host) Healthy() bool { return HealthFlag(h.flags.Load())&failureFlags == 0 }

// Degraded reports a healthy host that EDS marks DEGRADED: it gets traffic only when the healthy
// hosts of all priorities cannot take it all.
func (h *Host) Degraded() bool {
	f := HealthFlag(h.flags.Load())
	return f&failureFlags == 0 && f&(DegradedEDSHealth|DegradedActiveHC) != 0
}

// Flags returns the host's health flags.
func (h *Host) Flags() HealthFlag { return HealthFlag(h.flags.Load()) }

// HealthFlags renders the flags as Envoy's admin /clusters does: "healthy", or each set flag
// prefixed with a slash ("/failed_active_hc/pending_active_hc").
func (h *Host) HealthFlags() string { return h.Flags().String() }

func (f HealthFlag) String() string {
	if f == 0 {
		return "healthy"
	}
	var b strings.Builder
	for i, name := range flagNames {
		if f&(1<<i) != 0 {
			b.WriteByte('/')
			b.WriteString(name)
		}
	}
	return b.String()
}

// setFlag sets or clears f and reports whether the host's healthy/degraded state changed.
func (h *Host) setFlag(f HealthFlag, on bool) bool {
	for {
		old := h.flags.Load()
		next := old &^ uint32(f)
		if on {
			next |= uint32(f)
		}
		if h.flags.CompareAndSwap(old, next) {
			return coarse(old) != coarse(next)
		}
	}
}

// coarse is the part of the flags the load balancer looks at.
func coarse(flags uint32) uint32 {
	f := HealthFlag(flags)
	if f&failureFlags != 0 {
		return 2
	}
	if f&(DegradedEDSHealth|DegradedActiveHC) != 0 {
		return 1
	}
	return 0
}

// RequestsTotal counts requests sent to the host.
func (h *Host) RequestsTotal() uint64 { return h.rqTotal.Load() }

// RequestsActive counts requests in flight to the host.
func (h *Host) RequestsActive() int64 { return h.rqActive.Load() }

// RequestErrors counts requests to the host that failed before a response or got a 5xx.
func (h *Host) RequestErrors() uint64 { return h.rqError.Load() }

// HostStat is one of a host's counters or gauges, named as Envoy's /clusters prints them.
type HostStat struct {
	Name  string
	Value uint64
	Gauge bool
}

// Stats returns the host's counters and gauges in Envoy's (alphabetical) order.
func (h *Host) Stats() []HostStat {
	return []HostStat{
		{"cx_active", uint64(max(h.cxActive.Load(), 0)), true},
		{"cx_connect_fail", h.cxConnectFail.Load(), false},
		{"cx_total", h.cxTotal.Load(), false},
		{"rq_active", uint64(max(h.rqActive.Load(), 0)), true},
		{"rq_error", h.rqError.Load(), false},
		{"rq_success", h.rqSuccess.Load(), false},
		{"rq_timeout", h.rqTimeout.Load(), false},
		{"rq_total", h.rqTotal.Load(), false},
	}
}

// Begin records a request sent to h; End must follow when it finishes.
func (h *Host) Begin() {
	h.rqTotal.Add(1)
	h.rqActive.Add(1)
}

// End records the end of a request started with Begin; failed is a connect error, reset or 5xx.
func (h *Host) End(failed bool) {
	h.rqActive.Add(-1)
	if failed {
		h.rqError.Add(1)
	} else {
		h.rqSuccess.Add(1)
	}
}

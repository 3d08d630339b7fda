package upstream

import (
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"sync/atomic"
)

// Host is one endpoint of a cluster. Hosts are kept across endpoint updates (keyed by address), so
// their counters, and later their health, outlive EDS pushes.
type Host struct {
	Address string
	// target is what requests put in their URL's host to reach this host: Address itself, or for a
	// Unix socket a name the cluster's dialer decodes back into the path.
	target   string
	weight   atomic.Uint32
	priority atomic.Uint32
	healthy  atomic.Bool

	rqTotal  atomic.Uint64
	rqActive atomic.Int64
	rqError  atomic.Uint64
}

func newHost(addr string) *Host {
	h := &Host{Address: addr, target: addr}
	if path, ok := strings.CutPrefix(addr, UnixPrefix); ok {
		h.target = unixHostPrefix + hex.EncodeToString([]byte(path))
	}
	return h
}

// unixHostPrefix marks URL hosts that stand for Unix socket paths (hex-encoded after it).
const unixHostPrefix = "unix-socket-"

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

// Healthy reports whether the host may be picked.
func (h *Host) Healthy() bool { return h.healthy.Load() }

// RequestsTotal counts requests sent to the host.
func (h *Host) RequestsTotal() uint64 { return h.rqTotal.Load() }

// RequestsActive counts requests in flight to the host.
func (h *Host) RequestsActive() int64 { return h.rqActive.Load() }

// RequestErrors counts requests to the host that failed before a response or got a 5xx.
func (h *Host) RequestErrors() uint64 { return h.rqError.Load() }

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
	}
}

// hostSet is an immutable view of a cluster's hosts, swapped whole on every endpoint update.
type hostSet struct {
	all []*Host
	// pickable are the healthy hosts of the best priority level that has any.
	pickable []*Host
	// schedule is a smooth weighted round-robin sequence of indexes into pickable; nil when all
	// weights are equal and plain rotation does the same job.
	schedule []uint32
}

// maxSchedule bounds the weighted sequence; larger weight sums are scaled down to fit.
const maxSchedule = 4096

func newHostSet(all []*Host) *hostSet {
	hs := &hostSet{all: all}
	best, found := uint32(0), false
	for _, h := range all {
		if h.Healthy() && (!found || h.Priority() < best) {
			best, found = h.Priority(), true
		}
	}
	for _, h := range all {
		if h.Healthy() && h.Priority() == best {
			hs.pickable = append(hs.pickable, h)
		}
	}
	hs.schedule = weightedSchedule(hs.pickable)
	return hs
}

// weightedSchedule builds nginx's smooth weighted round-robin order: over one cycle each host
// appears weight times, spread out rather than in runs.
func weightedSchedule(hosts []*Host) []uint32 {
	if len(hosts) < 2 {
		return nil
	}
	weights := make([]uint64, len(hosts))
	var sum uint64
	equal := true
	for i, h := range hosts {
		weights[i] = uint64(max(h.Weight(), 1))
		sum += weights[i]
		equal = equal && weights[i] == weights[0]
	}
	if equal {
		return nil
	}
	if g := gcdAll(weights); g > 1 {
		sum = 0
		for i := range weights {
			weights[i] /= g
			sum += weights[i]
		}
	}
	if sum > maxSchedule {
		scaled := uint64(0)
		for i := range weights {
			weights[i] = max(weights[i]*maxSchedule/sum, 1)
			scaled += weights[i]
		}
		sum = scaled
	}
	current := make([]int64, len(hosts))
	out := make([]uint32, 0, sum)
	for range sum {
		best := 0
		for i := range current {
			current[i] += int64(weights[i])
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= int64(sum)
		out = append(out, uint32(best))
	}
	return out
}

func gcdAll(ws []uint64) uint64 {
	g := ws[0]
	for _, w := range ws[1:] {
		for w != 0 {
			g, w = w, g%w
		}
	}
	return g
}

// pick chooses a host from hs, or nil when none is pickable.
func pick(hs *hostSet, policy LBPolicy, rr *atomic.Uint64) *Host {
	n := uint64(len(hs.pickable))
	switch {
	case n == 0:
		return nil
	case n == 1:
		return hs.pickable[0]
	}
	switch policy {
	case Random:
		if hs.schedule != nil {
			return hs.pickable[hs.schedule[rand.Uint64N(uint64(len(hs.schedule)))]]
		}
		return hs.pickable[rand.Uint64N(n)]
	case LeastRequest:
		if hs.schedule == nil {
			a := hs.pickable[rand.Uint64N(n)]
			b := hs.pickable[rand.Uint64N(n)]
			if b.RequestsActive() < a.RequestsActive() {
				return b
			}
			return a
		}
	}
	i := rr.Add(1) - 1
	if hs.schedule != nil {
		return hs.pickable[hs.schedule[i%uint64(len(hs.schedule))]]
	}
	return hs.pickable[i%n]
}

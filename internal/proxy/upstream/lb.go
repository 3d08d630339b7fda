package upstream

import (
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
)

// hostSet is an immutable view of a cluster's hosts and everything the load balancer precomputes
// from them (per-priority load, panic state, locality weights, schedules, hash rings). It is rebuilt
// whole when endpoints or host health change, never per request, so Pick does not allocate.
type hostSet struct {
	all    []*Host
	levels []*level // indexed by priority
	// healthyLoad and degradedLoad are each level's share of traffic in percent; together they add
	// up to 100 (Envoy's per_priority_load).
	healthyLoad, degradedLoad []uint32
	healthyCount              int
}

// level is one priority's hosts.
type level struct {
	hosts, healthy, degraded []*Host
	panic                    bool
	// all, healthySrc and degradedSrc are what the non-hash balancers choose from.
	allSrc, healthySrc, degradedSrc *source
	// localities are the healthy hosts per locality and their effective weights (cumulative), when
	// the cluster is locality weighted.
	localities []*source
	cumWeights []float64
	// hashed is the ring or Maglev table of a hash-based cluster.
	hashed hashTable
}

// source is one set of hosts a balancer chooses among, with its precomputed schedules.
type source struct {
	hosts []*Host
	// schedule is a smooth weighted round-robin sequence of indexes into hosts; nil when all weights
	// are equal and plain rotation does the same job.
	schedule []uint32
	// edf schedules weighted least request; nil unless the cluster uses it with unequal weights.
	edf *edf
}

// hashTable is a consistent-hash lookup: ring hash or Maglev.
type hashTable interface {
	lookup(hash uint64) *Host
}

// maxSchedule bounds the weighted sequence; larger weight sums are scaled down to fit.
const maxSchedule = 4096

func newSource(hosts []*Host, policy LBPolicy, bias float64) *source {
	s := &source{hosts: hosts, schedule: weightedSchedule(hosts)}
	if policy == LeastRequest && s.schedule != nil {
		s.edf = newEDF(hosts, bias)
	}
	return s
}

// buildHostSet groups hosts by priority and computes Envoy's priority load and panic state.
func buildHostSet(all []*Host, cfg *Config, overprovisioning uint32) *hostSet {
	lb := cfg.LBConfig
	hs := &hostSet{all: all}
	maxP := -1
	for _, h := range all {
		maxP = max(maxP, int(h.Priority()))
	}
	hs.levels = make([]*level, maxP+1)
	for i := range hs.levels {
		hs.levels[i] = &level{}
	}
	for _, h := range all {
		l := hs.levels[h.Priority()]
		l.hosts = append(l.hosts, h)
		switch {
		case h.Degraded():
			l.degraded = append(l.degraded, h)
		case h.Healthy():
			l.healthy = append(l.healthy, h)
			hs.healthyCount++
		}
	}
	n := len(hs.levels)
	health, degraded := make([]uint32, n), make([]uint32, n)
	for i, l := range hs.levels {
		if total := uint64(len(l.hosts)); total > 0 {
			health[i] = uint32(min(100, uint64(overprovisioning)*uint64(len(l.healthy))/total))
			degraded[i] = uint32(min(100, uint64(overprovisioning)*uint64(len(l.degraded))/total))
		}
	}
	hs.healthyLoad, hs.degradedLoad = make([]uint32, max(n, 1)), make([]uint32, max(n, 1))
	total := uint32(0)
	for i := range health {
		total += health[i] + degraded[i]
	}
	total = min(total, 100)
	if total > 0 {
		firstH, rest := distributeLoad(hs.healthyLoad, health, 100, total)
		firstD, rest := distributeLoad(hs.degradedLoad, degraded, rest, total)
		if rest > 0 {
			if firstH >= 0 {
				hs.healthyLoad[firstH] += rest
			} else if firstD >= 0 {
				hs.degradedLoad[firstD] += rest
			}
		}
	}
	// Panic: a level with too few healthy hosts balances over all of them (Envoy's
	// isHostSetInPanic); with none available anywhere every level is in panic and the load goes by
	// host count (recalculateLoadInTotalPanic).
	allPanic := n > 0
	for _, l := range hs.levels {
		pct := 0.0
		if ht := len(l.hosts); ht > 0 {
			pct = 100 * float64(len(l.healthy)+len(l.degraded)) / float64(ht)
		}
		l.panic = lb.PanicThreshold > 0 && (total == 0 || pct < lb.PanicThreshold)
		allPanic = allPanic && l.panic
	}
	if total == 0 && lb.PanicThreshold == 0 {
		hs.healthyLoad[0] = 100 // nothing is pickable; Pick finds no healthy host
	} else if allPanic {
		loadByHostCount(hs)
	}
	for _, l := range hs.levels {
		l.build(cfg, lb, overprovisioning)
	}
	return hs
}

// distributeLoad is Envoy's: each level gets its availability scaled to the total, until the load
// runs out. It returns the first level that got any (or -1) and the load left.
func distributeLoad(load, avail []uint32, totalLoad, normTotal uint32) (first int, rest uint32) {
	first = -1
	for i, a := range avail {
		l := min(totalLoad, a*100/normTotal)
		load[i] = l
		totalLoad -= l
		if l != 0 && first < 0 {
			first = i
		}
	}
	return first, totalLoad
}

func loadByHostCount(hs *hostSet) {
	total := len(hs.all)
	if total == 0 {
		hs.healthyLoad[0] = 100
		return
	}
	rest, first := uint32(100), -1
	for i, l := range hs.levels {
		hs.healthyLoad[i] = uint32(100 * len(l.hosts) / total)
		hs.degradedLoad[i] = 0
		rest -= hs.healthyLoad[i]
		if first < 0 && len(l.hosts) > 0 {
			first = i
		}
	}
	hs.healthyLoad[first] += rest
}

func (l *level) build(cfg *Config, lb LBConfig, overprovisioning uint32) {
	switch cfg.LB {
	case RingHash, Maglev:
		hosts := l.healthy
		if l.panic {
			hosts = l.hosts
		} else if len(l.degraded) > 0 {
			hosts = append(append([]*Host(nil), l.healthy...), l.degraded...)
		}
		weights := normalizedWeights(hosts, lb.LocalityWeighted)
		if cfg.LB == RingHash {
			l.hashed = newRing(hosts, weights, lb.MinRingSize, lb.MaxRingSize)
		} else {
			l.hashed = newMaglev(hosts, weights, lb.MaglevTableSize)
		}
		return
	}
	bias := lb.ActiveRequestBias
	l.allSrc = newSource(l.hosts, cfg.LB, bias)
	l.healthySrc = newSource(l.healthy, cfg.LB, bias)
	l.degradedSrc = newSource(l.degraded, cfg.LB, bias)
	if !lb.LocalityWeighted {
		return
	}
	// Envoy's effectiveLocalityWeight: the locality's weight times its availability (healthy share
	// scaled by the overprovisioning factor, capped at 1). Localities without a weight get none.
	type loc struct {
		key            Locality
		weight         uint32
		total, healthy []*Host
	}
	var locs []*loc
	index := map[Locality]*loc{}
	for _, h := range l.hosts {
		m := h.locality.Load()
		x := index[m.Locality]
		if x == nil {
			x = &loc{key: m.Locality, weight: m.LocalityWeight}
			index[m.Locality] = x
			locs = append(locs, x)
		}
		x.total = append(x.total, h)
		if h.Healthy() && !h.Degraded() {
			x.healthy = append(x.healthy, h)
		}
	}
	over := float64(overprovisioning) / 100
	cum := 0.0
	for _, x := range locs {
		eff := float64(x.weight) * min(1, over*float64(len(x.healthy))/float64(len(x.total)))
		if eff <= 0 || len(x.healthy) == 0 {
			continue
		}
		cum += eff
		l.localities = append(l.localities, newSource(x.healthy, cfg.LB, bias))
		l.cumWeights = append(l.cumWeights, cum)
	}
}

// normalizedWeights are the hosts' shares of the level, each host's weight over the total, or with
// locality weighting the host's share of its locality times the locality's share (Envoy's
// normalizeLocalityWeights).
func normalizedWeights(hosts []*Host, byLocality bool) []float64 {
	out := make([]float64, len(hosts))
	if !byLocality {
		sum := 0.0
		for _, h := range hosts {
			sum += float64(max(h.Weight(), 1))
		}
		for i, h := range hosts {
			out[i] = float64(max(h.Weight(), 1)) / sum
		}
		return out
	}
	hostSum := map[Locality]float64{}
	locWeight := map[Locality]float64{}
	for _, h := range hosts {
		m := h.locality.Load()
		hostSum[m.Locality] += float64(max(h.Weight(), 1))
		locWeight[m.Locality] = float64(m.LocalityWeight)
	}
	locSum := 0.0
	for _, w := range locWeight {
		locSum += w
	}
	for i, h := range hosts {
		m := h.locality.Load()
		if locSum > 0 {
			out[i] = float64(max(h.Weight(), 1)) / hostSum[m.Locality] * locWeight[m.Locality] / locSum
		}
	}
	return out
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

// lbState is the mutable part of a cluster's balancer that survives host set rebuilds.
type lbState struct {
	rr atomic.Uint64
}

// pick chooses a host from hs, or nil when none may be picked. hash is the request's hash for the
// hash-based policies; without one (hasHash false) they pick at random, as Envoy does.
func pick(hs *hostSet, cfg *Config, st *lbState, hash uint64, hasHash bool) *Host {
	if len(hs.all) == 0 {
		return nil
	}
	if !hasHash {
		hash = rand.Uint64()
	}
	// Envoy's choosePriority: the hash (random for the non-hash balancers) modulo 100 falls into a
	// level's healthy or degraded share.
	p, useDegraded := 0, false
	r := uint32(hash % 100)
	if cfg.LB != RingHash && cfg.LB != Maglev {
		r = uint32(rand.Uint64N(100))
	}
	acc := uint32(0)
	found := false
	for i := range hs.levels {
		acc += hs.healthyLoad[i]
		if r < acc {
			p, found = i, true
			break
		}
	}
	if !found {
		for i := range hs.levels {
			acc += hs.degradedLoad[i]
			if r < acc {
				p, useDegraded, found = i, true, true
				break
			}
		}
	}
	l := hs.levels[p]
	if l.hashed != nil {
		return l.hashed.lookup(hash)
	}
	var src *source
	switch {
	case l.panic:
		src = l.allSrc
	case useDegraded:
		src = l.degradedSrc
	default:
		src = l.healthySrc
		if len(l.localities) > 0 {
			x := rand.Float64() * l.cumWeights[len(l.cumWeights)-1]
			src = l.localities[sort.SearchFloat64s(l.cumWeights, x)%len(l.localities)]
		}
	}
	return src.pick(cfg, st)
}

func (s *source) pick(cfg *Config, st *lbState) *Host {
	n := uint64(len(s.hosts))
	switch n {
	case 0:
		return nil
	case 1:
		return s.hosts[0]
	}
	switch cfg.LB {
	case Random:
		if s.schedule != nil {
			return s.hosts[s.schedule[rand.Uint64N(uint64(len(s.schedule)))]]
		}
		return s.hosts[rand.Uint64N(n)]
	case LeastRequest:
		if s.edf != nil {
			return s.edf.pick()
		}
		// Envoy's unweighted least request: the least busy of choice_count random picks.
		best := s.hosts[rand.Uint64N(n)]
		for range cfg.LBConfig.ChoiceCount - 1 {
			if h := s.hosts[rand.Uint64N(n)]; h.RequestsActive() < best.RequestsActive() {
				best = h
			}
		}
		return best
	}
	i := st.rr.Add(1) - 1
	if s.schedule != nil {
		return s.hosts[s.schedule[i%uint64(len(s.schedule))]]
	}
	return s.hosts[i%n]
}

// edf is an earliest-deadline-first scheduler whose weights change with load: weighted least
// request's weight/(active+1)^bias, recomputed each time a host is picked (Envoy's EdfScheduler
// as LeastRequestLoadBalancer uses it).
type edf struct {
	mu      sync.Mutex
	bias    float64
	now     float64
	entries []edfEntry // a binary min-heap on deadline, then order
	seq     uint64
}

type edfEntry struct {
	deadline float64
	order    uint64
	host     *Host
}

func newEDF(hosts []*Host, bias float64) *edf {
	e := &edf{bias: bias, entries: make([]edfEntry, 0, len(hosts))}
	for _, h := range hosts {
		e.push(h)
	}
	return e
}

func (e *edf) weight(h *Host) float64 {
	w := float64(max(h.Weight(), 1))
	if e.bias == 0 {
		return w
	}
	active := float64(max(h.RequestsActive(), 0)) + 1
	if e.bias == 1 {
		return w / active
	}
	return w / math.Pow(active, e.bias)
}

func (e *edf) push(h *Host) {
	e.seq++
	e.entries = append(e.entries, edfEntry{deadline: e.now + 1/e.weight(h), order: e.seq, host: h})
	i := len(e.entries) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !e.less(i, p) {
			break
		}
		e.entries[i], e.entries[p] = e.entries[p], e.entries[i]
		i = p
	}
}

func (e *edf) less(a, b int) bool {
	x, y := &e.entries[a], &e.entries[b]
	return x.deadline < y.deadline || x.deadline == y.deadline && x.order < y.order
}

func (e *edf) pick() *Host {
	e.mu.Lock()
	defer e.mu.Unlock()
	top := e.entries[0]
	last := len(e.entries) - 1
	e.entries[0] = e.entries[last]
	e.entries = e.entries[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && e.less(l, m) {
			m = l
		}
		if r < last && e.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		e.entries[i], e.entries[m] = e.entries[m], e.entries[i]
		i = m
	}
	e.now = top.deadline
	e.push(top.host)
	return top.host
}

// unhealthy counts hosts that are neither healthy nor degraded.
func (hs *hostSet) unhealthy() int {
	n := 0
	for _, h := range hs.all {
		if !h.Healthy() {
			n++
		}
	}
	return n
}

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/bench/internal/procfs"
	"github.com/trellis-mesh/trellis/bench/internal/wrk"
)

// Scenario names, also the keys of -only.
const (
	scenarioMaxRPS    = "maxrps"
	scenarioLatency   = "latency"
	scenarioFootprint = "footprint"
)

// plan is how long and how hard each step loads; quick shortens every duration.
type plan struct {
	Quick         bool          `json:"quick"`
	WrkWarmup     time.Duration `json:"wrk_warmup_ns"`
	WrkDuration   time.Duration `json:"wrk_duration_ns"`
	WrkConns      int           `json:"wrk_connections"`
	Rates         []int         `json:"rates"`
	AttackWarmup  time.Duration `json:"attack_warmup_ns"`
	AttackDur     time.Duration `json:"attack_duration_ns"`
	Settle        time.Duration `json:"settle_ns"` // after start, before reading idle RSS
	FootprintRate int           `json:"footprint_rate"`
	Clusters      int           `json:"footprint_clusters"`
	CoreCounts    []int         `json:"core_counts"`
}

func newPlan(quick bool) plan {
	p := plan{
		WrkWarmup: 2 * time.Second, WrkDuration: 10 * time.Second, WrkConns: 64,
		Rates: []int{1000, 5000}, AttackWarmup: 2 * time.Second, AttackDur: 10 * time.Second,
		Settle: 2 * time.Second, FootprintRate: 5000, Clusters: 100, CoreCounts: []int{1, 2},
	}
	if quick {
		p.Quick = true
		p.WrkWarmup, p.WrkDuration = time.Second, 3*time.Second
		p.AttackWarmup, p.AttackDur = time.Second, 3*time.Second
		p.Settle = time.Second
	}
	return p
}

// layout places the proxy and the rig (load generator + backend) on CPUs.
type layout struct {
	Cores     int    `json:"cores"`      // the proxy's cores
	ProxyCPUs string `json:"proxy_cpus"` // taskset list
	RigCPUs   string `json:"rig_cpus"`   // "" when the rig shares the proxy's CPUs
	RigCores  int    `json:"rig_cores"`
}

// planLayout gives the proxy the first cores CPUs and the rig the rest; when none are left the
// rig runs unpinned, sharing every CPU with the proxy.
func planLayout(cores int, cpus []int) (layout, error) {
	if cores > len(cpus) {
		return layout{}, fmt.Errorf("%d cores wanted, %d CPUs allowed", cores, len(cpus))
	}
	l := layout{Cores: cores, ProxyCPUs: cpuList(cpus[:cores])}
	if rest := cpus[cores:]; len(rest) > 0 {
		l.RigCPUs, l.RigCores = cpuList(rest), len(rest)
	} else {
		l.RigCores = len(cpus)
	}
	return l, nil
}

func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// run is one measured load step.
type run struct {
	Scenario string        `json:"scenario"`
	Peer     string        `json:"peer"`
	Cores    int           `json:"cores"`
	Hops     int           `json:"hops"`
	Clusters int           `json:"clusters"`
	Rate     int           `json:"requested_rate,omitempty"`
	Layout   layout        `json:"layout"`
	Wrk      *wrk.Result   `json:"wrk,omitempty"`
	WrkRaw   string        `json:"wrk_output,omitempty"`
	Attack   *attackResult `json:"attack,omitempty"`
	Usage    *usage        `json:"proxy_usage,omitempty"` // nil for direct
	// TimeWait is the number of TCP sockets in TIME_WAIT when the step began (see quiesce).
	TimeWait int    `json:"time_wait_before"`
	Err      string `json:"error,omitempty"`
}

// usage is what the proxy processes (all hops together) cost during one run.
type usage struct {
	CPU        time.Duration `json:"cpu_ns"`
	Requests   uint64        `json:"requests"`
	CPUPer1000 float64       `json:"cpu_seconds_per_1000_requests"`
	IdleRSSKB  int64         `json:"idle_rss_kb"`
	PeakRSSKB  int64         `json:"peak_rss_kb"` // highest sampled sum of VmRSS under load
	HWMKB      int64         `json:"hwm_kb"`      // sum of VmHWM after the load
	Procs      int           `json:"procs"`
}

// bench holds what every scenario needs.
type bench struct {
	ps    *procs
	tools tools
	plan  plan
	cpus  []int
	dir   string // scratch: configs and logs of this run
	proc  procfs.Reader
	runs  []run
}

// quiesce waits (at most 70 s, TIME_WAIT's 60 s and change) while more than half of the
// ephemeral ports sit in TIME_WAIT, left by an earlier step whose target was saturated, so one
// step's connection churn cannot fail the next one's connects. It returns the count it left at.
func (b *bench) quiesce(ctx context.Context) int {
	read := func() int {
		raw, err := os.ReadFile("/proc/net/sockstat")
		if err != nil {
			return 0
		}
		n, _ := procfs.ParseSockstatTimeWait(raw)
		return n
	}
	n := read()
	deadline := time.Now().Add(70 * time.Second)
	for n > 14000 && time.Now().Before(deadline) && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "proxybench: %d sockets in TIME_WAIT, waiting for them to expire\n", n)
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
		n = read()
	}
	return n
}

func (b *bench) record(r run, err error) {
	if err != nil {
		r.Err = err.Error()
		fmt.Fprintf(os.Stderr, "proxybench: %s %s cores=%d hops=%d rate=%d: %v\n", r.Scenario, r.Peer, r.Cores, r.Hops, r.Rate, err)
	} else {
		fmt.Fprintf(os.Stderr, "proxybench: %s\n", r.summary())
	}
	b.runs = append(b.runs, r)
}

// chain is a running direct path or proxy chain: its entry port and its proxies.
type chain struct {
	port    int
	proxies []*proc
}

func (c chain) pgids() []int {
	ids := make([]int, len(c.proxies))
	for i, p := range c.proxies {
		ids[i] = p.pgid()
	}
	return ids
}

// startChain starts hops proxies of kind in front of the backend, the last hop first, all on
// the layout's proxy CPUs: client → hop 1 → … → hop N → backend.
func (b *bench) startChain(ctx context.Context, kind string, hops, clusters, backendPort int, l layout) (chain, error) {
	c := chain{port: backendPort}
	for i := hops; i >= 1; i-- {
		port, err := freePort()
		if err != nil {
			return c, err
		}
		h := hop{Dir: filepath.Join(b.dir, fmt.Sprintf("%s-%dc-%dh-%dcl-hop%d", kind, l.Cores, hops, clusters, i)),
			Port: port, Upstream: c.port, Cores: l.Cores}
		for n := 1; n < clusters; n++ {
			h.Extra = append(h.Extra, n)
		}
		p, err := startPeer(ctx, b.ps, b.tools, kind, filepath.Base(h.Dir), l.ProxyCPUs, h)
		if err != nil {
			b.stopChain(c)
			return chain{}, err
		}
		c.proxies = append(c.proxies, p)
		c.port = port
	}
	return c, nil
}

func (b *bench) stopChain(c chain) {
	for _, p := range c.proxies {
		b.ps.stop(p)
	}
}

func (b *bench) withBackend(ctx context.Context, l layout, fn func(port int) error) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	workers := max(1, min(l.RigCores, l.Cores))
	be, err := startBackend(ctx, b.ps, b.tools, filepath.Join(b.dir, fmt.Sprintf("backend-%dc", l.Cores)), l.RigCPUs, port, workers)
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	defer b.ps.stop(be)
	return fn(port)
}

// sampler reads the proxies' groups: CPU at start and end, RSS every 100 ms in between.
type sampler struct {
	reader procfs.Reader
	pgids  []int

	start   procfs.Sample
	mu      sync.Mutex
	peakRSS int64
	err     error
	stop    chan struct{}
	done    chan struct{}
}

func (b *bench) sum(pgids []int) (procfs.Sample, error) {
	var s procfs.Sample
	for _, id := range pgids {
		g, err := b.proc.Group(id)
		if err != nil {
			return s, err
		}
		s.Procs += g.Procs
		s.CPU += g.CPU
		s.RSS += g.RSS
		s.HWM += g.HWM
	}
	return s, nil
}

func (b *bench) startSampling(pgids []int) *sampler {
	s := &sampler{reader: b.proc, pgids: pgids, stop: make(chan struct{}), done: make(chan struct{})}
	s.start, s.err = b.sum(pgids)
	s.peakRSS = s.start.RSS
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			cur, err := b.sum(pgids)
			s.mu.Lock()
			if err != nil && s.err == nil {
				s.err = err
			}
			s.peakRSS = max(s.peakRSS, cur.RSS)
			s.mu.Unlock()
		}
	}()
	return s
}

// finish stops sampling and fills u from the CPU spent since start.
func (b *bench) finish(s *sampler, u *usage, requests uint64) error {
	close(s.stop)
	<-s.done
	end, err := b.sum(s.pgids)
	if s.err != nil {
		return s.err
	}
	if err != nil {
		return err
	}
	u.CPU = end.CPU - s.start.CPU
	u.Requests = requests
	if requests > 0 {
		u.CPUPer1000 = u.CPU.Seconds() / float64(requests) * 1000
	}
	u.PeakRSSKB = max(s.peakRSS, end.RSS)
	u.HWMKB = end.HWM
	u.Procs = end.Procs
	return nil
}

func (b *bench) idle(ctx context.Context, c chain) (*usage, error) {
	if len(c.proxies) == 0 {
		return nil, nil
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(b.plan.Settle):
	}
	s, err := b.sum(c.pgids())
	if err != nil {
		return nil, err
	}
	return &usage{IdleRSSKB: s.RSS, Procs: s.Procs}, nil
}

// wrk runs closed-loop keep-alive load against port on the rig's CPUs.
func (b *bench) wrk(ctx context.Context, l layout, port int, d time.Duration) (*wrk.Result, string, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	threads := max(1, min(l.Cores, l.RigCores))
	argv := []string{b.tools.wrk, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(b.plan.WrkConns),
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency", "--timeout", "2s", fmt.Sprintf("http://127.0.0.1:%d/", port)}
	out, err := b.ps.runOutput(ctx, "wrk", l.RigCPUs, nil, argv, nil)
	if err != nil {
		return nil, out, err
	}
	r, err := wrk.Parse(out)
	if err != nil {
		return nil, out, err
	}
	return &r, out, nil
}

// maxRPS: wrk, keep-alive, closed loop, through one proxy on `cores` cores; first straight at
// the backend, which is the rig's own ceiling.
func (b *bench) maxRPS(ctx context.Context, cores int) error {
	l, err := planLayout(cores, b.cpus)
	if err != nil {
		return err
	}
	return b.withBackend(ctx, l, func(backend int) error {
		for _, peer := range append([]string{peerDirect}, proxyPeers...) {
			r := run{Scenario: scenarioMaxRPS, Peer: peer, Cores: cores, Clusters: 1, Layout: l, TimeWait: b.quiesce(ctx)}
			if peer != peerDirect {
				r.Hops = 1
			}
			err := b.maxRPSOne(ctx, &r, backend)
			b.record(r, err)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		return nil
	})
}

func (b *bench) maxRPSOne(ctx context.Context, r *run, backend int) error {
	c, err := b.startChain(ctx, r.Peer, r.Hops, 1, backend, r.Layout)
	if err != nil {
		return err
	}
	defer b.stopChain(c)
	if r.Usage, err = b.idle(ctx, c); err != nil {
		return err
	}
	if _, out, err := b.wrk(ctx, r.Layout, c.port, b.plan.WrkWarmup); err != nil {
		return fmt.Errorf("warm-up: %w: %s", err, out)
	}
	var s *sampler
	if r.Usage != nil {
		s = b.startSampling(c.pgids())
	}
	r.Wrk, r.WrkRaw, err = b.wrk(ctx, r.Layout, c.port, b.plan.WrkDuration)
	if s != nil {
		var n uint64
		if r.Wrk != nil {
			n = uint64(r.Wrk.Requests)
		}
		if ferr := b.finish(s, r.Usage, n); err == nil {
			err = ferr
		}
	}
	if err == nil {
		err = b.healthy(c)
	}
	return err
}

// healthy fails a run whose proxy died under load.
func (b *bench) healthy(c chain) error {
	for _, p := range c.proxies {
		if err := b.ps.exited(p); err != nil {
			return err
		}
	}
	return nil
}

// latency: vegeta at each fixed rate, straight at the backend and through 1 and 2 hops of each
// peer, every proxy on one core.
func (b *bench) latency(ctx context.Context) error {
	l, err := planLayout(1, b.cpus)
	if err != nil {
		return err
	}
	return b.withBackend(ctx, l, func(backend int) error {
		type path struct {
			peer string
			hops int
		}
		paths := []path{{peerDirect, 0}}
		for _, p := range proxyPeers {
			paths = append(paths, path{p, 1}, path{p, 2})
		}
		for _, p := range paths {
			tw := b.quiesce(ctx)
			c, err := b.startChain(ctx, p.peer, p.hops, 1, backend, l)
			idle, ierr := (*usage)(nil), error(nil)
			if err == nil {
				idle, ierr = b.idle(ctx, c)
			}
			for _, rate := range b.plan.Rates {
				r := run{Scenario: scenarioLatency, Peer: p.peer, Cores: 1, Hops: p.hops, Clusters: 1, Rate: rate, Layout: l, TimeWait: tw}
				if rate != b.plan.Rates[0] {
					r.TimeWait = b.quiesce(ctx)
				}
				switch {
				case err != nil:
					b.record(r, err)
				case ierr != nil:
					b.record(r, ierr)
				default:
					if idle != nil {
						u := *idle
						r.Usage = &u
					}
					b.record(r, b.attack(ctx, &r, c, rate))
				}
				if ctx.Err() != nil {
					b.stopChain(c)
					return ctx.Err()
				}
			}
			b.stopChain(c)
		}
		return nil
	})
}

func (b *bench) attack(ctx context.Context, r *run, c chain, rate int) error {
	var s *sampler
	onStart := func() {
		if r.Usage != nil {
			s = b.startSampling(c.pgids())
		}
	}
	var ferr error
	onEnd := func() {
		if s != nil {
			ferr = b.finish(s, r.Usage, 0)
			s = nil
		}
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", c.port)
	res, err := runAttack(ctx, b.ps, r.Layout.RigCPUs, min(r.Layout.RigCores, 4), url, rate, b.plan.AttackWarmup, b.plan.AttackDur, onStart, onEnd)
	if s != nil { // the attack failed between its markers
		_ = b.finish(s, r.Usage, 0)
	}
	if err != nil {
		return err
	}
	r.Attack = res
	if r.Usage != nil {
		r.Usage.Requests = res.Requests
		if res.Requests > 0 {
			r.Usage.CPUPer1000 = r.Usage.CPU.Seconds() / float64(res.Requests) * 1000
		}
	}
	if ferr != nil {
		return ferr
	}
	return b.healthy(c)
}

// footprint: each peer with 100 clusters (99 extra routes before the catch-all): RSS idle, then
// peak RSS and CPU per request under the highest fixed rate.
func (b *bench) footprint(ctx context.Context) error {
	l, err := planLayout(1, b.cpus)
	if err != nil {
		return err
	}
	return b.withBackend(ctx, l, func(backend int) error {
		for _, peer := range proxyPeers {
			r := run{Scenario: scenarioFootprint, Peer: peer, Cores: 1, Hops: 1, Clusters: b.plan.Clusters, Rate: b.plan.FootprintRate, Layout: l,
				TimeWait: b.quiesce(ctx)}
			err := func() error {
				c, err := b.startChain(ctx, peer, 1, b.plan.Clusters, backend, l)
				if err != nil {
					return err
				}
				defer b.stopChain(c)
				if r.Usage, err = b.idle(ctx, c); err != nil {
					return err
				}
				return b.attack(ctx, &r, c, r.Rate)
			}()
			b.record(r, err)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		return nil
	})
}

func (r run) summary() string {
	s := fmt.Sprintf("%s %s cores=%d hops=%d clusters=%d", r.Scenario, r.Peer, r.Cores, r.Hops, r.Clusters)
	if r.Wrk != nil {
		s += fmt.Sprintf(" rps=%.0f p99=%v errors=%d", r.Wrk.RPS, r.Wrk.Percentiles[99], r.Wrk.Non2xx3xx+r.Wrk.SocketErrs.Total())
	}
	if a := r.Attack; a != nil {
		s += fmt.Sprintf(" rate=%d actual=%.0f success=%.4f p50=%v p90=%v p99=%v", a.RequestedRate, a.ActualRate, a.Success, a.P50, a.P90, a.P99)
	}
	if u := r.Usage; u != nil {
		s += fmt.Sprintf(" cpu/1000req=%.4fs idleRSS=%dKiB peakRSS=%dKiB", u.CPUPer1000, u.IdleRSSKB, u.PeakRSSKB)
	}
	return s
}

package upstream

import (
	"fmt"
	"math"
	"strconv"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
)

// level describes one priority for the load table: hosts in it and how many are healthy.
type lvl struct{ total, healthy int }

func hostsFor(levels []lvl) []*Host {
	var all []*Host
	for p, l := range levels {
		for i := range l.total {
			h := newHost(fmt.Sprintf("10.0.%d.%d:80", p, i))
			h.weight.Store(1)
			h.priority.Store(uint32(p))
			h.setFlag(FailedEDSHealth, i >= l.healthy)
			all = append(all, h)
		}
	}
	return all
}

func TestPriorityLoadFollowsEnvoysOverprovisioningAndPanic(t *testing.T) {
	tests := []struct {
		name      string
		levels    []lvl
		panic     float64
		wantLoad  []uint32
		wantPanic []bool
	}{
		{"all healthy P0 takes everything", []lvl{{4, 4}, {4, 4}}, 50, []uint32{100, 0}, []bool{false, false}},
		{"80% healthy is still 100% with factor 1.4", []lvl{{5, 4}, {4, 4}}, 50, []uint32{100, 0}, []bool{false, false}},
		{"half healthy spills 30% to P1", []lvl{{4, 2}, {4, 4}}, 50, []uint32{70, 30}, []bool{false, false}},
		{"quarter healthy: P0 in panic keeps its 35%", []lvl{{4, 1}, {4, 4}}, 50, []uint32{35, 65}, []bool{true, false}},
		{"P0 down: P1 takes all", []lvl{{4, 0}, {4, 4}}, 50, []uint32{0, 100}, []bool{true, false}},
		{"all down: total panic splits by host count", []lvl{{3, 0}, {1, 0}}, 50, []uint32{75, 25}, []bool{true, true}},
		{"panic threshold 0: never panic", []lvl{{4, 1}, {4, 0}}, 0, []uint32{100, 0}, []bool{false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{LBConfig: LBConfig{PanicThreshold: tt.panic, HasPanicThreshold: true}.withDefaults()}
			hs := buildHostSet(hostsFor(tt.levels), &cfg, DefaultOverprovisioningFactor)
			if fmt.Sprint(hs.healthyLoad) != fmt.Sprint(tt.wantLoad) {
				t.Errorf("load %v, want %v", hs.healthyLoad, tt.wantLoad)
			}
			for i, l := range hs.levels {
				if l.panic != tt.wantPanic[i] {
					t.Errorf("P%d panic %v, want %v", i, l.panic, tt.wantPanic[i])
				}
			}
		})
	}
}

func TestPriorityFailoverWhenP0HostsBecomeUnhealthyWithPanicThreshold(t *testing.T) {
	e := eps("a:1", "b:1", "c:1", "d:1")
	e[2].Priority, e[3].Priority = 1, 1
	c := New(Config{Name: "c", Endpoints: e}, stats.NewStore())
	t.Cleanup(c.Close)
	if got := pickCounts(c, 1000); got["c:1"]+got["d:1"] != 0 {
		t.Fatalf("healthy P0, yet P1 got traffic: %v", got)
	}
	e[0].Healthy = false // P0 is 50% healthy: 70% of the load stays, 30% spills to P1
	c.SetEndpoints(e)
	got := pickCounts(c, 4000)
	if got["a:1"] != 0 || got["b:1"] < 2400 || got["b:1"] > 3200 {
		t.Fatalf("half-healthy P0: %v", got)
	}
	e[1].Healthy = false // P0 down: P1 takes everything
	c.SetEndpoints(e)
	if got := pickCounts(c, 1000); got["c:1"]+got["d:1"] != 1000 {
		t.Fatalf("P0 down: %v", got)
	}
	e[2].Healthy, e[3].Healthy = false, false // everything down: panic, all hosts by count
	c.SetEndpoints(e)
	got = pickCounts(c, 4000)
	for _, a := range []string{"a:1", "b:1", "c:1", "d:1"} {
		if got[a] < 700 {
			t.Fatalf("total panic should use every host: %v", got)
		}
	}
}

func TestLeastRequestPrefersTheIdleHost(t *testing.T) {
	c := New(Config{Name: "c", LB: LeastRequest, Endpoints: eps("busy:1", "idle:1")}, stats.NewStore())
	t.Cleanup(c.Close)
	for _, h := range c.Hosts() {
		if h.Address == "busy:1" {
			for range 5 {
				h.Begin()
			}
		}
	}
	got := pickCounts(c, 1000)
	// Two random choices both land on the busy host a quarter of the time.
	if got["idle:1"] < 650 {
		t.Fatalf("got %v", got)
	}
}

func TestWeightedLeastRequestDividesWeightByActiveRequests(t *testing.T) {
	e := eps("a:1", "b:1")
	e[0].Weight, e[1].Weight = 2, 1
	c := New(Config{Name: "c", LB: LeastRequest, Endpoints: e}, stats.NewStore())
	t.Cleanup(c.Close)
	if got := pickCounts(c, 3000); got["a:1"] < 1900 || got["a:1"] > 2100 {
		t.Fatalf("idle hosts should split 2:1 by weight: %v", got)
	}
	for _, h := range c.Hosts() {
		if h.Address == "a:1" {
			for range 3 {
				h.Begin() // weight 2/(3+1) = 0.5 against b's 1
			}
		}
	}
	if got := pickCounts(c, 3000); got["b:1"] < 1900 || got["b:1"] > 2100 {
		t.Fatalf("busy a should now get a third: %v", got)
	}
}

func TestLocalityWeightsSplitTrafficByWeight(t *testing.T) {
	var e []Endpoint
	for i := range 2 {
		e = append(e, Endpoint{Address: "west" + strconv.Itoa(i) + ":1", Healthy: true, Locality: Locality{Zone: "west"}, LocalityWeight: 3})
	}
	for i := range 4 {
		e = append(e, Endpoint{Address: "east" + strconv.Itoa(i) + ":1", Healthy: true, Locality: Locality{Zone: "east"}, LocalityWeight: 1})
	}
	c := New(Config{Name: "c", LBConfig: LBConfig{LocalityWeighted: true}, Endpoints: e}, stats.NewStore())
	t.Cleanup(c.Close)
	got := pickCounts(c, 8000)
	west := got["west0:1"] + got["west1:1"]
	if west < 5600 || west > 6400 {
		t.Fatalf("west (weight 3 of 4) got %d of 8000: %v", west, got)
	}
	// Half of west down: its availability is 0.5*1.4 = 0.7, so its effective weight is 2.1 vs 1.
	e[0].Healthy = false
	c.SetEndpoints(e)
	got = pickCounts(c, 8000)
	if got["west0:1"] != 0 || got["west1:1"] < 5000 || got["west1:1"] > 5800 {
		t.Fatalf("degraded locality: %v", got)
	}
}

// hashKeys returns which host each of n request hashes goes to.
func hashKeys(c *Cluster, n int) map[uint64]string {
	out := make(map[uint64]string, n)
	for i := range n {
		k := uint64(i) * 0x9e3779b97f4a7c15
		out[k] = c.PickHash(k).Address
	}
	return out
}

func TestHashBalancersKeepKeysOnOneHostAndMoveAboutOneNthOnRemoval(t *testing.T) {
	for _, lb := range []LBPolicy{RingHash, Maglev} {
		t.Run(lb.String(), func(t *testing.T) {
			addrs := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80", "10.0.0.5:80"}
			c := New(Config{Name: "c", LB: lb, Endpoints: eps(addrs...)}, stats.NewStore())
			t.Cleanup(c.Close)
			before := hashKeys(c, 5000)
			again := hashKeys(c, 5000)
			per := map[string]int{}
			for k, h := range before {
				if again[k] != h {
					t.Fatalf("key %d moved from %s to %s without a change", k, h, again[k])
				}
				per[h]++
			}
			for _, a := range addrs {
				if per[a] < 500 || per[a] > 1600 {
					t.Fatalf("uneven spread: %v", per)
				}
			}
			c.SetEndpoints(eps(addrs[:4]...))
			after := hashKeys(c, 5000)
			moved, fromSurvivors := 0, 0
			for k, h := range before {
				if after[k] != h {
					moved++
					if h != addrs[4] {
						fromSurvivors++
					}
				}
			}
			// Both are rebuilt, so some keys of surviving hosts move too, as in Envoy: Maglev's table
			// shifts a little, and the ring gives each surviving host more hashes (1024/4 instead of
			// 1024/5), whose new points take about a tenth of the keys.
			limit := 250
			if lb == RingHash {
				limit = 750
			}
			if moved < 800 || fromSurvivors > limit {
				t.Fatalf("%d of 5000 keys moved (%d from surviving hosts), want about 1/5", moved, fromSurvivors)
			}
		})
	}
}

func TestHashBalancersWithoutAHashPickAtRandom(t *testing.T) {
	c := New(Config{Name: "c", LB: RingHash, Endpoints: eps("a:1", "b:1", "c:1")}, stats.NewStore())
	t.Cleanup(c.Close)
	got := pickCounts(c, 3000)
	if len(got) != 3 {
		t.Fatalf("got %v", got)
	}
}

func TestMaglevTableHonoursWeights(t *testing.T) {
	hosts := hostsFor([]lvl{{2, 2}})
	hosts[0].weight.Store(3)
	m := newMaglev(hosts, normalizedWeights(hosts, false), 65537)
	n := 0
	for _, h := range m.table {
		if h == hosts[0] {
			n++
		}
	}
	if f := float64(n) / 65537; math.Abs(f-0.75) > 0.01 {
		t.Fatalf("weight 3 of 4 got %.3f of the table", f)
	}
}

func TestRingSizeIsBoundedByMinimumAndMaximum(t *testing.T) {
	hosts := hostsFor([]lvl{{3, 3}})
	w := normalizedWeights(hosts, false)
	if r := newRing(hosts, w, 1024, 8<<20); len(r.hashes) < 1024 || len(r.hashes) > 1026 {
		t.Fatalf("ring of %d entries", len(r.hashes))
	}
	if r := newRing(hosts, w, 1024, 12); len(r.hashes) != 12 {
		t.Fatalf("max ring size 12 gave %d entries", len(r.hashes))
	}
}

func BenchmarkPickHashRing(b *testing.B) {
	c := New(Config{Name: "c", LB: RingHash, Endpoints: eps("a:1", "b:1", "c:1")}, stats.NewStore())
	b.ReportAllocs()
	for i := range b.N {
		_ = c.PickHash(uint64(i))
	}
}

func BenchmarkPickLocalityWeightedLeastRequest(b *testing.B) {
	e := eps("a:1", "b:1", "c:1")
	e[0].Weight = 3
	c := New(Config{Name: "c", LB: LeastRequest, LBConfig: LBConfig{LocalityWeighted: true}, Endpoints: e}, stats.NewStore())
	b.ReportAllocs()
	for range b.N {
		_ = c.Pick()
	}
}

func TestDegradedHostsTakeOnlyWhatHealthyHostsCannot(t *testing.T) {
	e := eps("a:1", "b:1", "c:1", "d:1")
	e[2].Degraded, e[3].Degraded = true, true
	c := New(Config{Name: "c", Endpoints: e}, stats.NewStore())
	t.Cleanup(c.Close)
	// Two healthy of four: 140*2/4 = 70% to the healthy hosts, 70% available from the degraded
	// ones, which get the remaining 30%.
	got := pickCounts(c, 10000)
	if deg := got["c:1"] + got["d:1"]; deg < 2600 || deg > 3400 {
		t.Fatalf("degraded hosts got %d of 10000: %v", deg, got)
	}
	e[2].Degraded, e[3].Degraded = false, false
	c.SetEndpoints(e)
	if got := pickCounts(c, 4000); got["c:1"] < 700 || got["d:1"] < 700 {
		t.Fatalf("after recovering: %v", got)
	}
}

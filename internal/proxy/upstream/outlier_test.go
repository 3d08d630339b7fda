package upstream

import (
	"strconv"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
)

// fiveHosts is a cluster of five hosts whose outlier interval never fires by itself: the test runs
// the detector's interval with tick.
func fiveHosts(t *testing.T, od OutlierConfig) (*Cluster, *stats.Store) {
	var e []Endpoint
	for i := range 5 {
		e = append(e, Endpoint{Address: "10.0.0." + strconv.Itoa(i+1) + ":80", Healthy: true})
	}
	od.Interval = time.Hour
	store := stats.NewStore()
	c := New(Config{Name: "sr", Outlier: &od, Endpoints: e}, store)
	t.Cleanup(c.Close)
	return c, store
}

func TestSuccessRateEjectsTheHostFarBelowTheMean(t *testing.T) {
	od := DefaultOutlierConfig
	od.MaxEjectionPercent = 20
	od.Consecutive5xx = 1000 // keep consecutive-5xx detection out of it
	c, store := fiveHosts(t, od)
	hosts := c.Hosts()
	for i, h := range hosts {
		for n := range 200 {
			code := 200
			if i == 0 && n%2 == 0 {
				code = 500 // 50% success against everyone else's 100%
			}
			c.ReportResponse(h, code)
		}
	}
	c.od.tick(time.Now())
	if !hostEjected(hosts[0]) || store.Counter("cluster.sr.outlier_detection.ejections_enforced_success_rate").Value() != 1 {
		t.Fatalf("flags %q, enforced %d", hosts[0].HealthFlags(), store.Counter("cluster.sr.outlier_detection.ejections_enforced_success_rate").Value())
	}
	// mean 90, stdev 20: threshold 90 - 1.9*20 = 52.
	if info, _ := c.Outlier(); info.SuccessRateAverage != 90 || info.SuccessRateEjectionThreshold != 52 {
		t.Fatalf("figures %+v", info)
	}
	if sr, _ := c.SuccessRate(hosts[1]); sr != 100 {
		t.Fatalf("host success rate %v", sr)
	}
}

func TestSuccessRateNeedsEnoughHostsWithEnoughRequests(t *testing.T) {
	c, _ := fiveHosts(t, DefaultOutlierConfig)
	for _, h := range c.Hosts() {
		for range 99 { // one short of success_rate_request_volume
			c.ReportResponse(h, 404)
		}
	}
	c.ReportResponse(c.Hosts()[0], 500)
	c.od.tick(time.Now())
	if info, _ := c.Outlier(); info.SuccessRateAverage != -1 {
		t.Fatalf("success rate computed from too few requests: %+v", info)
	}
}

func TestFailurePercentageEjectsHostsAtTheThresholdWhenEnforced(t *testing.T) {
	od := DefaultOutlierConfig
	od.MaxEjectionPercent, od.EnforcingSuccessRate, od.EnforcingFailurePercentage, od.Consecutive5xx = 100, 0, 100, 1000
	c, store := fiveHosts(t, od)
	hosts := c.Hosts()
	failures := []int{54, 48, 0, 0, 0} // of 60: 90% and 80%
	for i, h := range hosts {
		for n := range 60 {
			code := 200
			if n < failures[i] {
				code = 503
			}
			c.ReportResponse(h, code)
		}
	}
	c.od.tick(time.Now())
	if !hostEjected(hosts[0]) || hostEjected(hosts[1]) {
		t.Fatalf("90%% failing: %q, 80%% failing: %q (threshold 85%%)", hosts[0].HealthFlags(), hosts[1].HealthFlags())
	}
	if store.Counter("cluster.sr.outlier_detection.ejections_enforced_failure_percentage").Value() != 1 {
		t.Fatal("ejections_enforced_failure_percentage not counted")
	}
}

func TestEjectionTimeGrowsWithEachEjectionUpToTheMaximum(t *testing.T) {
	od := DefaultOutlierConfig
	od.Consecutive5xx, od.MaxEjectionPercent = 1, 100
	od.BaseEjectionTime, od.MaxEjectionTime = 10*time.Second, 25*time.Second
	c, _ := fiveHosts(t, od)
	h := c.Hosts()[0]
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 25 * time.Second} {
		c.ReportResponse(h, 500)
		if !hostEjected(h) {
			t.Fatalf("ejection %d did not happen", i+1)
		}
		at := h.od.lastEjection
		c.od.tick(at.Add(want - time.Millisecond))
		if !hostEjected(h) {
			t.Fatalf("ejection %d ended before %s", i+1, want)
		}
		c.od.tick(at.Add(want))
		if hostEjected(h) {
			t.Fatalf("ejection %d lasted beyond %s", i+1, want)
		}
	}
}

func hostEjected(h *Host) bool { return h.Flags()&FailedOutlierCheck != 0 }

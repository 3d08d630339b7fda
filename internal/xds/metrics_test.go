package xds

import (
	"testing"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

// metricValue sums the series of a metric family whose labels include
// want: a counter's or gauge's value, a histogram's sample count.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for k, v := range want {
				if !hasLabel(m, k, v) {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k {
			return l.GetValue() == v
		}
	}
	return false
}

func expectMetric(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string, want float64) {
	t.Helper()
	eventually(t, pushDeadline, name, func() bool { return metricValue(t, g, name, labels) == want })
}

func TestMetricsFollowConnectsPushesACKsAndNACKs(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, conn := startServer(t, newStub(), func(o *Options) { o.Metrics = NewMetrics(reg) })
	srv.Update(meshSnapshot("127.0.1.3"))

	// Three proxies connect and walk the whole handshake: one response of
	// each type apiece.
	ids := []string{productpageID, reviewsID, "sidecar~127.0.1.5~ratings-v1.default~default.svc.cluster.local"}
	clients := make([]*adstest.SotW, len(ids))
	for i, id := range ids {
		clients[i] = adstest.NewSotW(t, conn, node(id))
		syncSotw(t, clients[i])
	}
	expectMetric(t, reg, "pilot_xds", nil, 3)
	for _, typ := range []string{"cds", "eds", "lds", "rds"} {
		expectMetric(t, reg, "pilot_xds_pushes", map[string]string{"type": typ}, 3)
		expectMetric(t, reg, "pilot_xds_config_size_bytes", map[string]string{"type": typ}, 3)
	}
	if n := metricValue(t, reg, "pilot_proxy_convergence_time", nil); n != 0 {
		t.Fatalf("convergence recorded %v times for proxies that only connected", n)
	}

	// A change of endpoints re-sends EDS only; each proxy's ACK completes
	// its convergence.
	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	eds := make([]string, len(clients))
	for i, c := range clients {
		r := c.Expect(resourcev3.EndpointType, pushDeadline)
		eds[i] = r.VersionInfo
		c.ACK(r, ratingsCluster, reviewsCluster)
	}
	expectMetric(t, reg, "pilot_xds_pushes", map[string]string{"type": "eds"}, 6)
	expectMetric(t, reg, "pilot_proxy_convergence_time", nil, 3)
	expectMetric(t, reg, "pilot_proxy_queue_time", nil, 3)
	expectMetric(t, reg, "pilot_xds_push_time", map[string]string{"type": "eds"}, 6) // 3 on connect
	for _, typ := range []string{"cds", "lds", "rds"} {
		if n := metricValue(t, reg, "pilot_xds_pushes", map[string]string{"type": typ}); n != 3 {
			t.Fatalf("pilot_xds_pushes{type=%q} = %v after an endpoints-only change, want 3", typ, n)
		}
	}

	// One proxy rejects the next endpoints: counted once, by type and by
	// node, and it has not converged.
	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4", "127.0.1.6"))
	for i, c := range clients {
		r := c.Expect(resourcev3.EndpointType, pushDeadline)
		if i == 0 {
			c.NACK(r, eds[0], "endpoint: unsupported field")
			continue
		}
		c.ACK(r, ratingsCluster, reviewsCluster)
	}
	expectMetric(t, reg, "pilot_total_xds_rejects", map[string]string{"type": "eds"}, 1)
	expectMetric(t, reg, "pilot_xds_eds_reject", map[string]string{"node": productpageID, "err": "3"}, 1)
	expectMetric(t, reg, "pilot_proxy_convergence_time", nil, 5)
	if n := metricValue(t, reg, "pilot_total_xds_rejects", map[string]string{"type": "cds"}); n != 0 {
		t.Fatalf("pilot_total_xds_rejects{type=cds} = %v", n)
	}
	p := statusOf(t, srv, productpageID)
	if got := SyncStatus(p.Sent[resourcev3.EndpointType], p.Acked[resourcev3.EndpointType]); got != Stale {
		t.Fatalf("EDS of the proxy that NACKed is %s, want %s", got, Stale)
	}
	if got := SyncStatus(p.Sent[resourcev3.ClusterType], p.Acked[resourcev3.ClusterType]); got != Synced {
		t.Fatalf("CDS is %s, want %s", got, Synced)
	}
}

func TestDisconnectLowersConnectedProxies(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, conn := startServer(t, newStub(), func(o *Options) { o.Metrics = NewMetrics(reg) })
	srv.Update(meshSnapshot("127.0.1.3"))
	stay := adstest.NewSotW(t, conn, node(reviewsID))
	syncEDS(t, stay)

	leaving := adstest.Dial(t, conn.Target())
	c := adstest.NewSotW(t, leaving, node(productpageID))
	syncEDS(t, c)
	expectMetric(t, reg, "pilot_xds", nil, 2)
	leaving.Close()
	expectMetric(t, reg, "pilot_xds", nil, 1)
}

func TestSyncStatusWords(t *testing.T) {
	for _, tc := range []struct{ sent, acked, want string }{
		{"", "", NotSent},
		{"a1", "a1", Synced},
		{"b2", "a1", Stale},
		{"a1", "", Stale},
	} {
		if got := SyncStatus(tc.sent, tc.acked); got != tc.want {
			t.Errorf("SyncStatus(%q, %q) = %s, want %s", tc.sent, tc.acked, got, tc.want)
		}
	}
}

func TestDeltaProxyConvergesOnItsACK(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, conn := startServer(t, newStub(), func(o *Options) { o.Metrics = NewMetrics(reg) })
	srv.Update(meshSnapshot("127.0.1.3"))
	c := adstest.NewDelta(t, conn, node(productpageID))
	c.Subscribe(resourcev3.ClusterType)
	c.ACK(c.Expect(resourcev3.ClusterType, pushDeadline))
	c.Subscribe(resourcev3.EndpointType, ratingsCluster, reviewsCluster)
	c.ACK(c.Expect(resourcev3.EndpointType, pushDeadline))

	srv.Update(meshSnapshot("127.0.1.3", "127.0.1.4"))
	r := c.Expect(resourcev3.EndpointType, pushDeadline)
	if n := metricValue(t, reg, "pilot_proxy_convergence_time", nil); n != 0 {
		t.Fatalf("converged before the proxy ACKed (%v)", n)
	}
	c.ACK(r)
	expectMetric(t, reg, "pilot_proxy_convergence_time", nil, 1)
}

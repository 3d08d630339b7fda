package stats

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestEnvoyDefaultTagExtraction(t *testing.T) {
	tests := []struct {
		stat, name string
		tags       []Tag
	}{
		{"cluster.outbound|80||backend.upstream_rq_2xx", "cluster.upstream_rq_xx",
			[]Tag{{TagClusterName, "outbound|80||backend"}, {TagResponseCodeClass, "2"}}},
		{"cluster.backend.upstream_rq_200", "cluster.upstream_rq",
			[]Tag{{TagClusterName, "backend"}, {TagResponseCode, "200"}}},
		{"cluster.backend.upstream_rq_total", "cluster.upstream_rq_total", []Tag{{TagClusterName, "backend"}}},
		{"http.ingress_http.downstream_rq_5xx", "http.downstream_rq_xx",
			[]Tag{{TagHTTPConnManagerPrefix, "ingress_http"}, {TagResponseCodeClass, "5"}}},
		{"listener.127.0.0.1_15001.downstream_cx_total", "listener.downstream_cx_total",
			[]Tag{{TagListenerAddress, "127.0.0.1_15001"}}},
		{"listener.[__1]_8080.downstream_cx_active", "listener.downstream_cx_active",
			[]Tag{{TagListenerAddress, "[__1]_8080"}}},
		{"listener.admin.downstream_cx_total", "listener.admin.downstream_cx_total", nil},
		{"listener.0.0.0.0_80.http.inbound.downstream_rq_2xx", "listener.http.downstream_rq_xx",
			[]Tag{{TagHTTPConnManagerPrefix, "inbound"}, {TagListenerAddress, "0.0.0.0_80"}, {TagResponseCodeClass, "2"}}},
		{"tcp.db.downstream_cx_total", "tcp.downstream_cx_total", []Tag{{TagTCPPrefix, "db"}}},
		{"http.inbound.fault.client.delays_injected", "http.fault.delays_injected",
			[]Tag{{TagFaultDownstreamCluster, "client"}, {TagHTTPConnManagerPrefix, "inbound"}}},
		{"http_local_rate_limiter.http_local_rate_limit.rate_limited", "http_local_rate_limit.rate_limited",
			[]Tag{{TagLocalHTTPRatelimit, "http_local_rate_limiter"}}},
		{"listener_manager.lds.update_success", "listener_manager.lds.update_success", nil},
		{"cluster_manager.active_clusters", "cluster_manager.active_clusters", nil},
	}
	for _, tt := range tests {
		name, tags := ExtractTags(tt.stat)
		if name != tt.name || !slicesEqual(tags, tt.tags) {
			t.Errorf("ExtractTags(%q) = %q %v, want %q %v", tt.stat, name, tags, tt.name, tt.tags)
		}
	}
}

func slicesEqual(a, b []Tag) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// parseExposition is a strict reader of the text exposition format: every family has exactly one
// # TYPE line before its samples, samples of a family are contiguous, names and label names are
// valid and label values properly escaped. It returns "name{labels}" → value.
func parseExposition(t *testing.T, text string) (map[string]int64, map[string]string) {
	t.Helper()
	typeLine := regexp.MustCompile(`^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$`)
	sampleLine := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (-?[0-9]+)$`)
	samples, types := map[string]int64{}, map[string]string{}
	current := ""
	if !strings.HasSuffix(text, "\n") {
		t.Fatalf("exposition does not end in a newline")
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if m := typeLine.FindStringSubmatch(line); m != nil {
			if _, dup := types[m[1]]; dup {
				t.Fatalf("line %d: second TYPE for %s", i+1, m[1])
			}
			types[m[1]], current = m[2], m[1]
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("line %d: not a valid sample: %q", i+1, line)
		}
		if m[1] != current {
			t.Fatalf("line %d: sample of %s outside its family (current %s)", i+1, m[1], current)
		}
		key := m[1] + m[2]
		if _, dup := samples[key]; dup {
			t.Fatalf("line %d: duplicate sample %s", i+1, key)
		}
		v, _ := strconv.ParseInt(m[3], 10, 64)
		samples[key] = v
	}
	return samples, types
}

func TestPrometheusExpositionHasEnvoyNamesLabelsAndTypes(t *testing.T) {
	s := NewStore()
	s.Counter("cluster.outbound|80||backend.upstream_rq_2xx").Add(3)
	s.Counter("cluster.outbound|80||backend.upstream_rq_200").Add(3)
	s.Counter("cluster.outbound|80||backend.upstream_rq_total").Add(3)
	s.Counter(`cluster.we"ird\name.upstream_rq_total`).Add(1)
	s.Counter("cluster.other.upstream_rq_5xx").Add(2)
	s.Counter("http.outbound_0.0.0.0_15001.downstream_rq_2xx").Add(3)
	s.Gauge("listener.127.0.0.1_15001.downstream_cx_active").Set(1)
	s.Counter("listener_manager.listener_added").Inc()
	s.GaugeFunc("control_plane.connected_state", func() int64 { return 1 })
	s.Counter("cluster.idle.upstream_rq_total") // never used

	var out bytes.Buffer
	if err := s.WritePrometheus(&out, nil, false); err != nil {
		t.Fatal(err)
	}
	samples, types := parseExposition(t, out.String())
	want := map[string]int64{
		`envoy_cluster_upstream_rq_xx{envoy_cluster_name="outbound|80||backend",envoy_response_code_class="2"}`: 3,
		`envoy_cluster_upstream_rq_xx{envoy_cluster_name="other",envoy_response_code_class="5"}`:                2,
		`envoy_cluster_upstream_rq{envoy_cluster_name="outbound|80||backend",envoy_response_code="200"}`:        3,
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="outbound|80||backend"}`:                            3,
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="we\"ird\\name"}`:                                   1,
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="idle"}`:                                            0,
		// The HCM prefix keeps its dots as one tag value only up to the first dot, as Envoy's
		// tokenized extractor does.
		`envoy_http_0_0_0_15001_downstream_rq_xx{envoy_http_conn_manager_prefix="outbound_0",envoy_response_code_class="2"}`: 3,
		`envoy_listener_downstream_cx_active{envoy_listener_address="127.0.0.1_15001"}`:                                      1,
		`envoy_listener_manager_listener_added`:                                                                              1,
		`envoy_control_plane_connected_state`:                                                                                1,
	}
	for k, v := range want {
		if got, ok := samples[k]; !ok || got != v {
			t.Errorf("%s = %d (present %v), want %d\n%s", k, got, ok, v, out.String())
		}
	}
	if len(samples) != len(want) {
		t.Errorf("got %d samples, want %d:\n%s", len(samples), len(want), out.String())
	}
	for name, kind := range map[string]string{"envoy_cluster_upstream_rq_xx": "counter", "envoy_listener_downstream_cx_active": "gauge",
		"envoy_control_plane_connected_state": "gauge", "envoy_listener_manager_listener_added": "counter"} {
		if types[name] != kind {
			t.Errorf("TYPE %s = %q, want %q", name, types[name], kind)
		}
	}

	// Stable: a second rendering is byte for byte the same.
	var again bytes.Buffer
	_ = s.WritePrometheus(&again, nil, false)
	if again.String() != out.String() {
		t.Error("two renderings differ")
	}

	out.Reset()
	if err := s.WritePrometheus(&out, regexp.MustCompile(`^cluster\.`), true); err != nil {
		t.Fatal(err)
	}
	samples, _ = parseExposition(t, out.String())
	if _, ok := samples[`envoy_cluster_upstream_rq_total{envoy_cluster_name="idle"}`]; ok || len(samples) != 5 {
		t.Errorf("usedonly + filter: got %d samples:\n%s", len(samples), out.String())
	}
}

func TestGaugeSetToZeroStillCountsAsUsed(t *testing.T) {
	s := NewStore()
	g := s.Gauge("g")
	g.Inc()
	g.Dec()
	s.Gauge("never")
	snap := s.Snapshot(nil)
	if len(snap) != 2 || snap[0].Name != "g" || !snap[0].Used || snap[1].Used {
		t.Fatalf("snapshot %+v", snap)
	}
}

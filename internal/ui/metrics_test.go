package ui

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/xds"
)

// fakeProxy is a real HTTP server on a loopback address that serves
// Istio's metrics in Prometheus's text format, with counts the test sets.
type fakeProxy struct {
	id string
	mu sync.Mutex
	// series key (labels) → metric values
	counters map[string]*dto.Metric
	families map[string]*dto.MetricFamily
}

// labels for an HTTP request series, Istio's standard set.
func httpLabels(reporter, src, dst, code, flags, security string) map[string]string {
	return map[string]string{
		"reporter":                       reporter,
		"source_workload":                src,
		"source_workload_namespace":      "default",
		"source_app":                     appOf(src),
		"source_version":                 "v1",
		"source_principal":               "unknown",
		"destination_workload":           dst,
		"destination_workload_namespace": "default",
		"destination_app":                appOf(dst),
		"destination_version":            "v1",
		"destination_service":            appOf(dst) + ".default.svc.cluster.local",
		"destination_service_name":       appOf(dst),
		"destination_service_namespace":  "default",
		"destination_principal":          "unknown",
		"request_protocol":               "http",
		"response_code":                  code,
		"grpc_response_status":           "",
		"response_flags":                 flags,
		"connection_security_policy":     security,
	}
}

func appOf(workload string) string {
	if len(workload) > 3 && workload[len(workload)-3:len(workload)-1] == "-v" {
		return workload[:len(workload)-3]
	}
	return workload
}

func labelPairs(l map[string]string) []*dto.LabelPair {
	var out []*dto.LabelPair
	for k, v := range l {
		out = append(out, &dto.LabelPair{Name: proto.String(k), Value: proto.String(v)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func (p *fakeProxy) family(name string, typ dto.MetricType) *dto.MetricFamily {
	if p.families == nil {
		p.families = map[string]*dto.MetricFamily{}
	}
	f := p.families[name]
	if f == nil {
		f = &dto.MetricFamily{Name: proto.String(name), Help: proto.String(name), Type: typ.Enum()}
		p.families[name] = f
	}
	return f
}

func seriesID(name string, l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteString(name)
	for _, k := range keys {
		fmt.Fprintf(&b, ",%s=%s", k, l[k])
	}
	return b.String()
}

func (p *fakeProxy) metric(name string, typ dto.MetricType, l map[string]string) *dto.Metric {
	if p.counters == nil {
		p.counters = map[string]*dto.Metric{}
	}
	id := seriesID(name, l)
	m := p.counters[id]
	if m == nil {
		m = &dto.Metric{Label: labelPairs(l)}
		switch typ {
		case dto.MetricType_COUNTER:
			m.Counter = &dto.Counter{Value: proto.Float64(0)}
		case dto.MetricType_HISTOGRAM:
			m.Histogram = &dto.Histogram{SampleCount: proto.Uint64(0), SampleSum: proto.Float64(0)}
			for _, b := range durationBuckets {
				m.Histogram.Bucket = append(m.Histogram.Bucket, &dto.Bucket{UpperBound: proto.Float64(b), CumulativeCount: proto.Uint64(0)})
			}
		}
		f := p.family(name, typ)
		f.Metric = append(f.Metric, m)
		p.counters[id] = m
	}
	return m
}

// Istio's default duration buckets (ms), up to 10 s.
var durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}

// requests adds n requests of the given duration (ms) to the series.
func (p *fakeProxy) requests(l map[string]string, n int, ms float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.metric(metricRequests, dto.MetricType_COUNTER, l).Counter
	c.Value = proto.Float64(c.GetValue() + float64(n))
	h := p.metric(metricDuration, dto.MetricType_HISTOGRAM, l).Histogram
	h.SampleCount = proto.Uint64(h.GetSampleCount() + uint64(n))
	h.SampleSum = proto.Float64(h.GetSampleSum() + float64(n)*ms)
	for _, b := range h.Bucket {
		if ms <= b.GetUpperBound() {
			b.CumulativeCount = proto.Uint64(b.GetCumulativeCount() + uint64(n))
		}
	}
}

func (p *fakeProxy) count(name string, l map[string]string, n float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.metric(name, dto.MetricType_COUNTER, l).Counter
	c.Value = proto.Float64(c.GetValue() + n)
}

// restart forgets every count, as a restarted proxy does.
func (p *fakeProxy) restart() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counters, p.families = nil, nil
}

func (p *fakeProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != MetricsPath {
		http.NotFound(w, r)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	names := make([]string, 0, len(p.families))
	for n := range p.families {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := expfmt.MetricFamilyToText(w, p.families[n]); err != nil {
			panic(err)
		}
	}
}

// proxyList is the xDS server's view of which proxies are connected.
type proxyList []xds.ProxyStatus

func (l proxyList) Proxies() []xds.ProxyStatus { return l }

// startFakeProxies serves each named workload's metrics on its own
// loopback address 127.0.2.N, all on one port, as proxies share the
// mesh's status port. It returns the proxies and the port.
func startFakeProxies(t *testing.T, workloads ...string) ([]*fakeProxy, int) {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		var lis []net.Listener
		first, err := net.Listen("tcp", "127.0.2.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis = append(lis, first)
		port := first.Addr().(*net.TCPAddr).Port
		ok := true
		for i := 1; i < len(workloads); i++ {
			l, err := net.Listen("tcp", net.JoinHostPort(fmt.Sprintf("127.0.2.%d", i+1), strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			lis = append(lis, l)
		}
		if !ok {
			for _, l := range lis {
				l.Close()
			}
			continue
		}
		var proxies []*fakeProxy
		for i, w := range workloads {
			p := &fakeProxy{id: fmt.Sprintf("sidecar~127.0.2.%d~%s.default~default.svc.cluster.local", i+1, w)}
			srv := &http.Server{Handler: p}
			go func() { _ = srv.Serve(lis[i]) }()
			t.Cleanup(func() { srv.Close() })
			proxies = append(proxies, p)
		}
		return proxies, port
	}
	t.Fatal("no port free on all of 127.0.2.1-N after 20 attempts")
	return nil, 0
}

func scraperFor(t *testing.T, port int, proxies ...*fakeProxy) *Scraper {
	var list proxyList
	for _, p := range proxies {
		list = append(list, xds.ProxyStatus{ID: p.id, Streams: 1})
	}
	return NewScraper(ScraperOptions{Proxies: list, Config: NewConfigTracker(""), Port: port, Timeout: 5 * time.Second})
}

func edgeByID(t *testing.T, tr *Traffic, id string) Edge {
	t.Helper()
	if tr == nil {
		t.Fatalf("no traffic computed; want edge %s", id)
	}
	for _, e := range tr.Edges {
		if e.ID == id {
			return e
		}
	}
	t.Fatalf("no edge %s in %+v", id, tr.Edges)
	return Edge{}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-3 }

func TestScraperComputesRatesErrorsP99AndMTLSPerEdge(t *testing.T) {
	fakes, port := startFakeProxies(t, "productpage-v1", "reviews-v1")
	pp, reviews := fakes[0], fakes[1]
	s := scraperFor(t, port, pp, reviews)
	ctx := context.Background()

	ok := httpLabels("destination", "productpage-v1", "reviews-v1", "200", "-", "mutual_tls")
	failed := httpLabels("destination", "productpage-v1", "reviews-v1", "503", "UF", "mutual_tls")
	reviews.requests(ok, 5, 3) // before the window's baseline: not counted
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.scrape(ctx, t0)
	if tr := s.Traffic(); tr == nil || len(tr.Edges) != 0 {
		t.Fatalf("one sample: want no edges yet (no baseline), got %+v", tr)
	}

	// 10 s later: 196 more fast requests (3 ms), 4 slow failures (200 ms).
	reviews.requests(ok, 196, 3)
	reviews.requests(failed, 4, 200)
	// productpage's own view of the same calls must not count twice.
	pp.requests(httpLabels("source", "productpage-v1", "reviews-v1", "200", "-", "mutual_tls"), 500, 3)
	s.scrape(ctx, t0.Add(10*time.Second))

	e := edgeByID(t, s.Traffic(), "default/productpage-v1>default/reviews-v1")
	if !near(e.RPS, 20) {
		t.Errorf("rps: got %v, want 20 (200 requests in 10 s)", e.RPS)
	}
	if !near(e.ErrorRate, 0.02) {
		t.Errorf("error rate: got %v, want 0.02 (4 of 200)", e.ErrorRate)
	}
	// p99 of 200: rank 198, in the (100, 250] bucket that holds requests
	// 197..200: 100 + 150*(198-196)/4 = 175.
	if !near(e.P99Ms, 175) {
		t.Errorf("p99: got %v ms, want 175", e.P99Ms)
	}
	if e.MTLS != MTLSMutual || e.Protocol != "http" {
		t.Errorf("mtls %q protocol %q, want mutual_tls http", e.MTLS, e.Protocol)
	}

	// Plaintext calls join: the edge is mixed.
	reviews.requests(httpLabels("destination", "productpage-v1", "reviews-v1", "200", "-", "none"), 100, 3)
	s.scrape(ctx, t0.Add(20*time.Second))
	if e := edgeByID(t, s.Traffic(), "default/productpage-v1>default/reviews-v1"); e.MTLS != MTLSMixed || !near(e.RPS, 15) {
		t.Errorf("after plaintext calls: mtls %q rps %v, want mixed and 15 (300 in 20 s)", e.MTLS, e.RPS)
	}
}

func TestScraperCountsARestartedProxyFromZeroNeverNegative(t *testing.T) {
	fakes, port := startFakeProxies(t, "reviews-v1")
	reviews := fakes[0]
	s := scraperFor(t, port, reviews)
	ctx := context.Background()
	l := httpLabels("destination", "productpage-v1", "reviews-v1", "200", "-", "none")

	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	reviews.requests(l, 1000, 3)
	s.scrape(ctx, t0)
	reviews.requests(l, 20, 3)
	s.scrape(ctx, t0.Add(2*time.Second))
	reviews.restart()
	reviews.requests(l, 30, 3)
	s.scrape(ctx, t0.Add(4*time.Second))

	e := edgeByID(t, s.Traffic(), "default/productpage-v1>default/reviews-v1")
	if !near(e.RPS, 12.5) { // 20 + 30 requests in 4 s
		t.Errorf("rps across a restart: got %v, want 12.5", e.RPS)
	}
	if e.P99Ms <= 0 || e.P99Ms > 5 {
		t.Errorf("p99 across a restart: got %v, want within the 3 ms bucket (1, 5]", e.P99Ms)
	}
}

func TestScraperForgetsTrafficOlderThanTheWindow(t *testing.T) {
	fakes, port := startFakeProxies(t, "reviews-v1")
	reviews := fakes[0]
	s := scraperFor(t, port, reviews)
	ctx := context.Background()
	l := httpLabels("destination", "productpage-v1", "reviews-v1", "200", "-", "none")

	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.scrape(ctx, t0)
	reviews.requests(l, 600, 3)
	s.scrape(ctx, t0.Add(2*time.Second))
	for i := 2; i <= 16; i++ { // no more traffic for 30 s
		s.scrape(ctx, t0.Add(time.Duration(2*i)*time.Second))
	}
	if tr := s.Traffic(); len(tr.Edges) != 0 {
		t.Errorf("30 s after the last request: want no edges, got %+v", tr.Edges)
	}
}

func TestScraperShowsExternalAndTCPAndUnknownSources(t *testing.T) {
	fakes, port := startFakeProxies(t, "productpage-v1", "ratings-v1")
	pp, ratings := fakes[0], fakes[1]
	s := scraperFor(t, port, pp, ratings)
	ctx := context.Background()

	ext := httpLabels("source", "productpage-v1", "unknown", "200", "-", "unknown")
	ext["destination_service"] = "api.example.com"
	ext["destination_service_name"] = "api.example.com"
	ext["destination_service_namespace"] = "unknown"
	tcp := httpLabels("destination", "productpage-v1", "ratings-v1", "", "-", "mutual_tls")
	delete(tcp, "response_code")
	tcp["request_protocol"] = "tcp"
	anon := httpLabels("destination", "unknown", "ratings-v1", "200", "-", "none")

	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.scrape(ctx, t0)
	pp.requests(ext, 40, 30)
	ratings.count(metricTCPOpened, tcp, 8)
	ratings.count(metricTCPSent, tcp, 3000)
	ratings.count(metricTCPReceived, tcp, 1000)
	ratings.requests(anon, 4, 1)
	s.scrape(ctx, t0.Add(4*time.Second))
	tr := s.Traffic()

	if e := edgeByID(t, tr, "default/productpage-v1>api.example.com"); !near(e.RPS, 10) {
		t.Errorf("external edge rps: got %v, want 10", e.RPS)
	}
	e := edgeByID(t, tr, "default/productpage-v1>default/ratings-v1")
	if e.Protocol != "tcp" || !near(e.RPS, 2) || !near(e.BytesPerSecond, 1000) || e.ErrorRate != 0 || e.P99Ms != 0 {
		t.Errorf("tcp edge: got %+v, want tcp, 2 connections/s, 1000 B/s", e)
	}
	if e := edgeByID(t, tr, "unknown>default/ratings-v1"); !near(e.RPS, 1) {
		t.Errorf("unknown source edge rps: got %v, want 1", e.RPS)
	}
	kinds := map[string]string{}
	for _, n := range tr.Nodes {
		kinds[n.ID] = n.Kind
	}
	if kinds["api.example.com"] != KindService || kinds["unknown"] != KindUnknown || kinds["default/ratings-v1"] != KindWorkload {
		t.Errorf("node kinds: %v", kinds)
	}
}

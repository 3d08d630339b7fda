package ui

import (
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Istio's standard metrics, as the proxies serve them.
const (
	metricRequests    = "istio_requests_total"
	metricDuration    = "istio_request_duration_milliseconds"
	metricTCPOpened   = "istio_tcp_connections_opened_total"
	metricTCPSent     = "istio_tcp_sent_bytes_total"
	metricTCPReceived = "istio_tcp_received_bytes_total"
)

// series is one labelled time series of one of the metrics above.
type series struct {
	metric string
	labels istioLabels
	bounds []float64 // histogram bucket upper bounds, ascending; nil for counters
}

// istioLabels are the labels the graph reads.
type istioLabels struct {
	reporter                                 string
	srcNS, srcWorkload, srcApp, srcVersion   string
	dstNS, dstWorkload, dstApp, dstVersion   string
	dstService, dstServiceName, dstServiceNS string
	protocol, code, flags, security          string
}

// value is a series' value in one sample: a counter, or a histogram's
// count and cumulative bucket counts (aligned with series.bounds).
type value struct {
	v       float64
	buckets []float64
}

// scrapeResult is one scrape of one proxy: series key → value, and the
// series themselves.
type scrapeResult struct {
	values map[string]value
	series map[string]*series
}

func parseMetrics(r io.Reader) (*scrapeResult, error) {
	var p expfmt.TextParser
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	res := &scrapeResult{values: map[string]value{}, series: map[string]*series{}}
	for _, name := range []string{metricRequests, metricDuration, metricTCPOpened, metricTCPSent, metricTCPReceived} {
		fam := families[name]
		if fam == nil {
			continue
		}
		for _, m := range fam.GetMetric() {
			key, labels := seriesKey(name, m.GetLabel())
			s := &series{metric: name, labels: labels}
			var v value
			switch {
			case name == metricDuration && m.GetHistogram() != nil:
				h := m.GetHistogram()
				v.v = float64(h.GetSampleCount())
				for _, b := range h.GetBucket() {
					s.bounds = append(s.bounds, b.GetUpperBound())
					v.buckets = append(v.buckets, float64(b.GetCumulativeCount()))
				}
				if n := len(s.bounds); n == 0 || !math.IsInf(s.bounds[n-1], 1) {
					s.bounds = append(s.bounds, math.Inf(1)) // implied: every observation
					v.buckets = append(v.buckets, v.v)
				}
			case m.GetCounter() != nil:
				v.v = m.GetCounter().GetValue()
			case m.GetUntyped() != nil:
				v.v = m.GetUntyped().GetValue()
			default:
				continue
			}
			res.values[key] = v
			res.series[key] = s
		}
	}
	return res, nil
}

func seriesKey(metric string, pairs []*dto.LabelPair) (string, istioLabels) {
	sorted := make([]*dto.LabelPair, len(pairs))
	copy(sorted, pairs)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].GetName() < sorted[j].GetName() })
	var b strings.Builder
	b.WriteString(metric)
	var l istioLabels
	for _, p := range sorted {
		b.WriteByte(0)
		b.WriteString(p.GetName())
		b.WriteByte('=')
		b.WriteString(p.GetValue())
		v := p.GetValue()
		switch p.GetName() {
		case "reporter":
			l.reporter = v
		case "source_workload_namespace":
			l.srcNS = v
		case "source_workload":
			l.srcWorkload = v
		case "source_app":
			l.srcApp = v
		case "source_version":
			l.srcVersion = v
		case "destination_workload_namespace":
			l.dstNS = v
		case "destination_workload":
			l.dstWorkload = v
		case "destination_app":
			l.dstApp = v
		case "destination_version":
			l.dstVersion = v
		case "destination_service":
			l.dstService = v
		case "destination_service_name":
			l.dstServiceName = v
		case "destination_service_namespace":
			l.dstServiceNS = v
		case "request_protocol":
			l.protocol = v
		case "response_code":
			l.code = v
		case "response_flags":
			l.flags = v
		case "connection_security_policy":
			l.security = v
		}
	}
	return b.String(), l
}

// sample is one scrape's values at a time.
type sample struct {
	at     time.Time
	values map[string]value
}

// proxySamples is the ring of recent samples of one proxy: every sample in
// the window and the newest one before it, the window's baseline.
type proxySamples struct {
	proxy   *model.Proxy
	samples []sample
	series  map[string]*series
}

func (p *proxySamples) add(at time.Time, res *scrapeResult, window time.Duration) {
	if p.series == nil {
		p.series = map[string]*series{}
	}
	for k, s := range res.series {
		if old, ok := p.series[k]; !ok || !equalBounds(old.bounds, s.bounds) {
			p.series[k] = s
		}
	}
	p.samples = append(p.samples, sample{at: at, values: res.values})
	// Drop samples older than the baseline: keep the newest one at or
	// before at-window and everything after it.
	cut := 0
	for i, s := range p.samples {
		if !s.at.After(at.Add(-window)) {
			cut = i
		}
	}
	p.samples = p.samples[cut:]
}

func equalBounds(a, b []float64) bool {
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

// increase is how much a counter grew from one sample to the next, as
// Prometheus's increase() sees it: a drop means the proxy restarted and
// counted from zero again, and a series missing from the earlier sample
// was created since, from zero. Never negative.
func increase(prev, cur float64, hadPrev bool) float64 {
	if !hadPrev || cur < prev {
		return cur
	}
	return cur - prev
}

// windowIncrease sums a series' increases over consecutive samples.
func windowIncrease(samples []sample, key string) value {
	var out value
	for i := 1; i < len(samples); i++ {
		cur, ok := samples[i].values[key]
		if !ok {
			continue
		}
		prev, hadPrev := samples[i-1].values[key]
		out.v += increase(prev.v, cur.v, hadPrev)
		if len(cur.buckets) > 0 {
			if out.buckets == nil {
				out.buckets = make([]float64, len(cur.buckets))
			}
			samePrev := hadPrev && len(prev.buckets) == len(cur.buckets) && prev.v <= cur.v
			for j, c := range cur.buckets {
				if j >= len(out.buckets) {
					break
				}
				if samePrev {
					out.buckets[j] += increase(prev.buckets[j], c, true)
				} else {
					out.buckets[j] += c // a new series, or a restart: from zero
				}
			}
		}
	}
	return out
}

// edgeAcc accumulates one edge's rates over the window.
type edgeAcc struct {
	edge         Edge
	requests     float64 // per second
	errors       float64
	connections  float64
	bytes        float64
	buckets      map[float64]float64 // upper bound → requests per second at or below it
	mutual, none bool
	protocols    map[string]float64
}

// aggregate computes the traffic of the window ending at now from every
// proxy's samples.
func aggregate(proxies map[string]*proxySamples, now time.Time, window time.Duration) *Traffic {
	// A destination reports its own inbound traffic; the source side only
	// counts for destinations that report nothing (outside the mesh,
	// unknown, or without a proxy we scrape).
	reporting := map[string]bool{}
	for _, ps := range proxies {
		reporting[workloadID(ps.proxy.Namespace, ps.proxy.Name)] = true
		for _, s := range ps.series {
			if s.labels.reporter == "destination" && known(s.labels.dstWorkload) {
				reporting[workloadID(s.labels.dstNS, s.labels.dstWorkload)] = true
			}
		}
	}

	nodes := map[string]Node{}
	edges := map[string]*edgeAcc{}
	for _, ps := range proxies {
		if len(ps.samples) < 2 {
			continue // no baseline yet
		}
		samples := ps.samples
		span := samples[len(samples)-1].at.Sub(samples[0].at).Seconds()
		if span <= 0 {
			continue
		}
		for key, s := range ps.series {
			l := &s.labels
			switch l.reporter {
			case "destination":
			case "source":
				if known(l.dstWorkload) && reporting[workloadID(l.dstNS, l.dstWorkload)] {
					continue
				}
			default:
				continue
			}
			inc := windowIncrease(samples, key)
			if inc.v <= 0 {
				continue
			}
			src, dst := sourceNode(l), destinationNode(l)
			id := src.ID + ">" + dst.ID
			acc := edges[id]
			if acc == nil {
				acc = &edgeAcc{edge: Edge{ID: id, Source: src.ID, Target: dst.ID}, buckets: map[float64]float64{}, protocols: map[string]float64{}}
				edges[id] = acc
				nodes[src.ID], nodes[dst.ID] = src, dst
			}
			rate := inc.v / span
			switch s.metric {
			case metricRequests:
				acc.requests += rate
				acc.protocols[l.protocol] += rate
				if isError(l) {
					acc.errors += rate
				}
				acc.security(l.security)
			case metricDuration:
				for j, b := range s.bounds {
					if j < len(inc.buckets) {
						acc.buckets[b] += inc.buckets[j] / span
					}
				}
			case metricTCPOpened:
				acc.connections += rate
				acc.security(l.security)
			case metricTCPSent, metricTCPReceived:
				acc.bytes += rate
				acc.security(l.security)
			}
		}
	}

	out := &Traffic{At: now, WindowSeconds: window.Seconds(), Nodes: make([]Node, 0, len(nodes)), Edges: make([]Edge, 0, len(edges))}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, n)
	}
	for _, acc := range edges {
		out.Edges = append(out.Edges, acc.finish())
	}
	sort.Slice(out.Nodes, func(i, j int) bool { return out.Nodes[i].ID < out.Nodes[j].ID })
	sort.Slice(out.Edges, func(i, j int) bool { return out.Edges[i].ID < out.Edges[j].ID })
	return out
}

func (a *edgeAcc) security(policy string) {
	if policy == "mutual_tls" {
		a.mutual = true
	} else {
		a.none = true
	}
}

func (a *edgeAcc) finish() Edge {
	e := a.edge
	switch {
	case a.mutual && a.none:
		e.MTLS = MTLSMixed
	case a.mutual:
		e.MTLS = MTLSMutual
	default:
		e.MTLS = MTLSNone
	}
	if a.requests > 0 {
		e.Protocol = "http"
		best := -1.0
		for p, r := range a.protocols {
			if known(p) && (r > best || (r == best && p < e.Protocol)) {
				e.Protocol, best = p, r
			}
		}
		e.RPS = a.requests
		e.ErrorRate = a.errors / a.requests
		e.P99Ms = quantile(0.99, a.buckets)
	} else {
		e.Protocol = "tcp"
		e.RPS = a.connections
	}
	e.BytesPerSecond = a.bytes
	e.RPS, e.ErrorRate, e.P99Ms, e.BytesPerSecond = round(e.RPS), round(e.ErrorRate), round(e.P99Ms), round(e.BytesPerSecond)
	return e
}

// round keeps 4 decimals: enough for a display, and stable in JSON.
func round(f float64) float64 { return math.Round(f*1e4) / 1e4 }

// isError is the contract's failed request: a 5xx, no response at all
// (code 0), or any Envoy response flag.
func isError(l *istioLabels) bool {
	if l.flags != "" && l.flags != "-" {
		return true
	}
	code, err := strconv.Atoi(l.code)
	return err == nil && (code >= 500 || code == 0)
}

func known(v string) bool { return v != "" && v != "unknown" }

func sourceNode(l *istioLabels) Node {
	if !known(l.srcWorkload) {
		return Node{ID: "unknown", Workload: "unknown", Kind: KindUnknown}
	}
	return Node{
		ID: workloadID(l.srcNS, l.srcWorkload), Namespace: l.srcNS, Workload: l.srcWorkload,
		App: unknownToEmpty(l.srcApp), Version: unknownToEmpty(l.srcVersion), Kind: KindWorkload,
	}
}

func destinationNode(l *istioLabels) Node {
	if known(l.dstWorkload) {
		return Node{
			ID: workloadID(l.dstNS, l.dstWorkload), Namespace: l.dstNS, Workload: l.dstWorkload,
			App: unknownToEmpty(l.dstApp), Version: unknownToEmpty(l.dstVersion),
			Service: unknownToEmpty(l.dstService), Kind: KindWorkload,
		}
	}
	host := l.dstService
	if !known(host) {
		host = l.dstServiceName
	}
	if !known(host) {
		return Node{ID: "unknown", Workload: "unknown", Kind: KindUnknown}
	}
	return Node{ID: host, Namespace: unknownToEmpty(l.dstServiceNS), Service: host, Kind: KindService}
}

func unknownToEmpty(v string) string {
	if v == "unknown" {
		return ""
	}
	return v
}

// quantile estimates the q-quantile from bucket rates keyed by upper bound
// the way Prometheus's histogram_quantile does: linear interpolation
// within the bucket holding the rank, the highest finite bound when the
// rank falls in +Inf. 0 without observations.
func quantile(q float64, buckets map[float64]float64) float64 {
	bounds := make([]float64, 0, len(buckets))
	for b := range buckets {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 {
		return 0
	}
	// Cumulative counts must not fall; deltas of a restart can make them.
	counts := make([]float64, len(bounds))
	for i, b := range bounds {
		counts[i] = buckets[b]
		if i > 0 && counts[i] < counts[i-1] {
			counts[i] = counts[i-1]
		}
	}
	total := counts[len(counts)-1]
	if total <= 0 {
		return 0
	}
	rank := q * total
	i := sort.Search(len(counts), func(i int) bool { return counts[i] >= rank })
	if i == len(bounds)-1 && math.IsInf(bounds[i], 1) {
		if i == 0 {
			return 0
		}
		return bounds[i-1]
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = bounds[i-1], counts[i-1]
	}
	inBucket := counts[i] - below
	if inBucket <= 0 {
		return bounds[i]
	}
	return lower + (bounds[i]-lower)*(rank-below)/inBucket
}

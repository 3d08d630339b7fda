package istiometrics

import (
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Metric describes one metric family of a Set.
type Metric struct {
	Name, Help string
	// Histogram families have Buckets (upper bounds, ascending); others are counters.
	Histogram bool
	Buckets   []float64
}

// Istio's default histogram buckets (istio/proxy's stats plugin).
var (
	DurationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	BytesBuckets    = []float64{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000}
)

// Registry holds a proxy's sets of labelled metrics and renders them.
type Registry struct {
	mu   sync.Mutex
	sets []collector
}

type collector interface {
	write(b []byte) []byte
}

// WritePrometheus writes every series in the Prometheus text exposition format (version 0.0.4),
// each family with its # HELP and # TYPE lines, series sorted by labels.
func (r *Registry) WritePrometheus(w io.Writer) error {
	r.mu.Lock()
	sets := slices.Clone(r.sets)
	r.mu.Unlock()
	var b []byte
	for _, s := range sets {
		b = s.write(b)
	}
	_, err := w.Write(b)
	return err
}

// Set is a group of metric families that share their label names and are always recorded
// together (istio_requests_total with the duration and size histograms of the same request), so
// one lookup by key finds the series of all of them.
type Set[K comparable] struct {
	metrics []Metric
	names   []string
	values  func(K) []string

	mu     sync.RWMutex
	series map[K]*Series
}

// NewSet registers a set in r. values gives a key's label values, in the order of labelNames; it
// runs once per new key.
func NewSet[K comparable](r *Registry, labelNames []string, values func(K) []string, metrics ...Metric) *Set[K] {
	s := &Set[K]{metrics: metrics, names: labelNames, values: values, series: make(map[K]*Series)}
	r.mu.Lock()
	r.sets = append(r.sets, s)
	r.mu.Unlock()
	return s
}

// Series are the set's metrics for one label set: Counter(i) and Observe(i, v) act on the set's
// i-th metric.
type Series struct {
	labels string // rendered: name="value",...
	m      []value
}

type value struct {
	count   atomic.Uint64
	sumBits atomic.Uint64   // float64 bits; histograms only
	buckets []atomic.Uint64 // per bucket, not cumulative; histograms only
	bounds  []float64
}

// With returns the series for key, creating it the first time. Looking up an existing series does
// not allocate.
func (s *Set[K]) With(key K) *Series {
	s.mu.RLock()
	se := s.series[key]
	s.mu.RUnlock()
	if se != nil {
		return se
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if se = s.series[key]; se != nil {
		return se
	}
	se = &Series{labels: renderLabels(s.names, s.values(key)), m: make([]value, len(s.metrics))}
	for i, m := range s.metrics {
		if m.Histogram {
			se.m[i].bounds = m.Buckets
			se.m[i].buckets = make([]atomic.Uint64, len(m.Buckets))
		}
	}
	s.series[key] = se
	return se
}

// Keys lists the keys of the set's series, in no order.
func (s *Set[K]) Keys() []K {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]K, 0, len(s.series))
	for k := range s.series {
		out = append(out, k)
	}
	return out
}

// Add adds n to the set's i-th metric, a counter.
func (se *Series) Add(i int, n uint64) { se.m[i].count.Add(n) }

// Observe records v in the set's i-th metric, a histogram.
func (se *Series) Observe(i int, v float64) {
	m := &se.m[i]
	if j, _ := slices.BinarySearch(m.bounds, v); j < len(m.buckets) {
		m.buckets[j].Add(1)
	}
	m.count.Add(1)
	for {
		old := m.sumBits.Load()
		if m.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

func (s *Set[K]) write(b []byte) []byte {
	s.mu.RLock()
	all := make([]*Series, 0, len(s.series))
	for _, se := range s.series {
		all = append(all, se)
	}
	s.mu.RUnlock()
	slices.SortFunc(all, func(a, b *Series) int { return strings.Compare(a.labels, b.labels) })
	for i, m := range s.metrics {
		typ := "counter"
		if m.Histogram {
			typ = "histogram"
		}
		b = append(b, "# HELP "...)
		b = append(b, m.Name...)
		b = append(b, ' ')
		b = append(b, m.Help...)
		b = append(b, "\n# TYPE "...)
		b = append(b, m.Name...)
		b = append(b, ' ')
		b = append(b, typ...)
		b = append(b, '\n')
		for _, se := range all {
			v := &se.m[i]
			if !m.Histogram {
				b = sample(b, m.Name, "", se.labels, "", float64(v.count.Load()))
				continue
			}
			// Read the count first: buckets and sum may run ahead of it, never behind, so the
			// +Inf bucket (the count) is never below a finite one.
			count := v.count.Load()
			var cum uint64
			for j, bound := range v.bounds {
				cum += v.buckets[j].Load()
				b = sample(b, m.Name, "_bucket", se.labels, strconv.FormatFloat(bound, 'g', -1, 64), float64(min(cum, count)))
			}
			b = sample(b, m.Name, "_bucket", se.labels, "+Inf", float64(count))
			b = sample(b, m.Name, "_sum", se.labels, "", math.Float64frombits(v.sumBits.Load()))
			b = sample(b, m.Name, "_count", se.labels, "", float64(count))
		}
	}
	return b
}

func sample(b []byte, name, suffix, labels, le string, v float64) []byte {
	b = append(b, name...)
	b = append(b, suffix...)
	b = append(b, '{')
	b = append(b, labels...)
	if le != "" {
		if labels != "" {
			b = append(b, ',')
		}
		b = append(b, `le="`...)
		b = append(b, le...)
		b = append(b, '"')
	}
	b = append(b, "} "...)
	b = strconv.AppendFloat(b, v, 'g', -1, 64)
	return append(b, '\n')
}

func renderLabels(names, values []string) string {
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n)
		b.WriteString(`="`)
		if i < len(values) {
			escape(&b, values[i])
		}
		b.WriteByte('"')
	}
	return b.String()
}

// escape writes a label value as the text format wants it: backslash, quote and newline escaped.
func escape(b *strings.Builder, v string) {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
}

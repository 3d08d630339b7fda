package stats

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
)

// Counter is a monotonically increasing count. The zero value is ready; a nil *Counter ignores
// increments, so optional stats need no nil checks at the call site.
type Counter struct{ v atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() {
	if c != nil {
		c.v.Add(1)
	}
}

// Add adds n.
func (c *Counter) Add(n uint64) {
	if c != nil {
		c.v.Add(n)
	}
}

// Value returns the current count.
func (c *Counter) Value() uint64 {
	if c == nil {
		return 0
	}
	return c.v.Load()
}

// Gauge is a value that goes up and down. A nil *Gauge ignores updates.
type Gauge struct {
	v atomic.Int64
	// used is Envoy's "used" flag for ?usedonly: set by the first write, so a gauge that went up and
	// back to zero still shows.
	used atomic.Bool
}

func (g *Gauge) markUsed() {
	if !g.used.Load() { // a load first keeps the cache line shared once the flag is set
		g.used.Store(true)
	}
}

// Inc adds one.
func (g *Gauge) Inc() {
	if g != nil {
		g.markUsed()
		g.v.Add(1)
	}
}

// Dec subtracts one.
func (g *Gauge) Dec() {
	if g != nil {
		g.markUsed()
		g.v.Add(-1)
	}
}

// Set replaces the value.
func (g *Gauge) Set(v int64) {
	if g != nil {
		g.markUsed()
		g.v.Store(v)
	}
}

// Value returns the current value.
func (g *Gauge) Value() int64 {
	if g == nil {
		return 0
	}
	return g.v.Load()
}

// Store is a set of named metrics. Its methods are safe for concurrent use; they take a lock, so call
// them when config changes, never per request.
type Store struct {
	mu       sync.Mutex
	counters map[string]*Counter
	gauges   map[string]*Gauge
	funcs    map[string]func() int64

	tagMu    sync.Mutex
	tagCache map[string]extracted
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{
		counters: make(map[string]*Counter),
		gauges:   make(map[string]*Gauge),
		funcs:    make(map[string]func() int64),
	}
}

// Counter returns the counter called name, creating it at zero the first time.
func (s *Store) Counter(name string) *Counter {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.counters[name]
	if !ok {
		c = &Counter{}
		s.counters[name] = c
	}
	return c
}

// Gauge returns the gauge called name, creating it at zero the first time.
func (s *Store) Gauge(name string) *Gauge {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.gauges[name]
	if !ok {
		g = &Gauge{}
		s.gauges[name] = g
	}
	return g
}

// GaugeFunc registers a gauge whose value is read from f when the stats are rendered, for state that
// lives elsewhere (the control plane connection, say). A later registration under the same name wins.
func (s *Store) GaugeFunc(name string, f func() int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.funcs[name] = f
}

// Stat is one metric's name and value at the time of a Snapshot.
type Stat struct {
	Name  string
	Value int64
	// Counter is true for counters, false for gauges.
	Counter bool
	// Used is Envoy's used flag (?usedonly): a counter that has counted, a gauge that has been
	// written; gauge functions always are.
	Used bool
}

// Snapshot returns every metric whose name matches filter (all when filter is nil), sorted by name.
func (s *Store) Snapshot(filter *regexp.Regexp) []Stat {
	s.mu.Lock()
	out := make([]Stat, 0, len(s.counters)+len(s.gauges)+len(s.funcs))
	for name, c := range s.counters {
		v := c.Value()
		out = append(out, Stat{Name: name, Value: int64(v), Counter: true, Used: v > 0})
	}
	for name, g := range s.gauges {
		out = append(out, Stat{Name: name, Value: g.Value(), Used: g.used.Load()})
	}
	funcs := make(map[string]func() int64, len(s.funcs))
	for name, f := range s.funcs {
		funcs[name] = f
	}
	s.mu.Unlock()
	// Called without the lock: a gauge function may itself take locks of its owner.
	for name, f := range funcs {
		out = append(out, Stat{Name: name, Value: f(), Used: true})
	}
	if filter != nil {
		out = slices.DeleteFunc(out, func(st Stat) bool { return !filter.MatchString(st.Name) })
	}
	slices.SortFunc(out, func(a, b Stat) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// WriteText writes the metrics matching filter in Envoy's /stats text format.
func (s *Store) WriteText(w io.Writer, filter *regexp.Regexp) error {
	if _, err := w.Write(AppendText(nil, s.Snapshot(filter))); err != nil {
		return fmt.Errorf("write stats: %w", err)
	}
	return nil
}

// AppendText appends stats in Envoy's /stats text format: "name: value" lines.
func AppendText(buf []byte, snap []Stat) []byte {
	for _, st := range snap {
		buf = append(buf, st.Name...)
		buf = append(buf, ": "...)
		buf = strconv.AppendInt(buf, st.Value, 10)
		buf = append(buf, '\n')
	}
	return buf
}

// StatusClasses counts responses by status class, Envoy's <prefix>1xx ..
// <prefix>5xx (e.g. upstream_rq_2xx, downstream_rq_5xx).
type StatusClasses [5]*Counter

// StatusClasses registers the five class counters named prefix+"1xx" ...
func (s *Store) StatusClasses(prefix string) StatusClasses {
	var c StatusClasses
	for i := range c {
		c[i] = s.Counter(prefix + string(rune('1'+i)) + "xx")
	}
	return c
}

// Record counts one response with status code; codes outside 100-599 are
// not counted, as Envoy.
func (c StatusClasses) Record(code int) {
	if i := code/100 - 1; i >= 0 && i < len(c) {
		c[i].Inc()
	}
}

package ui

import (
	"testing"
	"time"
)

// BenchmarkGraph500 is the cost of one uncached /api/graph answer at the
// issue's scale: 500 services (550 workloads) and 2000 edges.
func BenchmarkGraph500(b *testing.B) {
	syn := SyntheticTopology(500, 2000, 1)
	s := New(syn.Options())
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		s.graph.body = nil // defeat the cache
		body := s.graphJSON(now)
		b.SetBytes(int64(len(body)))
	}
}

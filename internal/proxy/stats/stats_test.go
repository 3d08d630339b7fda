package stats

import (
	"bytes"
	"regexp"
	"sync"
	"testing"
)

func TestSameNameReturnsSameCounterSoStatsSurviveReconfiguration(t *testing.T) {
	s := NewStore()
	a := s.Counter("cluster.c.upstream_rq_total")
	a.Inc()
	b := s.Counter("cluster.c.upstream_rq_total")
	if a != b || b.Value() != 1 {
		t.Fatalf("got a different counter or value %d", b.Value())
	}
}

func TestTextFormatIsSortedEnvoyStyle(t *testing.T) {
	s := NewStore()
	s.Counter("b.total").Add(3)
	s.Gauge("a.active").Set(-1)
	s.GaugeFunc("c.state", func() int64 { return 7 })
	var out bytes.Buffer
	if err := s.WriteText(&out, nil); err != nil {
		t.Fatal(err)
	}
	want := "a.active: -1\nb.total: 3\nc.state: 7\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
	out.Reset()
	if err := s.WriteText(&out, regexp.MustCompile(`total`)); err != nil {
		t.Fatal(err)
	}
	if out.String() != "b.total: 3\n" {
		t.Fatalf("filtered: got %q", out.String())
	}
}

func TestNilMetricsIgnoreUpdates(t *testing.T) {
	var c *Counter
	var g *Gauge
	c.Inc()
	g.Inc()
	if c.Value() != 0 || g.Value() != 0 {
		t.Fatal("nil metrics reported values")
	}
}

func TestCountersAreRaceFree(t *testing.T) {
	s := NewStore()
	c := s.Counter("x")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				c.Inc()
			}
		})
	}
	wg.Wait()
	if c.Value() != 8000 {
		t.Fatalf("got %d", c.Value())
	}
}

func BenchmarkCounterInc(b *testing.B) {
	c := NewStore().Counter("x")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Inc()
		}
	})
}

func TestStatusClassesCountByClassLikeEnvoy(t *testing.T) {
	s := NewStore()
	c := s.StatusClasses("cluster.x.upstream_rq_")
	for _, code := range []int{100, 200, 204, 299, 302, 404, 503, 599, 99, 600, 0} {
		c.Record(code)
	}
	want := map[string]uint64{"1xx": 1, "2xx": 3, "3xx": 1, "4xx": 1, "5xx": 2}
	for class, n := range want {
		if got := s.Counter("cluster.x.upstream_rq_" + class).Value(); got != n {
			t.Errorf("upstream_rq_%s = %d, want %d", class, got, n)
		}
	}
}

package upstream

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
)

func eps(addrs ...string) []Endpoint {
	out := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = Endpoint{Address: a, Weight: 1, Healthy: true}
	}
	return out
}

func pickCounts(c *Cluster, n int) map[string]int {
	counts := map[string]int{}
	for range n {
		if h := c.Pick(); h != nil {
			counts[h.Address]++
		}
	}
	return counts
}

func TestRoundRobinCyclesThroughEndpointsInOrder(t *testing.T) {
	c := New(Config{Name: "c", Endpoints: eps("a:1", "b:1", "c:1")}, stats.NewStore())
	var got []string
	for range 6 {
		got = append(got, c.Pick().Address)
	}
	if fmt.Sprint(got) != "[a:1 b:1 c:1 a:1 b:1 c:1]" {
		t.Fatalf("got %v", got)
	}
}

func TestWeightedRoundRobinHonoursWeightsSmoothly(t *testing.T) {
	e := eps("a:1", "b:1")
	e[0].Weight, e[1].Weight = 3, 1
	c := New(Config{Name: "c", Endpoints: e}, stats.NewStore())
	var seq []string
	for range 8 {
		seq = append(seq, c.Pick().Address)
	}
	counts := map[string]int{}
	for _, s := range seq {
		counts[s]++
	}
	if counts["a:1"] != 6 || counts["b:1"] != 2 {
		t.Fatalf("got %v", seq)
	}
	if seq[0] == "b:1" && seq[1] == "b:1" {
		t.Fatalf("not smooth: %v", seq)
	}
}

func TestUnhealthyEndpointsAreNotPickedAndAnEmptyClusterPicksNothing(t *testing.T) {
	e := eps("a:1", "b:1", "c:1")
	e[1].Healthy = false
	c := New(Config{Name: "c", Endpoints: e}, stats.NewStore())
	if got := pickCounts(c, 300); got["b:1"] != 0 || got["a:1"] == 0 || got["c:1"] == 0 {
		t.Fatalf("got %v", got)
	}
	c.SetEndpoints(nil)
	if c.Pick() != nil {
		t.Fatal("picked a host from an empty cluster")
	}
}

func TestHostsKeepTheirCountersAcrossEndpointUpdates(t *testing.T) {
	c := New(Config{Name: "c", Endpoints: eps("a:1", "b:1")}, stats.NewStore())
	h := c.Pick()
	h.Begin()
	h.End(false)
	c.SetEndpoints(eps("b:1", "a:1", "d:1"))
	for _, got := range c.Hosts() {
		if got.Address == h.Address {
			if got != h || got.RequestsTotal() != 1 {
				t.Fatalf("host %s was replaced or lost its counters", h.Address)
			}
			return
		}
	}
	t.Fatal("host disappeared")
}

func TestRandomAndLeastRequestSpreadLoad(t *testing.T) {
	for _, lb := range []LBPolicy{Random, LeastRequest} {
		c := New(Config{Name: "c", LB: lb, Endpoints: eps("a:1", "b:1", "c:1")}, stats.NewStore())
		got := pickCounts(c, 3000)
		for _, a := range []string{"a:1", "b:1", "c:1"} {
			if got[a] < 800 {
				t.Errorf("policy %d: %v", lb, got)
			}
		}
	}
}

func TestTransportPoolsKeepAliveConnectionsAndCountsThem(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(backend.Close)
	u, _ := url.Parse(backend.URL)
	store := stats.NewStore()
	c := New(Config{Name: "c", Endpoints: eps(u.Host)}, store)
	t.Cleanup(c.Close)
	for range 20 {
		req, _ := http.NewRequest("GET", "http://"+c.Pick().Address+"/", nil)
		resp, err := c.Transport(false).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := c.Stats.CxTotal.Value(); n != 1 {
		t.Fatalf("upstream_cx_total = %d, want 1 (keep-alive)", n)
	}
}

func TestConnectFailureIsRecognised(t *testing.T) {
	c := New(Config{Name: "c", Endpoints: eps("127.0.0.1:1")}, stats.NewStore())
	req, _ := http.NewRequest("GET", "http://127.0.0.1:1/", nil)
	_, err := c.Transport(false).RoundTrip(req)
	if !IsConnectFailure(err) {
		t.Fatalf("err %v not a connect failure", err)
	}
	if c.Stats.CxConnectFail.Value() != 1 {
		t.Fatal("upstream_cx_connect_fail not counted")
	}
}

func BenchmarkPick(b *testing.B) {
	c := New(Config{Name: "c", Endpoints: eps("a:1", "b:1", "c:1")}, stats.NewStore())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = c.Pick()
		}
	})
}

func TestUnixSocketEndpoints(t *testing.T) {
	dir, err := os.MkdirTemp("", "uds")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "app.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "uds "+r.Host)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	c := New(Config{Name: "inbound|9080||", Endpoints: eps(UnixPrefix + sock)}, stats.NewStore())
	t.Cleanup(c.Close)
	h := c.Pick()
	if h.Address != UnixPrefix+sock {
		t.Fatalf("address %q", h.Address)
	}
	req, _ := http.NewRequest("GET", "http://"+h.Target()+"/", nil)
	req.Host = "ratings:9080"
	resp, err := c.Transport(false).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "uds ratings:9080" {
		t.Fatalf("got %q", b)
	}
}

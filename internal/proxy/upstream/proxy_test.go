package upstream_test

// Behaviour through the connection manager, with real upstream servers on 127.0.0.1: what a
// client of the proxy sees when hashing, circuit breakers, outlier detection and health checks act.

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/hashpolicy"
	"github.com/trellis-mesh/trellis/internal/proxy/hcm"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// backend is an upstream server that answers with its name, or with status when set.
type backend struct {
	name   string
	addr   string
	status atomic.Int32 // 0 means 200
	health atomic.Int32 // status of /health; 0 means 200
	hits   atomic.Int64
	srv    *httptest.Server
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			if s := b.health.Load(); s != 0 {
				w.WriteHeader(int(s))
			}
			return
		}
		b.hits.Add(1)
		if s := b.status.Load(); s != 0 {
			w.WriteHeader(int(s))
		}
		_, _ = io.WriteString(w, b.name)
	}))
	t.Cleanup(b.srv.Close)
	b.addr = strings.TrimPrefix(b.srv.URL, "http://")
	return b
}

func endpoints(bs ...*backend) []upstream.Endpoint {
	out := make([]upstream.Endpoint, len(bs))
	for i, b := range bs {
		out[i] = upstream.Endpoint{Address: b.addr, Weight: 1, Healthy: true}
	}
	return out
}

// proxyTo runs a connection manager routing everything to cl, and returns its URL.
func proxyTo(t *testing.T, store *stats.Store, cl *upstream.Cluster, hp *hashpolicy.Policy) string {
	t.Helper()
	tbl, err := route.NewTable("r", []*route.VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: []*route.Route{
		{Match: route.Match{Kind: route.PathPrefix, Path: "/"}, Action: route.Action{Cluster: cl.Name(), HashPolicy: hp}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	var snap atomic.Pointer[hcm.Snapshot]
	snap.Store(&hcm.Snapshot{Routes: map[string]*route.Table{"r": tbl}, Clusters: map[string]*upstream.Cluster{cl.Name(): cl}})
	h := hcm.New(&xdsconfig.HTTPConnectionManager{StatPrefix: "t", RDSName: "r", ServerName: "envoy"}, &snap, store, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func get(t *testing.T, url string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newCluster(t *testing.T, store *stats.Store, cfg upstream.Config) *upstream.Cluster {
	cl := upstream.New(cfg, store)
	t.Cleanup(cl.Close)
	return cl
}

func counter(store *stats.Store, name string) uint64 { return store.Counter(name).Value() }

func TestRingHashKeepsEachUsersRequestsOnOneHost(t *testing.T) {
	for _, lb := range []upstream.LBPolicy{upstream.RingHash, upstream.Maglev} {
		t.Run(lb.String(), func(t *testing.T) {
			bs := []*backend{newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")}
			store := stats.NewStore()
			cl := newCluster(t, store, upstream.Config{Name: "c", LB: lb, Endpoints: endpoints(bs...)})
			url := proxyTo(t, store, cl, &hashpolicy.Policy{Methods: []hashpolicy.Method{{Kind: hashpolicy.Header, Name: "X-User"}}})
			seen := map[string]bool{}
			for u := range 30 {
				user := "user-" + string(rune('a'+u))
				_, first, _ := get(t, url, "X-User", user)
				for range 3 {
					if _, got, _ := get(t, url, "X-User", user); got != first {
						t.Fatalf("%s went to %s, then %s", user, first, got)
					}
				}
				seen[first] = true
			}
			if len(seen) != 3 {
				t.Fatalf("30 users reached only %v", seen)
			}
		})
	}
}

func TestCircuitBreakerMaxRequestsAnswers503UOToTheSecondConcurrentRequest(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 4)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		arrived <- struct{}{}
		<-release
		_, _ = io.WriteString(w, "slow")
	}))
	t.Cleanup(slow.Close)
	defer close(release) // before the cleanups: closing the proxy waits for its requests
	store := stats.NewStore()
	cl := newCluster(t, store, upstream.Config{Name: "cb", Endpoints: []upstream.Endpoint{{Address: strings.TrimPrefix(slow.URL, "http://"), Healthy: true}},
		CircuitBreakers: upstream.CircuitBreakers{Default: upstream.Thresholds{Set: true, MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1, MaxRetries: 3, TrackRemaining: true}}})
	url := proxyTo(t, store, cl, nil)
	done := make(chan int)
	go func() {
		resp, err := http.Get(url + "/first")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-arrived
	if g := store.Gauge("cluster.cb.circuit_breakers.default.rq_open").Value(); g != 1 {
		t.Fatalf("rq_open = %d with one request in flight", g)
	}
	if g := store.Gauge("cluster.cb.circuit_breakers.default.remaining_rq").Value(); g != 0 {
		t.Fatalf("remaining_rq = %d", g)
	}
	code, body, hdr := get(t, url+"/second")
	if code != 503 || !strings.HasSuffix(body, "reset reason: overflow") || hdr.Get("X-Envoy-Overloaded") != "true" {
		t.Fatalf("second request: %d %q %v", code, body, hdr)
	}
	if n := counter(store, "cluster.cb.upstream_rq_pending_overflow"); n != 1 {
		t.Fatalf("upstream_rq_pending_overflow = %d", n)
	}
	select {
	case <-arrived:
		t.Fatal("the refused request reached the upstream")
	default:
	}
	release <- struct{}{}
	if c := <-done; c != 200 {
		t.Fatalf("first request: %d", c)
	}
	eventually(t, "the slot to be released", func() bool {
		return store.Gauge("cluster.cb.circuit_breakers.default.rq_open").Value() == 0
	})
}

func TestCircuitBreakerMaxConnectionsOverflowsWithoutPendingRoom(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 4)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		arrived <- struct{}{}
		<-release
	}))
	t.Cleanup(slow.Close)
	defer close(release) // before the cleanups: closing the proxy waits for its requests
	store := stats.NewStore()
	cl := newCluster(t, store, upstream.Config{Name: "cx", Endpoints: []upstream.Endpoint{{Address: strings.TrimPrefix(slow.URL, "http://"), Healthy: true}},
		CircuitBreakers: upstream.CircuitBreakers{Default: upstream.Thresholds{Set: true, MaxConnections: 1, MaxPendingRequests: 0, MaxRequests: 10, MaxRetries: 3}}})
	url := proxyTo(t, store, cl, nil)
	go func() {
		if resp, err := http.Get(url + "/first"); err == nil {
			resp.Body.Close()
		}
	}()
	<-arrived
	code, body, _ := get(t, url+"/second")
	if code != 503 || !strings.HasSuffix(body, "reset reason: overflow") {
		t.Fatalf("second request: %d %q", code, body)
	}
	if counter(store, "cluster.cx.upstream_cx_overflow") != 1 || counter(store, "cluster.cx.upstream_rq_pending_overflow") != 1 {
		t.Fatalf("cx_overflow %d, rq_pending_overflow %d", counter(store, "cluster.cx.upstream_cx_overflow"), counter(store, "cluster.cx.upstream_rq_pending_overflow"))
	}
}

func TestRetrySlotsAreBoundedByMaxRetries(t *testing.T) {
	store := stats.NewStore()
	cl := newCluster(t, store, upstream.Config{Name: "r"})
	for range 3 {
		if !cl.TryRetry() {
			t.Fatal("default max_retries is 3")
		}
	}
	if cl.TryRetry() || counter(store, "cluster.r.upstream_rq_retry_overflow") != 1 {
		t.Fatal("fourth concurrent retry allowed")
	}
	cl.ReleaseRetry()
	if !cl.TryRetry() {
		t.Fatal("released slot not reusable")
	}
}

func TestOutlierEjectsAHostAfterConsecutive5xxAndReturnsItAfterTheEjectionTime(t *testing.T) {
	good, bad := newBackend(t, "good"), newBackend(t, "bad")
	bad.status.Store(503)
	store := stats.NewStore()
	od := upstream.DefaultOutlierConfig
	od.Consecutive5xx, od.Interval, od.BaseEjectionTime, od.MaxEjectionPercent = 3, 20*time.Millisecond, 300*time.Millisecond, 50
	cl := newCluster(t, store, upstream.Config{Name: "od", Outlier: &od, Endpoints: endpoints(good, bad)})
	url := proxyTo(t, store, cl, nil)
	for range 6 { // round robin: three to each
		get(t, url)
	}
	if n := store.Gauge("cluster.od.outlier_detection.ejections_active").Value(); n != 1 {
		t.Fatalf("ejections_active = %d", n)
	}
	if counter(store, "cluster.od.outlier_detection.ejections_enforced_consecutive_5xx") != 1 ||
		counter(store, "cluster.od.outlier_detection.ejections_detected_consecutive_5xx") != 1 {
		t.Fatal("consecutive_5xx ejection not counted")
	}
	for _, h := range cl.Hosts() {
		if h.Address == bad.addr && h.HealthFlags() != "/failed_outlier_check" {
			t.Fatalf("bad host flags %q", h.HealthFlags())
		}
	}
	before := bad.hits.Load()
	for range 10 {
		if code, body, _ := get(t, url); code != 200 || body != "good" {
			t.Fatalf("while ejected: %d %s", code, body)
		}
	}
	if bad.hits.Load() != before {
		t.Fatal("ejected host got traffic")
	}
	bad.status.Store(0)
	eventually(t, "the host to return after its ejection time", func() bool {
		_, body, _ := get(t, url)
		return body == "bad"
	})
	if n := store.Gauge("cluster.od.outlier_detection.ejections_active").Value(); n != 0 {
		t.Fatalf("ejections_active = %d after uneject", n)
	}
}

func TestMaxEjectionPercentBoundsEjections(t *testing.T) {
	bs := []*backend{newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c"), newBackend(t, "d")}
	for _, b := range bs {
		b.status.Store(500)
	}
	store := stats.NewStore()
	od := upstream.DefaultOutlierConfig
	od.Consecutive5xx, od.MaxEjectionPercent = 1, 50
	cl := newCluster(t, store, upstream.Config{Name: "mx", Outlier: &od, Endpoints: endpoints(bs...)})
	url := proxyTo(t, store, cl, nil)
	for range 12 {
		get(t, url)
	}
	ejected := 0
	for _, h := range cl.Hosts() {
		if h.Flags()&upstream.FailedOutlierCheck != 0 {
			ejected++
		}
	}
	if ejected != 2 || store.Gauge("cluster.mx.outlier_detection.ejections_active").Value() != 2 {
		t.Fatalf("%d of 4 hosts ejected with max_ejection_percent 50", ejected)
	}
	if counter(store, "cluster.mx.outlier_detection.ejections_overflow") == 0 {
		t.Fatal("ejections_overflow not counted")
	}
}

func TestOutlierDefaultMaxEjectionPercentEjectsNoneOfThreeUnlessAlwaysEjectOneHost(t *testing.T) {
	for _, always := range []bool{false, true} {
		store := stats.NewStore()
		od := upstream.DefaultOutlierConfig
		od.Consecutive5xx, od.AlwaysEjectOneHost = 1, always
		cl := newCluster(t, store, upstream.Config{Name: "one", Outlier: &od, Endpoints: []upstream.Endpoint{
			{Address: "10.0.0.1:80", Healthy: true}, {Address: "10.0.0.2:80", Healthy: true}, {Address: "10.0.0.3:80", Healthy: true}}})
		for _, h := range cl.Hosts() {
			cl.ReportResponse(h, 503)
		}
		want := int64(0)
		if always {
			want = 1
		}
		if got := store.Gauge("cluster.one.outlier_detection.ejections_active").Value(); got != want {
			t.Fatalf("always_eject_one_host %v: %d ejected", always, got)
		}
	}
}

func TestHTTPHealthCheckTakesA503HostOutOfRotationAndBack(t *testing.T) {
	good, sick := newBackend(t, "good"), newBackend(t, "sick")
	var hcHost atomic.Value
	sick.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			hcHost.Store(r.Host + " " + r.UserAgent())
			if s := sick.health.Load(); s != 0 {
				w.WriteHeader(int(s))
			}
			return
		}
		sick.hits.Add(1)
		_, _ = io.WriteString(w, "sick")
	})
	store := stats.NewStore()
	hc := &upstream.HealthCheck{Timeout: 2 * time.Second, Interval: 20 * time.Millisecond, UnhealthyThreshold: 3, HealthyThreshold: 2,
		NoTrafficInterval: 20 * time.Millisecond, NoTrafficHealthyInterval: 20 * time.Millisecond, UnhealthyInterval: 20 * time.Millisecond,
		UnhealthyEdgeInterval: 20 * time.Millisecond, HealthyEdgeInterval: 20 * time.Millisecond,
		HTTP: &upstream.HTTPHealthCheck{Path: "/health"}}
	cl := newCluster(t, store, upstream.Config{Name: "hc", HealthCheck: hc, Endpoints: endpoints(good, sick)})
	url := proxyTo(t, store, cl, nil)
	flags := func(b *backend) string {
		for _, h := range cl.Hosts() {
			if h.Address == b.addr {
				return h.HealthFlags()
			}
		}
		return "gone"
	}
	eventually(t, "both hosts to pass their first check", func() bool { return flags(good) == "healthy" && flags(sick) == "healthy" })
	if got, _ := hcHost.Load().(string); got != "hc Envoy/HC" {
		t.Fatalf("health check Host and User-Agent: %q", got)
	}
	sick.health.Store(503) // a bad status fails the host at once, whatever unhealthy_threshold says
	eventually(t, "the host to fail its check", func() bool { return flags(sick) == "/failed_active_hc" })
	before := sick.hits.Load()
	for range 10 {
		if _, body, _ := get(t, url); body != "good" {
			t.Fatalf("unhealthy host answered: %s", body)
		}
	}
	if sick.hits.Load() != before {
		t.Fatal("unhealthy host got traffic")
	}
	if counter(store, "cluster.hc.health_check.failure") == 0 || counter(store, "cluster.hc.health_check.attempt") == 0 {
		t.Fatal("health_check stats not counted")
	}
	sick.health.Store(0)
	eventually(t, "the host to recover", func() bool { return flags(sick) == "healthy" })
	eventually(t, "traffic to reach it again", func() bool {
		_, body, _ := get(t, url)
		return body == "sick"
	})
}

func TestNewHostsAreUnusedUntilTheirFirstHealthCheckPasses(t *testing.T) {
	gate := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-gate }))
	t.Cleanup(srv.Close)
	hc := &upstream.HealthCheck{Timeout: 10 * time.Second, Interval: time.Hour, UnhealthyThreshold: 1, HealthyThreshold: 5,
		NoTrafficInterval: time.Hour, NoTrafficHealthyInterval: time.Hour, UnhealthyInterval: time.Hour, UnhealthyEdgeInterval: time.Hour, HealthyEdgeInterval: time.Hour,
		HTTP: &upstream.HTTPHealthCheck{Path: "/health"}}
	cl := newCluster(t, stats.NewStore(), upstream.Config{Name: "new", HealthCheck: hc, Endpoints: []upstream.Endpoint{{Address: strings.TrimPrefix(srv.URL, "http://"), Healthy: true}}})
	h := cl.Hosts()[0]
	if h.HealthFlags() != "/failed_active_hc/pending_active_hc" || h.Healthy() {
		t.Fatalf("new host flags %q", h.HealthFlags())
	}
	close(gate)
	// One success is enough for a host's first check, although healthy_threshold is 5.
	eventually(t, "the first check to pass", func() bool { return h.HealthFlags() == "healthy" })
}

func TestTCPHealthCheckDetectsAClosedPortAndMatchesPayloads(t *testing.T) {
	up := newBackend(t, "up")
	store := stats.NewStore()
	hc := &upstream.HealthCheck{Timeout: 2 * time.Second, Interval: 20 * time.Millisecond, UnhealthyThreshold: 2, HealthyThreshold: 1,
		NoTrafficInterval: 20 * time.Millisecond, NoTrafficHealthyInterval: 20 * time.Millisecond, UnhealthyInterval: 20 * time.Millisecond,
		UnhealthyEdgeInterval: 20 * time.Millisecond, HealthyEdgeInterval: 20 * time.Millisecond,
		TCP: &upstream.TCPHealthCheck{Send: []byte("GET / HTTP/1.0\r\n\r\n"), Receive: [][]byte{[]byte("HTTP/1.0 200"), []byte("up")}}}
	cl := newCluster(t, store, upstream.Config{Name: "tcp", HealthCheck: hc, Endpoints: endpoints(up)})
	h := cl.Hosts()[0]
	eventually(t, "the payload check to pass", func() bool { return h.HealthFlags() == "healthy" })
	up.srv.Close()
	eventually(t, "the closed port to fail the check", func() bool { return h.Flags()&upstream.FailedActiveHC != 0 })
	if counter(store, "cluster.tcp.health_check.network_failure") == 0 {
		t.Fatal("network_failure not counted")
	}
}

func TestHealthAndOutlierStateSurviveAnEDSUpdate(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	a.health.Store(503)
	store := stats.NewStore()
	hc := &upstream.HealthCheck{Timeout: 2 * time.Second, Interval: 20 * time.Millisecond, UnhealthyThreshold: 1, HealthyThreshold: 1,
		NoTrafficInterval: 20 * time.Millisecond, NoTrafficHealthyInterval: 20 * time.Millisecond, UnhealthyInterval: 20 * time.Millisecond,
		UnhealthyEdgeInterval: 20 * time.Millisecond, HealthyEdgeInterval: 20 * time.Millisecond,
		HTTP: &upstream.HTTPHealthCheck{Path: "/health"}}
	od := upstream.DefaultOutlierConfig
	od.Consecutive5xx, od.MaxEjectionPercent, od.SuccessfulActiveHealthCheckUnejectHost = 1, 100, false
	cl := newCluster(t, store, upstream.Config{Name: "keep", HealthCheck: hc, Outlier: &od, Endpoints: endpoints(a, b)})
	host := func(addr string) *upstream.Host {
		for _, h := range cl.Hosts() {
			if h.Address == addr {
				return h
			}
		}
		return nil
	}
	eventually(t, "b to pass and a to fail", func() bool {
		return host(b.addr).HealthFlags() == "healthy" && host(a.addr).Flags()&upstream.FailedActiveHC != 0
	})
	cl.ReportResponse(host(b.addr), 500)
	if host(b.addr).HealthFlags() != "/failed_outlier_check" {
		t.Fatalf("b flags %q", host(b.addr).HealthFlags())
	}
	c := newBackend(t, "c")
	cl.SetEndpoints(endpoints(b, a, c)) // a new host and a new order
	if host(b.addr).HealthFlags() != "/failed_outlier_check" || host(a.addr).Flags()&upstream.FailedActiveHC == 0 {
		t.Fatalf("state lost: a %q b %q", host(a.addr).HealthFlags(), host(b.addr).HealthFlags())
	}
	if store.Gauge("cluster.keep.outlier_detection.ejections_active").Value() != 1 {
		t.Fatal("ejection count lost")
	}
	eventually(t, "the new host to be checked", func() bool { return host(c.addr).HealthFlags() == "healthy" })
}

func TestHostsRemovedByEDSStayWhilePassingActiveHealthChecks(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	hc := &upstream.HealthCheck{Timeout: 2 * time.Second, Interval: 20 * time.Millisecond, UnhealthyThreshold: 1, HealthyThreshold: 1,
		NoTrafficInterval: 20 * time.Millisecond, NoTrafficHealthyInterval: 20 * time.Millisecond, UnhealthyInterval: 20 * time.Millisecond,
		UnhealthyEdgeInterval: 20 * time.Millisecond, HealthyEdgeInterval: 20 * time.Millisecond,
		HTTP: &upstream.HTTPHealthCheck{Path: "/health"}}
	cl := newCluster(t, stats.NewStore(), upstream.Config{Name: "rm", HealthCheck: hc, Endpoints: endpoints(a, b)})
	eventually(t, "both healthy", func() bool {
		hs := cl.Hosts()
		return hs[0].Healthy() && hs[1].Healthy()
	})
	cl.SetEndpoints(endpoints(a))
	hs := cl.Hosts()
	if len(hs) != 2 || hs[1].HealthFlags() != "/pending_dynamic_removal" {
		t.Fatalf("removed host dropped at once: %d hosts", len(hs))
	}
	b.health.Store(503)
	eventually(t, "the removed host to go once it fails", func() bool { return len(cl.Hosts()) == 1 })
}

func TestCloseStopsHealthChecksAndTheOutlierTimer(t *testing.T) {
	bs := []*backend{newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")}
	http.DefaultClient.CloseIdleConnections()
	base := runtime.NumGoroutine()
	store := stats.NewStore()
	hc := &upstream.HealthCheck{Timeout: time.Second, Interval: 10 * time.Millisecond, UnhealthyThreshold: 1, HealthyThreshold: 1,
		NoTrafficInterval: 10 * time.Millisecond, NoTrafficHealthyInterval: 10 * time.Millisecond, UnhealthyInterval: 10 * time.Millisecond,
		UnhealthyEdgeInterval: 10 * time.Millisecond, HealthyEdgeInterval: 10 * time.Millisecond,
		HTTP: &upstream.HTTPHealthCheck{Path: "/health"}}
	od := upstream.DefaultOutlierConfig
	od.Interval = 10 * time.Millisecond
	cl := upstream.New(upstream.Config{Name: "close", HealthCheck: hc, Outlier: &od, Endpoints: endpoints(bs...)}, store)
	eventually(t, "checks to run", func() bool { return counter(store, "cluster.close.health_check.success") >= 6 })
	cl.Close()
	cl.Close() // a second Close is harmless
	checks := counter(store, "cluster.close.health_check.attempt")
	eventually(t, "the cluster's goroutines to end", func() bool { return runtime.NumGoroutine() <= base })
	time.Sleep(50 * time.Millisecond) // five intervals: no check may start after Close
	if n := counter(store, "cluster.close.health_check.attempt"); n != checks {
		t.Fatalf("%d checks after Close", n-checks)
	}
}

func TestHTTP2HealthCheckSpeaksCleartextHTTP2(t *testing.T) {
	var proto atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { proto.Store(r.Proto) }))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	hc := &upstream.HealthCheck{Timeout: 2 * time.Second, Interval: time.Hour, UnhealthyThreshold: 1, HealthyThreshold: 1,
		NoTrafficInterval: time.Hour, NoTrafficHealthyInterval: time.Hour, UnhealthyInterval: time.Hour, UnhealthyEdgeInterval: time.Hour, HealthyEdgeInterval: time.Hour,
		HTTP: &upstream.HTTPHealthCheck{Path: "/healthz", HTTP2: true}}
	cl := newCluster(t, stats.NewStore(), upstream.Config{Name: "h2", HealthCheck: hc, Endpoints: []upstream.Endpoint{{Address: strings.TrimPrefix(srv.URL, "http://"), Healthy: true}}})
	eventually(t, "the check to pass", func() bool { return cl.Hosts()[0].Healthy() })
	if p, _ := proto.Load().(string); p != "HTTP/2.0" {
		t.Fatalf("health check spoke %q", p)
	}
}

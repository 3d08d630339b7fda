package apphealth

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tick is what one second of initialDelaySeconds and periodSeconds lasts in these tests.
const tick = 10 * time.Millisecond

// scriptedApp answers its n-th request with script[n-1], then with after.
type scriptedApp struct {
	script []int
	after  atomic.Int32
	hits   atomic.Int32
	first  atomic.Int64 // unix nanoseconds of the first request
	port   int
}

func newScriptedApp(t *testing.T, after int, script ...int) *scriptedApp {
	a := &scriptedApp{script: script}
	a.after.Store(int32(after))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := int(a.hits.Add(1))
		a.first.CompareAndSwap(0, time.Now().UnixNano())
		code := int(a.after.Load())
		if n <= len(a.script) {
			code = a.script[n-1]
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	a.port = srv.Listener.Addr().(*net.TCPAddr).Port
	return a
}

// report is one Report call, with the number of requests the app had seen when it came.
type report struct {
	healthy bool
	message string
	atCheck int
}

func (r report) String() string {
	if r.healthy {
		return fmt.Sprintf("healthy after check %d", r.atCheck)
	}
	return fmt.Sprintf("unhealthy after check %d (%s)", r.atCheck, r.message)
}

type reports struct {
	mu  sync.Mutex
	got []report
}

func (rs *reports) list() []report {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]report(nil), rs.got...)
}

// startRunner runs a Runner for p against app until the test ends, with tick-long seconds.
func startRunner(t *testing.T, p *Probe, app *scriptedApp, ready func() (string, bool)) *reports {
	t.Helper()
	rs := &reports{}
	r, err := New(Config{
		Probe:      p,
		ProxyReady: ready,
		Report: func(healthy bool, message string) {
			rs.mu.Lock()
			defer rs.mu.Unlock()
			rs.got = append(rs.got, report{healthy, message, int(app.hits.Load())})
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	r.second = tick
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return rs
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func httpProbe(port int) *Probe {
	return &Probe{PeriodSeconds: 1, HTTPGet: &HTTPGet{Host: "127.0.0.1", Port: port, Path: "/ready"}}
}

func TestRunnerReportsTransitionsWhenThresholdsAreReachedInARow(t *testing.T) {
	const ok, bad = http.StatusOK, http.StatusServiceUnavailable
	app := newScriptedApp(t, ok,
		bad, ok, ok, // checks 1-3: healthy after two successes in a row
		bad, bad, ok, // 4-6: two failures, broken by a success: still healthy
		bad, bad, bad, // 7-9: three failures in a row: unhealthy
		ok, bad, // 10-11: one success is not enough
		ok, ok, // 12-13: healthy again
	)
	p := httpProbe(app.port)
	p.SuccessThreshold, p.FailureThreshold = 2, 3
	rs := startRunner(t, p, app, nil)
	waitUntil(t, "20 checks", func() bool { return app.hits.Load() >= 20 })

	got := rs.list()
	want := []string{
		"healthy after check 3",
		fmt.Sprintf("unhealthy after check 9 (HTTP GET http://127.0.0.1:%d/ready: status 503, want 200-399)", app.port),
		"healthy after check 13",
	}
	if len(got) != len(want) {
		t.Fatalf("reports %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("report %d: %v, want %s", i, got[i], want[i])
		}
	}
}

func TestRunnerSaysNothingUntilTheAppIsFirstHealthy(t *testing.T) {
	app := newScriptedApp(t, http.StatusInternalServerError)
	rs := startRunner(t, httpProbe(app.port), app, nil)
	waitUntil(t, "5 checks", func() bool { return app.hits.Load() >= 5 })
	if got := rs.list(); len(got) != 0 {
		t.Fatalf("reports %v from an app that was never healthy, want none (the agent starts unhealthy, unreported)", got)
	}
	app.after.Store(http.StatusOK)
	waitUntil(t, "a report", func() bool { return len(rs.list()) > 0 })
	if got := rs.list(); len(got) != 1 || !got[0].healthy || got[0].message != "" {
		t.Fatalf("reports %v, want one healthy", got)
	}
}

func TestRunnerCountsTheProxysOwnReadiness(t *testing.T) {
	app := newScriptedApp(t, http.StatusOK)
	var state atomic.Value
	state.Store("PRE_INITIALIZING")
	var asked atomic.Int32
	ready := func() (string, bool) {
		asked.Add(1)
		s := state.Load().(string)
		return s, s == "LIVE"
	}
	rs := startRunner(t, httpProbe(app.port), app, ready)
	waitUntil(t, "5 checks", func() bool { return asked.Load() >= 5 })
	if got := rs.list(); len(got) != 0 {
		t.Fatalf("reports %v while the proxy is not ready, want none", got)
	}
	if n := app.hits.Load(); n != 0 {
		t.Errorf("the app was checked %d times while the proxy was not ready", n)
	}

	state.Store("LIVE")
	waitUntil(t, "healthy", func() bool { return len(rs.list()) == 1 })
	if !rs.list()[0].healthy {
		t.Fatalf("reports %v, want healthy", rs.list())
	}
	state.Store("DRAINING")
	waitUntil(t, "unhealthy", func() bool { return len(rs.list()) == 2 })
	if r := rs.list()[1]; r.healthy || r.message != "proxy not ready: DRAINING" {
		t.Fatalf("report %v, want unhealthy: proxy not ready: DRAINING", r)
	}
}

func TestRunnerWaitsTheInitialDelayThenChecksEveryPeriod(t *testing.T) {
	app := newScriptedApp(t, http.StatusOK)
	p := httpProbe(app.port)
	p.InitialDelaySeconds, p.PeriodSeconds = 30, 10 // 300ms, then every 100ms
	start := time.Now()
	startRunner(t, p, app, nil)
	waitUntil(t, "3 checks", func() bool { return app.hits.Load() >= 3 })
	elapsed := time.Since(start)
	if first := time.Unix(0, app.first.Load()).Sub(start); first < 30*tick {
		t.Errorf("first check %v after start, want at least the initial delay %v", first, 30*tick)
	}
	// Checks 1, 2 and 3 at 300, 400 and 500ms.
	if elapsed < 50*tick {
		t.Errorf("three checks took %v, want at least 500ms (one check, then one per 100ms)", elapsed)
	}
}

func TestRunnerStopsWithItsContextEvenDuringTheInitialDelay(t *testing.T) {
	app := newScriptedApp(t, http.StatusOK)
	p := httpProbe(app.port)
	p.InitialDelaySeconds = 3600
	r, err := New(Config{Probe: p, Report: func(bool, string) { t.Error("reported during the initial delay") },
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run kept waiting its initial delay after its context ended")
	}
	if n := app.hits.Load(); n != 0 {
		t.Errorf("%d checks after cancel during the initial delay", n)
	}
}

func TestNewRefusesAnInvalidProbe(t *testing.T) {
	report := func(bool, string) {}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Report: report}, "no probe"},
		{Config{Probe: &Probe{}, Report: report}, "one of httpGet, tcpSocket, exec or grpc is required"},
		{Config{Probe: &Probe{TCPSocket: &TCPSocket{Port: 80}}}, "no Report"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

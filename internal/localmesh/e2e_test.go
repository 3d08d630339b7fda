package localmesh_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/examples/demo"
	"github.com/trellis-mesh/trellis/internal/localmesh"
	"github.com/trellis-mesh/trellis/internal/testenv"
)

// The demo mesh, driven as a user would drive it: real control plane, real
// proxies on 127.0.1.N, the demo apps, requests through the ingress gateway,
// and config changes made by writing Istio YAML into the watched directory.
func TestLocalMeshFollowsIstioConfig(t *testing.T) {
	m := startDemoMesh(t)

	t.Run("DefaultConfigSendsAllTrafficToReviewsV1", func(t *testing.T) {
		counts := m.sendN(t, 500, nil)
		if counts["v1"] != 500 {
			t.Fatalf("want all 500 requests answered by reviews v1, got %v", counts)
		}
	})

	t.Run("WeightedSplitFollowsVirtualServiceWithin2s", func(t *testing.T) {
		written := time.Now()
		m.writeReviews(t, splitV1V3Routes)
		m.waitForVersion(t, "v3", nil, written, 2*time.Second)
		counts := m.sendN(t, 2000, nil)
		v1 := float64(counts["v1"]) / 2000 * 100
		if v1 < 87 || v1 > 93 || counts["v1"]+counts["v3"] != 2000 {
			t.Fatalf("want 90 ± 3 %% v1 and the rest v3 over 2000 requests, got %v (%.1f %% v1)", counts, v1)
		}
	})

	t.Run("EndUserJasonGoesToReviewsV2", func(t *testing.T) {
		written := time.Now()
		m.writeReviews(t, jasonToV2+splitV1V3Routes)
		jason := http.Header{"End-User": {"jason"}}
		m.waitForVersion(t, "v2", jason, written, 2*time.Second)
		if counts := m.sendN(t, 200, jason); counts["v2"] != 200 {
			t.Fatalf("want every request of end-user jason on v2, got %v", counts)
		}
		if counts := m.sendN(t, 200, nil); counts["v2"] != 0 {
			t.Fatalf("want no v2 for other users, got %v", counts)
		}
	})

	t.Run("InvalidVirtualServiceIsRejectedAndLastGoodConfigServes", func(t *testing.T) {
		// weights 90 + 20: the second route's weight line is where the
		// error points.
		bad := jasonToV2 + strings.Replace(splitV1V3Routes, "weight: 10", "weight: 20", 1)
		m.drainConfigErrors()
		m.writeReviews(t, bad)
		line := lineOf(t, bad, "weight: 20")
		want := fmt.Sprintf("reviews.yaml:%d: VirtualService default/reviews: spec.http[1].route[1].weight: weights must sum to 100, got 110", line)
		select {
		case err := <-m.configErrors:
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("config error:\n  got  %q\n  want %q", err.Error(), want)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("the invalid VirtualService was not reported within 2 s")
		}
		jason := http.Header{"End-User": {"jason"}}
		if counts := m.sendN(t, 100, jason); counts["v2"] != 100 {
			t.Fatalf("after a rejected change jason must still reach v2, got %v", counts)
		}
		if counts := m.sendN(t, 500, nil); counts["v2"] != 0 || counts["v3"] == 0 || counts["v1"] < 400 {
			t.Fatalf("after a rejected change traffic must still follow the 90/10 split, got %v", counts)
		}
	})

	t.Run("TwentyConfigChangesUnderLoadFailNoRequest", func(t *testing.T) {
		ctx, stop := context.WithCancel(context.Background())
		var sent, failed atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					sent.Add(1)
					if _, err := m.get(nil); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				}
			}()
		}
		for i := range 20 {
			cfg := splitV1V3Routes
			if i%2 == 0 {
				cfg = jasonToV2 + splitV1V3Routes
			}
			// Each change moves the split by a point, alternating with and
			// without the jason rule, so every write is a real change.
			m.writeReviews(t, strings.NewReplacer(
				"weight: 90", fmt.Sprintf("weight: %d", 90-i),
				"weight: 10", fmt.Sprintf("weight: %d", 10+i)).Replace(cfg))
			time.Sleep(150 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		stop()
		wg.Wait()
		if failed.Load() != 0 {
			t.Fatalf("%d of %d requests failed during 20 config changes; first: %v", failed.Load(), sent.Load(), firstErr.Load())
		}
		if sent.Load() < 200 {
			t.Fatalf("load too light to mean anything: %d requests", sent.Load())
		}
		t.Logf("%d requests, 0 failed, across 20 config changes", sent.Load())
	})

	t.Run("FaultAbortForJasonReachesTheFrontPage", func(t *testing.T) {
		// Istio's fault-injection task, on reviews: the productpage
		// sidecar's fault filter answers jason's reviews calls itself.
		written := time.Now()
		m.writeReviews(t, jasonAbort418+splitV1V3Routes)
		jason := http.Header{"End-User": {"jason"}}
		var err error
		for time.Since(written) < 2*time.Second {
			if _, err = m.get(jason); err != nil && strings.Contains(err.Error(), "fault filter abort") {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err == nil || !strings.Contains(err.Error(), "status 503") || !strings.Contains(err.Error(), "418") ||
			!strings.Contains(err.Error(), "fault filter abort") {
			t.Fatalf("within 2 s of the change, want jason's front page to fail with 503 naming the injected 418 abort; last: %v", err)
		}
		if counts := m.sendN(t, 200, nil); counts["v1"]+counts["v3"] != 200 {
			t.Fatalf("the fault is for jason only; others must keep the 90/10 split, got %v", counts)
		}
	})
}

const reviewsHeader = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts:
  - reviews
  http:
`

const splitV1V3Routes = `  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 90
    - destination:
        host: reviews
        subset: v3
      weight: 10
`

const jasonToV2 = `  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
`

const jasonAbort418 = `  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      abort:
        httpStatus: 418
        percentage:
          value: 100
    route:
    - destination:
        host: reviews
        subset: v2
`

type demoMesh struct {
	dir          string
	client       *http.Client
	configErrors chan error
}

func startDemoMesh(t *testing.T) *demoMesh {
	t.Helper()
	testenv.LockDemoAddresses(t)
	dir := t.TempDir()
	if err := demo.WriteConfig(dir); err != nil {
		t.Fatal(err)
	}
	m := &demoMesh{
		dir:          dir,
		client:       &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		configErrors: make(chan error, 16),
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	appsDone := make(chan error, 1)
	go func() { appsDone <- demo.RunApps(ctx, log) }()
	ready := make(chan localmesh.Mesh, 1)
	meshDone := make(chan error, 1)
	go func() {
		meshDone <- localmesh.Run(ctx, localmesh.Options{
			ConfigDir:  dir,
			XDSAddress: "127.0.0.1:0",
			Logger:     log,
			Ready:      func(mesh localmesh.Mesh) { ready <- mesh },
			OnConfigError: func(err error) {
				select {
				case m.configErrors <- err:
				default:
				}
			},
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-meshDone; err != nil {
			t.Errorf("mesh stopped with: %v", err)
		}
		if err := <-appsDone; err != nil {
			t.Errorf("demo apps stopped with: %v", err)
		}
		m.client.CloseIdleConnections()
	})
	select {
	case mesh := <-ready:
		if len(mesh.Proxies) != 6 {
			t.Fatalf("want 6 proxies (gateway + 5 sidecars), got %+v", mesh.Proxies)
		}
	case err := <-meshDone:
		t.Fatalf("mesh did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("mesh not ready within 60 s")
	}
	return m
}

// testWriter routes mesh logs into the test log, so failures show them.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (m *demoMesh) writeReviews(t *testing.T, routes string) {
	t.Helper()
	// Write then rename, as editors do, so the watcher never reads half a file.
	tmp := filepath.Join(m.dir, ".reviews.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(reviewsHeader+routes), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "reviews.yaml")); err != nil {
		t.Fatal(err)
	}
}

func (m *demoMesh) drainConfigErrors() {
	for {
		select {
		case <-m.configErrors:
		default:
			return
		}
	}
}

// get loads the front page through the ingress gateway and returns which
// reviews version answered.
func (m *demoMesh) get(h http.Header) (string, error) {
	req, err := http.NewRequest(http.MethodGet, demo.GatewayURL, nil)
	if err != nil {
		return "", err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	v := resp.Header.Get("X-Reviews-Version")
	if v == "" || !strings.Contains(string(body), "reviews-"+v) {
		return "", errors.New("front page does not say which reviews version answered")
	}
	return v, nil
}

// sendN sends n requests over 8 connections and counts answers by version;
// any failed request fails the test.
func (m *demoMesh) sendN(t *testing.T, n int, h http.Header) map[string]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	var firstErr error
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				v, err := m.get(h)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				counts[v]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("requests failed (%v): first error: %v", counts, firstErr)
	}
	return counts
}

// waitForVersion polls until some request is answered by version, and
// fails if that takes longer than within after the config was written.
func (m *demoMesh) waitForVersion(t *testing.T, version string, h http.Header, written time.Time, within time.Duration) {
	t.Helper()
	for time.Since(written) < within {
		if v, err := m.get(h); err == nil && v == version {
			t.Logf("config applied %v after the write", time.Since(written).Round(time.Millisecond))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no request reached reviews %s within %v of the config change", version, within)
}

func lineOf(t *testing.T, routes, needle string) int {
	t.Helper()
	text := reviewsHeader + routes
	i := strings.Index(text, needle)
	if i < 0 {
		t.Fatalf("%q not in the config", needle)
	}
	return strings.Count(text[:i], "\n") + 1
}

package uitest

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
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/trellis-mesh/trellis/examples/demo"
	"github.com/trellis-mesh/trellis/internal/localmesh"
	"github.com/trellis-mesh/trellis/internal/testenv"
	"github.com/trellis-mesh/trellis/internal/testenv/browser"
)

// The demo mesh as `trellis up` runs it (control plane with its console,
// proxies, demo apps), real traffic through the ingress gateway, and the
// console in Chromium: the live graph shows the traffic, and a canary
// weight changed in the service view is written to the VirtualService's
// file and moves real requests.
func TestDemoConsoleShowsLiveTrafficAndMovesACanary(t *testing.T) {
	d := startDemo(t)
	stopTraffic := d.backgroundTraffic(t)
	defer stopTraffic()
	b := browser.New(t, winW, winH)
	b.Do(30*time.Second, chromedp.Navigate(d.console+"/"))
	b.WaitFor(30*time.Second, `document.body.dataset.ready === "1"`, "the console's first render", graphData)

	t.Run("GraphShowsTheDemoWorkloads", func(t *testing.T) {
		b := b.For(t)
		want := []string{"istio-system/istio-ingressgateway", "default/productpage-v1", "default/reviews-v1",
			"default/reviews-v2", "default/reviews-v3", "default/ratings-v1"}
		b.WaitFor(30*time.Second, fmt.Sprintf(`((s) => %s.every(id => s.nodes.includes(id)))(trellisConsole.scene())`, jsList(want)),
			"every demo workload drawn", `JSON.stringify(trellisConsole.scene().nodes)`)
	})

	t.Run("EdgesCarryLiveTraffic", func(t *testing.T) {
		b := b.For(t)
		// Needs the proxies' istio_requests_total on :15020 (proxy
		// telemetry) scraped by the console: without them no edge has a rate.
		waitEdge(t, b, "istio-system/istio-ingressgateway", "default/productpage-v1")
		waitEdge(t, b, "default/productpage-v1", "default/reviews-v1")
		b.Screenshot("demo-live")
	})

	t.Run("CanaryWeightChangedInTheConsoleMovesTraffic", func(t *testing.T) {
		b := b.For(t)
		// The user's canary: 90 % v1, 10 % v3, as YAML in the config dir.
		d.writeReviews(t, splitV1V3(90, 10))
		b.Do(10*time.Second, chromedp.Navigate(d.console+"/#/services/default/reviews"))
		b.WaitFor(20*time.Second, `[...document.querySelectorAll('input.weight[data-vs="default/reviews"][data-http="0"]')].map(i => i.value).join(",") === "90,10"`,
			"the service view to show the 90/10 canary", `document.getElementById("service-view").innerText`)
		before := d.readReviews(t)

		setWeights(b, "default/reviews", 0, 30, 70)
		clickSave(b, "default/reviews", 0)
		b.WaitFor(10*time.Second, `document.getElementById("service-status").className === "ok"`, "the save to succeed",
			`document.getElementById("service-status").textContent`)
		b.Screenshot("demo-canary-saved")

		after := d.readReviews(t)
		if after == before || !strings.Contains(after, "weight: 30") || !strings.Contains(after, "weight: 70") || strings.Contains(after, "weight: 90") {
			t.Fatalf("reviews.yaml after saving 30/70 in the console:\n%s", after)
		}

		// The proxies follow the file: wait until v3 takes most requests
		// (under the old 10 % that is all but impossible), then count.
		deadline := time.Now().Add(15 * time.Second)
		for {
			c := d.sendN(t, 50)
			if c["v3"] >= 25 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("15 s after the save, 50 requests still split %v", c)
			}
		}
		const n = 600
		c := d.sendN(t, n)
		v1 := float64(c["v1"]) / n
		if c["v1"]+c["v3"] != n || v1 < 0.22 || v1 > 0.38 {
			t.Fatalf("after 30/70 in the console, want 30 ± 8 %% of %d requests on v1 and the rest on v3, got %v (%.1f %% v1)", n, c, 100*v1)
		}
		t.Logf("%d requests after the change: %v (%.1f %% v1)", n, c, 100*v1)
	})

	t.Run("CanaryEdgesAppearWithTraffic", func(t *testing.T) {
		b := b.For(t)
		// reviews v3 now takes traffic and calls ratings.
		waitEdge(t, b, "default/productpage-v1", "default/reviews-v3")
		waitEdge(t, b, "default/reviews-v3", "default/ratings-v1")
		b.Screenshot("demo-canary-edges")
	})

	t.Run("RejectedConfigIsListedInValidation", func(t *testing.T) {
		b := b.For(t)
		d.writeReviews(t, splitV1V3(30, 80))
		b.Do(10*time.Second, chromedp.Navigate(d.console+"/#/validation"))
		b.WaitFor(20*time.Second, `[...document.querySelectorAll("#validation li.validation-message.error")].some(li => li.textContent.includes("reviews.yaml:") && li.textContent.includes("VirtualService default/reviews"))`,
			"the rejected reviews.yaml listed with its file:line", `document.getElementById("validation").innerText`)
		b.Screenshot("demo-validation")
		d.writeReviews(t, splitV1V3(30, 70))
		b.WaitFor(20*time.Second, `document.querySelectorAll("#validation li.validation-message.error").length === 0`,
			"the error to clear once the file is fixed", `document.getElementById("validation").innerText`)
	})

	t.Run("ProxyTableShowsEveryProxySynced", func(t *testing.T) {
		b := b.For(t)
		b.Do(10*time.Second, chromedp.Navigate(d.console+"/#/proxies"))
		b.WaitFor(20*time.Second, `document.querySelectorAll("#proxies tr.proxy-row").length === 6 && [...document.querySelectorAll("#proxies td.sync")].every(td => td.textContent === "SYNCED")`,
			"6 proxies, every xDS type SYNCED", `document.getElementById("proxies").innerText`)
	})
	b.NoPageErrors()
}

// waitEdge waits until the page draws source → target with a rate.
func waitEdge(t *testing.T, b *browser.Browser, source, target string) {
	t.Helper()
	b.WaitFor(45*time.Second,
		fmt.Sprintf(`trellisConsole.scene().edges.some(e => e.source === %s && e.target === %s && e.rps > 0)`, js(source), js(target)),
		fmt.Sprintf("an edge %s → %s with rps > 0 (from the proxies' istio_requests_total, scraped by the console)", source, target),
		`JSON.stringify(trellisConsole.scene().edges)`)
}

func jsList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = js(s)
	}
	return "[" + strings.Join(q, ",") + "]"
}

type demoMesh struct {
	dir     string
	console string // http://host:port
	client  *http.Client
}

func startDemo(t *testing.T) *demoMesh {
	t.Helper()
	testenv.LockDemoAddresses(t)
	dir := t.TempDir()
	if err := demo.WriteConfig(dir); err != nil {
		t.Fatal(err)
	}
	d := &demoMesh{dir: dir, client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelError}))
	ctx, cancel := context.WithCancel(context.Background())
	appsDone := make(chan error, 1)
	go func() { appsDone <- demo.RunApps(ctx, log) }()
	ready := make(chan localmesh.Mesh, 1)
	meshDone := make(chan error, 1)
	go func() {
		meshDone <- localmesh.Run(ctx, localmesh.Options{
			ConfigDir:  dir,
			XDSAddress: "127.0.0.1:0",
			UIAddress:  "127.0.0.1:0",
			Logger:     log,
			Ready:      func(m localmesh.Mesh) { ready <- m },
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
		d.client.CloseIdleConnections()
	})
	select {
	case m := <-ready:
		if m.UIAddress == "" {
			t.Fatal("the local mesh started without a console")
		}
		d.console = "http://" + m.UIAddress
		t.Logf("console: %s", d.console)
	case err := <-meshDone:
		t.Fatalf("mesh did not start: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("mesh not ready within 90 s")
	}
	return d
}

// backgroundTraffic loads the front page through the gateway, about 20
// requests a second, until stopped (at the latest when the test ends).
func (d *demoMesh) backgroundTraffic(t *testing.T) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					_, _ = d.get() // errors show as error rates in the graph
				}
			}
		}()
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// get loads the front page and returns which reviews version answered.
func (d *demoMesh) get() (string, error) {
	resp, err := d.client.Get(demo.GatewayURL)
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
	if v == "" {
		return "", errors.New("the front page does not say which reviews version answered")
	}
	return v, nil
}

// sendN sends n requests over 8 connections and counts answers by
// version; a failed request fails the test.
func (d *demoMesh) sendN(t *testing.T, n int) map[string]int {
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
				v, err := d.get()
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

func splitV1V3(v1, v3 int) string {
	return fmt.Sprintf(`# The reviews canary (written by the test, edited in the console).
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: %d
    - destination:
        host: reviews
        subset: v3
      weight: %d
`, v1, v3)
}

func (d *demoMesh) writeReviews(t *testing.T, text string) {
	t.Helper()
	// Write then rename, as editors do, so the watcher never reads half a file.
	tmp := filepath.Join(d.dir, ".reviews.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(d.dir, "reviews.yaml")); err != nil {
		t.Fatal(err)
	}
}

func (d *demoMesh) readReviews(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.dir, "reviews.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// testLog routes the mesh's logs into the test log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

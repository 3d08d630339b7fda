package controlplane

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/common/expfmt"

	"github.com/trellis-mesh/trellis/internal/cpdebug"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

const reviewsNode = "sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local"

const reviewsRoute = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
  labels: {team: books}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
`

// startWithDebug runs Run with the debug server on an ephemeral port.
func startWithDebug(t *testing.T, dir string) Ready {
	t.Helper()
	r := startRun(t, Options{ConfigDir: dir, DebugAddress: "127.0.0.1:0"})
	if r.DebugAddr == nil {
		t.Fatal("Ready.DebugAddr is nil with a debug address set")
	}
	return r
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// scrape returns metric name → summed value of its series (counters and
// gauges; histograms by sample count), parsed with Prometheus's own parser.
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	_, body := get(t, base+"/metrics")
	fams, err := new(expfmt.TextParser).TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			switch {
			case m.Counter != nil:
				out[name] += m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[name] += m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[name] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within 5s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDebugServerShowsMetricsSyncConfigAndErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "services.yaml"), services)
	writeFile(t, filepath.Join(dir, "workloads.yaml"), workloads)
	writeFile(t, filepath.Join(dir, "routes.yaml"), reviewsRoute)
	r := startWithDebug(t, dir)
	base := "http://" + r.DebugAddr.String()

	pollUntil(t, "/ready answers 200 once config is applied", func() bool {
		code, _ := get(t, base+"/ready")
		return code == http.StatusOK
	})

	// Two proxies: one takes its clusters and ACKs them, one NACKs them.
	conn := adstest.Dial(t, r.XDSAddr.String())
	good := adstest.NewSotW(t, conn, adstest.Node(productpageNode, map[string]string{"app": "productpage", "version": "v1"}))
	good.Request(resourcev3.ClusterType)
	cds := good.Expect(resourcev3.ClusterType, 5*time.Second)
	good.ACK(cds)
	bad := adstest.NewSotW(t, conn, adstest.Node(reviewsNode, map[string]string{"app": "reviews", "version": "v1"}))
	bad.Request(resourcev3.ClusterType)
	rejected := bad.Expect(resourcev3.ClusterType, 5*time.Second)
	bad.NACK(rejected, "", "cluster outbound|9080||reviews.default.svc.cluster.local: unknown field")

	pollUntil(t, "metrics count both proxies and the NACK", func() bool {
		m := scrape(t, base)
		return m["pilot_xds"] == 2 && m["pilot_total_xds_rejects"] == 1
	})
	m := scrape(t, base)
	for name, want := range map[string]float64{
		"pilot_services":           2,
		"pilot_virt_services":      1,
		"galley_validation_passed": 1,
		"galley_validation_failed": 0,
		"trellis_config_errors":    0,
		"pilot_xds_cds_reject":     1,
	} {
		if m[name] != want {
			t.Errorf("%s = %v, want %v", name, m[name], want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := m[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	var sync []cpdebug.SyncStatus
	pollUntil(t, "syncz shows the ACK", func() bool {
		_, body := get(t, base+"/debug/syncz")
		if err := json.Unmarshal([]byte(body), &sync); err != nil {
			t.Fatalf("syncz: %v\n%s", err, body)
		}
		return len(sync) == 2 && sync[0].ClusterAcked != ""
	})
	// Sorted by node ID: productpage then reviews.
	if s := sync[0]; s.ProxyID != productpageNode || s.ClusterSent != cds.VersionInfo || s.ClusterAcked != cds.VersionInfo || s.ListenerSent != "" {
		t.Errorf("synced proxy = %+v", s)
	}
	if s := sync[1]; s.ProxyID != reviewsNode || s.ClusterSent != rejected.VersionInfo || s.ClusterAcked != "" ||
		s.LastNACK == nil || !strings.Contains(s.LastNACK.Message, "unknown field") {
		t.Errorf("rejecting proxy = %+v", s)
	}

	var cfg []cpdebug.Resource
	_, body := get(t, base+"/debug/configz")
	if err := json.Unmarshal([]byte(body), &cfg); err != nil {
		t.Fatalf("configz: %v\n%s", err, body)
	}
	var vs *cpdebug.Resource
	kinds := map[string]int{}
	for i := range cfg {
		kinds[cfg[i].Kind]++
		if cfg[i].Kind == "VirtualService" {
			vs = &cfg[i]
		}
	}
	if kinds["ServiceEntry"] != 2 || kinds["WorkloadEntry"] != 2 || vs == nil {
		t.Fatalf("configz kinds = %v", kinds)
	}
	if vs.APIVersion != "networking.istio.io/v1" || vs.Metadata.Name != "reviews" || vs.Metadata.Namespace != "default" ||
		vs.Metadata.Labels["team"] != "books" || !strings.Contains(string(vs.Spec), `"hosts":["reviews"]`) {
		t.Errorf("configz VirtualService = %+v spec %s", vs, vs.Spec)
	}

	// A bad file: reported on config_errors and in the metrics, while the
	// accepted config stays on configz.
	writeFile(t, filepath.Join(dir, "bad.yaml"), "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad, namespace: default}\nspec:\n  hosts: []\n")
	var errs cpdebug.ConfigErrors
	pollUntil(t, "config_errors reports the rejection", func() bool {
		_, body := get(t, base+"/debug/config_errors")
		if err := json.Unmarshal([]byte(body), &errs); err != nil {
			t.Fatalf("config_errors: %v\n%s", err, body)
		}
		return !errs.OK
	})
	if len(errs.Errors) == 0 || !strings.Contains(errs.Errors[0], "bad.yaml") || errs.RejectedAt == nil {
		t.Errorf("config_errors = %+v", errs)
	}
	m = scrape(t, base)
	if m["galley_validation_failed"] != 1 || m["trellis_config_errors"] != float64(len(errs.Errors)) {
		t.Errorf("after a rejection: galley_validation_failed %v, trellis_config_errors %v", m["galley_validation_failed"], m["trellis_config_errors"])
	}
	if _, body := get(t, base+"/debug/configz"); strings.Contains(body, `"bad"`) {
		t.Error("configz shows the rejected resource")
	}
}

func TestRunFailsWhenDebugAddressIsTaken(t *testing.T) {
	r := startWithDebug(t, t.TempDir())
	err := Run(context.Background(), Options{ConfigDir: t.TempDir(), XDSAddress: "127.0.0.1:0", DebugAddress: r.DebugAddr.String()})
	if err == nil || !strings.Contains(err.Error(), "debug listen on "+r.DebugAddr.String()) {
		t.Fatalf("err = %v, want a debug listen error naming the address", err)
	}
}

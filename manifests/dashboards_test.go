package manifests

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

// query is one PromQL expression of a dashboard, and where it is.
type query struct {
	where string // "file: panel title"
	expr  string
	// label is set for a template variable's label_values(expr, label).
	label string
}

// dashboardQueries returns every PromQL expression of every dashboard:
// panel targets (rows included) and template variable queries.
func dashboardQueries(t *testing.T) map[string][]query {
	t.Helper()
	files, err := fs.Glob(Dashboards, "grafana/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards embedded: %v", err)
	}
	out := map[string][]query{}
	uids := map[string]string{}
	for _, f := range files {
		raw, err := fs.ReadFile(Dashboards, f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID        string  `json:"uid"`
			Title      string  `json:"title"`
			Panels     []panel `json:"panels"`
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Type  string `json:"type"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: dashboard needs a uid and a title", f)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s and %s share uid %q", f, other, d.UID)
		}
		uids[d.UID] = f
		hasDatasource := false
		for _, v := range d.Templating.List {
			switch v.Type {
			case "datasource":
				hasDatasource = true
			case "query":
				q, _ := v.Query.(map[string]any)["query"].(string)
				m := labelValues.FindStringSubmatch(q)
				if m == nil {
					t.Errorf("%s: variable %s: query %q is not label_values(expr, label)", f, v.Name, q)
					continue
				}
				out[f] = append(out[f], query{where: f + ": variable " + v.Name, expr: m[1], label: m[2]})
			}
		}
		if !hasDatasource {
			t.Errorf("%s: no datasource variable; dashboards must not hard-code a Prometheus", f)
		}
		var walk func([]panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				if p.Type != "row" && len(p.Targets) == 0 {
					t.Errorf("%s: panel %q has no query", f, p.Title)
				}
				for _, tg := range p.Targets {
					out[f] = append(out[f], query{where: f + ": " + p.Title, expr: tg.Expr})
				}
				walk(p.Panels)
			}
		}
		walk(d.Panels)
	}
	return out
}

type panel struct {
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

var (
	labelValues = regexp.MustCompile(`^label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)
	stringLit   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	matcherSet  = regexp.MustCompile(`\{([^}]*)\}`)
	matcherName = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)`)
	grouping    = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	rangeSel    = regexp.MustCompile(`\[[^\]]*\]`)
	variable    = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)
	identifier  = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	number      = regexp.MustCompile(`\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b`)
)

// promqlKeywords are identifiers PromQL reserves that are not followed by
// "(" (operators and modifiers).
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
}

// parsePromQL returns the metric names and label names an expression uses.
// It is a scanner for the subset dashboards use, not a PromQL parser: it
// blanks strings, collects and removes label matchers, grouping lists and
// range selectors, and what remains that is an identifier not followed by
// "(" (a function or aggregation) nor a keyword is a metric name.
func parsePromQL(expr string) (metrics, labels []string) {
	s := stringLit.ReplaceAllString(expr, `""`)
	for _, m := range matcherSet.FindAllStringSubmatch(s, -1) {
		for _, l := range matcherName.FindAllStringSubmatch(m[1], -1) {
			labels = append(labels, l[1])
		}
	}
	s = matcherSet.ReplaceAllString(s, " ")
	for _, g := range grouping.FindAllStringSubmatch(s, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
	}
	s = grouping.ReplaceAllString(s, " ")
	s = rangeSel.ReplaceAllString(s, " ")
	s = variable.ReplaceAllString(s, " ")
	s = number.ReplaceAllString(s, " ")
	for _, loc := range identifier.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		if rest := strings.TrimLeft(s[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") || promqlKeywords[name] {
			continue
		}
		metrics = append(metrics, name)
	}
	return metrics, labels
}

func TestPromQLScannerFindsMetricsAndLabels(t *testing.T) {
	metrics, labels := parsePromQL(`histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination", destination_service=~"$service"}[$__rate_interval])) by (le, source_workload)) / on (x) group_left up or vector(0)`)
	if want := []string{"istio_request_duration_milliseconds_bucket", "up"}; !slices.Equal(metrics, want) {
		t.Errorf("metrics = %v, want %v", metrics, want)
	}
	if want := []string{"reporter", "destination_service", "le", "source_workload", "x"}; !slices.Equal(labels, want) {
		t.Errorf("labels = %v, want %v", labels, want)
	}
}

// exported is what a real control plane serves on /metrics: sample names,
// and label names per sample name.
type exported map[string]map[string]bool

// scrapeControlPlane starts a control plane, connects a proxy that rejects
// its clusters (so that per-proxy and NACK series exist too), and scrapes
// /metrics.
func scrapeControlPlane(t *testing.T) exported {
	t.Helper()
	dir := t.TempDir()
	svc := "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: reviews, namespace: default}\n" +
		"spec:\n  hosts: [reviews.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n" +
		"  ports: [{number: 9080, name: http, protocol: HTTP}]\n  endpoints: [{address: 127.0.1.3}]\n"
	if err := os.WriteFile(filepath.Join(dir, "services.yaml"), []byte(svc), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan controlplane.Ready, 1)
	done := make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, controlplane.Options{
			ConfigDir: dir, XDSAddress: "127.0.0.1:0", DebugAddress: "127.0.0.1:0",
			Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
			Ready:  func(r controlplane.Ready) { ready <- r },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
	})
	var r controlplane.Ready
	select {
	case r = <-ready:
	case err := <-done:
		t.Fatalf("control plane: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("control plane not ready")
	}
	c := adstest.NewSotW(t, adstest.Dial(t, r.XDSAddr.String()),
		adstest.Node("sidecar~127.0.1.2~productpage-v1.default~default.svc.cluster.local", nil))
	c.Request(resourcev3.ClusterType)
	c.NACK(c.Expect(resourcev3.ClusterType, 10*time.Second), "", "rejected by the test")

	base := "http://" + r.DebugAddr.String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := scrapeOnce(t, base+"/metrics")
		if got["pilot_total_xds_rejects"] != nil && got["pilot_xds"] != nil {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatal("the control plane's /metrics never showed the proxy and its NACK")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func scrapeOnce(t *testing.T, url string) exported {
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
	fams, err := new(expfmt.TextParser).TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	out := exported{}
	add := func(name string, m *dto.Metric, extra ...string) {
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for _, l := range m.GetLabel() {
			out[name][l.GetName()] = true
		}
		for _, l := range extra {
			out[name][l] = true
		}
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				add(name+"_bucket", m, "le")
				add(name+"_sum", m)
				add(name+"_count", m)
			case dto.MetricType_SUMMARY:
				add(name, m, "quantile")
				add(name+"_sum", m)
				add(name+"_count", m)
			default:
				add(name, m)
			}
		}
	}
	return out
}

// targetLabels are added by Prometheus to every series it scrapes.
var targetLabels = []string{"instance", "job"}

// TestDashboardsUseOnlyExportedMetricsAndLabels checks every metric and
// label name in every dashboard query: istio_* against the proxy contract
// (ProxyMetrics and their Labels), everything else against what a real control
// plane exports on /metrics.
func TestDashboardsUseOnlyExportedMetricsAndLabels(t *testing.T) {
	queries := dashboardQueries(t)
	for _, want := range []string{"mesh", "service", "workload", "control-plane"} {
		if _, ok := queries["grafana/"+want+"-dashboard.json"]; !ok {
			t.Errorf("no %s dashboard", want)
		}
	}
	proxy := map[string][]string{} // sample name → its labels
	for _, m := range ProxyMetrics {
		for _, n := range m.SampleNames() {
			proxy[n] = append([]string{"le"}, m.Labels()...)
		}
	}
	cp := scrapeControlPlane(t)

	used := 0
	for _, qs := range queries {
		for _, q := range qs {
			metrics, labels := parsePromQL(q.expr)
			if q.label != "" {
				labels = append(labels, q.label)
			}
			if len(metrics) == 0 {
				t.Errorf("%s: no metric in %q", q.where, q.expr)
			}
			allowed := slices.Clone(targetLabels)
			for _, m := range metrics {
				used++
				switch {
				case strings.HasPrefix(m, "istio_"):
					if proxy[m] == nil {
						t.Errorf("%s: %s is not a proxy metric of the contract (ProxyMetrics)", q.where, m)
					}
					allowed = append(allowed, proxy[m]...)
				case cp[m] != nil:
					for l := range cp[m] {
						allowed = append(allowed, l)
					}
				default:
					t.Errorf("%s: %s is not exported by the control plane", q.where, m)
				}
			}
			for _, l := range labels {
				if !slices.Contains(allowed, l) {
					t.Errorf("%s: label %q is not on %v", q.where, l, metrics)
				}
			}
		}
	}
	t.Logf("%d dashboards, %d metric references checked", len(queries), used)
}

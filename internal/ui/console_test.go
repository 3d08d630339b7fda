package ui_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/trellis-mesh/trellis/examples/demo"
	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
	"github.com/trellis-mesh/trellis/internal/ui"
)

// reviewsYAML is the demo's reviews routing with a canary split, comments
// and a second document: what the weight write-back must keep intact.
const reviewsYAML = `# Reviews routing. Jason sees v2; everyone else a canary of v3.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews   # the service's own name
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 90 # stable
    - destination:
        host: reviews
        subset: v3
      weight: 10 # canary
---
# Ratings: one destination, no weight written.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
  namespace: default
spec:
  hosts: [ratings]
  http:
  - route:
    - destination:
        host: ratings
        subset: v1
`

type console struct {
	url       string
	dir       string
	xds       string
	configErr chan error
}

// startConsole runs a real control plane with its console on the demo's
// config (reviews.yaml replaced by reviewsYAML) until the test ends.
func startConsole(t *testing.T) *console {
	t.Helper()
	dir := t.TempDir()
	if err := demo.WriteConfig(dir); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "reviews.yaml"), reviewsYAML)

	c := &console{dir: dir, configErr: make(chan error, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan controlplane.Ready, 1)
	done := make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, controlplane.Options{
			ConfigDir:  dir,
			XDSAddress: "127.0.0.1:0",
			UIAddress:  "127.0.0.1:0",
			Logger:     slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
			Ready:      func(r controlplane.Ready) { ready <- r },
			OnConfigError: func(err error) {
				select {
				case c.configErr <- err:
				default:
				}
			},
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("control plane: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("control plane did not stop within 10 s")
		}
	})
	select {
	case r := <-ready:
		if r.UIAddr == nil {
			t.Fatal("Ready has no console address though UIAddress was set")
		}
		c.url, c.xds = "http://"+r.UIAddr.String(), r.XDSAddr.String()
	case err := <-done:
		t.Fatalf("control plane: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("control plane not ready within 10 s")
	}
	// The first config is applied just after Ready.
	eventually(t, 10*time.Second, "the console shows the demo's services", func() bool {
		var services []ui.Service
		getJSON(t, c.url+"/api/services", &services)
		return len(services) > 0
	})
	return c
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestConsoleServicesShowTheConfig(t *testing.T) {
	c := startConsole(t)

	var services []ui.Service
	getJSON(t, c.url+"/api/services", &services)
	var names []string
	for _, s := range services {
		names = append(names, s.Namespace+"/"+s.Name)
	}
	if want := []string{"default/productpage", "default/ratings", "default/reviews"}; !slices.Equal(names, want) {
		t.Fatalf("services: got %v, want %v", names, want)
	}
	reviews := services[2]
	if reviews.Host != "reviews.default.svc.cluster.local" || len(reviews.Ports) != 1 || reviews.Ports[0] != (ui.ServicePort{Number: 9080, Name: "http", Protocol: "HTTP"}) {
		t.Errorf("reviews: host %q ports %+v", reviews.Host, reviews.Ports)
	}
	if want := []string{"default/reviews-v1", "default/reviews-v2", "default/reviews-v3"}; !slices.Equal(reviews.Workloads, want) {
		t.Errorf("reviews workloads: got %v, want %v", reviews.Workloads, want)
	}

	var view ui.ServiceView
	getJSON(t, c.url+"/api/services/default/reviews", &view)
	if len(view.VirtualServices) != 1 {
		t.Fatalf("reviews' virtual services: %+v", view.VirtualServices)
	}
	vs := view.VirtualServices[0]
	if vs.Name != "reviews" || !vs.Editable || vs.Source != filepath.Join(c.dir, "reviews.yaml")+":2" {
		t.Errorf("virtual service: name %q editable %v source %q", vs.Name, vs.Editable, vs.Source)
	}
	if len(vs.HTTP) != 2 {
		t.Fatalf("http routes: %+v", vs.HTTP)
	}
	if vs.HTTP[0].Match != "headers end-user exact jason" || len(vs.HTTP[0].Route) != 1 || vs.HTTP[0].Route[0].Weight != 100 || vs.HTTP[0].Route[0].Subset != "v2" {
		t.Errorf("http[0]: %+v (want jason's match, v2 with Istio's default weight 100)", vs.HTTP[0])
	}
	if vs.HTTP[1].Match != "" || len(vs.HTTP[1].Route) != 2 || vs.HTTP[1].Route[0].Weight != 90 || vs.HTTP[1].Route[1].Weight != 10 || vs.HTTP[1].Route[1].Subset != "v3" {
		t.Errorf("http[1]: %+v (want a catch-all 90/10 over v1 and v3)", vs.HTTP[1])
	}
	if len(view.DestinationRules) != 1 || len(view.DestinationRules[0].Subsets) != 3 || view.DestinationRules[0].Subsets[2].Labels["version"] != "v3" {
		t.Errorf("destination rules: %+v", view.DestinationRules)
	}

	resp, err := http.Get(c.url + "/api/services/default/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown service: status %d, want 404", resp.StatusCode)
	}

	var g ui.Graph
	getJSON(t, c.url+"/api/graph", &g)
	var ids []string
	for _, n := range g.Nodes {
		ids = append(ids, n.ID)
	}
	want := []string{"default/productpage-v1", "default/ratings-v1", "default/reviews-v1", "default/reviews-v2", "default/reviews-v3", "istio-system/istio-ingressgateway"}
	if !slices.Equal(ids, want) {
		t.Errorf("graph nodes: got %v, want every workload %v", ids, want)
	}
	if g.WindowSeconds != 30 || g.Edges == nil {
		t.Errorf("graph: window %v edges %v", g.WindowSeconds, g.Edges)
	}
}

// reviewsWeights is what productpage's proxy is told: the weight of each
// reviews subset cluster in the catch-all route.
func reviewsWeights(t *testing.T, rds []*routev3.RouteConfiguration) map[string]uint32 {
	out := map[string]uint32{}
	for _, rc := range rds {
		for _, vh := range rc.GetVirtualHosts() {
			if !slices.Contains(vh.GetDomains(), "reviews.default.svc.cluster.local:9080") {
				continue
			}
			for _, r := range vh.GetRoutes() {
				if r.GetMatch().GetHeaders() != nil {
					continue // jason's route
				}
				for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
					out[wc.GetName()] = wc.GetWeight().GetValue()
				}
			}
		}
	}
	return out
}

func routeConfigs(t *testing.T, c *adstest.SotW, within time.Duration) ([]*routev3.RouteConfiguration, string) {
	t.Helper()
	resp := c.Expect(resourcev3.RouteType, within)
	var out []*routev3.RouteConfiguration
	for _, a := range resp.GetResources() {
		rc := &routev3.RouteConfiguration{}
		if err := a.UnmarshalTo(rc); err != nil {
			t.Fatal(err)
		}
		out = append(out, rc)
	}
	c.ACK(resp, "15001")
	return out, resp.GetVersionInfo()
}

const (
	productpageNode = "sidecar~127.0.1.2~productpage-v1.default~default.svc.cluster.local"
	v1Cluster       = "outbound|9080|v1|reviews.default.svc.cluster.local"
	v3Cluster       = "outbound|9080|v3|reviews.default.svc.cluster.local"
)

func TestConsoleWeightChangeIsWrittenKeepingTheFileAndApplied(t *testing.T) {
	c := startConsole(t)
	ads := adstest.NewSotW(t, adstest.Dial(t, c.xds),
		adstest.Node(productpageNode, map[string]string{"app": "productpage", "version": "v1"}))
	ads.Request(resourcev3.RouteType, "15001")
	rds, _ := routeConfigs(t, ads, 10*time.Second)
	if got := reviewsWeights(t, rds); got[v1Cluster] != 90 || got[v3Cluster] != 10 {
		t.Fatalf("weights before the change: %v", got)
	}

	code, body := put(t, c.url+"/api/virtualservices/default/reviews/http/1/weights", `{"weights": [40, 60]}`)
	if code != http.StatusOK {
		t.Fatalf("PUT weights: %d %s", code, body)
	}
	if !strings.Contains(body, `"subset":"v1","port":0,"weight":40`) || !strings.Contains(body, `"subset":"v3","port":0,"weight":60`) {
		t.Errorf("PUT answer does not show the new weights: %s", body)
	}
	data, err := os.ReadFile(filepath.Join(c.dir, "reviews.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(strings.Replace(reviewsYAML, "weight: 90 # stable", "weight: 40 # stable", 1), "weight: 10 # canary", "weight: 60 # canary", 1)
	if string(data) != want {
		t.Errorf("reviews.yaml after the change:\n%s\nwant only the two weights changed:\n%s", data, want)
	}

	// The control plane's watcher applies the file: the proxy is told.
	deadline := time.Now().Add(10 * time.Second)
	for {
		rds, _ = routeConfigs(t, ads, time.Until(deadline))
		if got := reviewsWeights(t, rds); got[v1Cluster] == 40 && got[v3Cluster] == 60 {
			break
		}
	}

	// A destination without a weight gets one, on a line of its own.
	code, body = put(t, c.url+"/api/virtualservices/default/ratings/http/0/weights", `{"weights": [100]}`)
	if code != http.StatusOK {
		t.Fatalf("PUT ratings weights: %d %s", code, body)
	}
	data, _ = os.ReadFile(filepath.Join(c.dir, "reviews.yaml"))
	if !strings.HasSuffix(string(data), "        host: ratings\n        subset: v1\n      weight: 100\n") {
		t.Errorf("ratings' weight not added after its destination:\n%s", data)
	}
}

func TestConsoleRefusesBadWeightsAndLeavesTheFileAlone(t *testing.T) {
	c := startConsole(t)
	path := filepath.Join(c.dir, "reviews.yaml")
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	url := c.url + "/api/virtualservices/default/reviews/http/1/weights"
	for _, tc := range []struct {
		body     string
		code     int
		contains string
	}{
		{`{"weights": [100]}`, http.StatusBadRequest, "1 weights for spec.http[1], which has 2 destinations"},
		{`{"weights": [110, -10]}`, http.StatusBadRequest, "weights[1]: -10"},
		{`{"weights": "half"}`, http.StatusBadRequest, "body"},
		{`{"weights": [50, 40]}`, http.StatusUnprocessableEntity, "reviews.yaml"},
	} {
		code, body := put(t, url, tc.body)
		if code != tc.code || !strings.Contains(body, tc.contains) || !strings.HasPrefix(body, `{"error":`) {
			t.Errorf("PUT %s: got %d %s, want %d with an error naming %q", tc.body, code, body, tc.code, tc.contains)
		}
	}
	code, body := put(t, c.url+"/api/virtualservices/default/reviews/http/7/weights", `{"weights": [100]}`)
	if code != http.StatusNotFound {
		t.Errorf("PUT to http[7]: got %d %s, want 404", code, body)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if string(data) != reviewsYAML || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("reviews.yaml changed by refused PUTs:\n%s", data)
	}
	entries, _ := os.ReadDir(c.dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left a temporary file behind: %s", e.Name())
		}
	}
}

func TestConsoleValidationReportsABrokenFileUntilFixed(t *testing.T) {
	c := startConsole(t)
	var v ui.Validation
	getJSON(t, c.url+"/api/validation", &v)
	if !v.OK {
		t.Fatalf("the demo config is not valid: %+v", v)
	}

	bad := filepath.Join(c.dir, "bad.yaml")
	writeFile(t, bad, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - timeout: soon\n    route:\n    - destination: {host: reviews}\n")
	eventually(t, 10*time.Second, "the broken file is reported", func() bool {
		getJSON(t, c.url+"/api/validation", &v)
		return !v.OK
	})
	var found *ui.ValidationMessage
	for i, m := range v.Messages {
		if m.Level == "error" && strings.HasPrefix(m.Source, bad) {
			found = &v.Messages[i]
		}
	}
	if found == nil {
		t.Fatalf("no error names %s: %+v", bad, v.Messages)
	}
	if found.Resource != "VirtualService default/bad" || found.Field != "spec.http[0].timeout" || found.Reason == "" || !strings.HasPrefix(found.Text, found.Source+": VirtualService default/bad: spec.http[0].timeout: ") {
		t.Errorf("message: %+v", *found)
	}
	// The last good config keeps serving, and so does the console.
	var services []ui.Service
	getJSON(t, c.url+"/api/services", &services)
	if len(services) != 3 {
		t.Errorf("services while the config is rejected: %d, want the last good 3", len(services))
	}

	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "fixing the file clears the errors", func() bool {
		getJSON(t, c.url+"/api/validation", &v)
		return v.OK
	})

	// A kind Trellis ignores is a warning; the config stays valid.
	peer := filepath.Join(c.dir, "peer.yaml")
	writeFile(t, peer, "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: strict, namespace: default}\nspec: {}\n")
	eventually(t, 10*time.Second, "the ignored kind is a warning", func() bool {
		getJSON(t, c.url+"/api/validation", &v)
		return len(v.Messages) == 1
	})
	if m := v.Messages[0]; !v.OK || m.Level != "warning" || m.Source != peer+":1" || !strings.Contains(m.Text, "EnvoyFilter default/strict") {
		t.Errorf("validation with an ignored kind: ok %v, %+v", v.OK, m)
	}
}

func TestConsoleProxiesShowSyncState(t *testing.T) {
	c := startConsole(t)
	ads := adstest.NewSotW(t, adstest.Dial(t, c.xds),
		adstest.Node(productpageNode, map[string]string{"app": "productpage", "version": "v1"}))
	ads.Request(resourcev3.ClusterType)
	cds := ads.Expect(resourcev3.ClusterType, 10*time.Second)
	ads.ACK(cds)

	var proxies []ui.Proxy
	eventually(t, 10*time.Second, "the proxy's CDS shows SYNCED", func() bool {
		getJSON(t, c.url+"/api/proxies", &proxies)
		return len(proxies) == 1 && proxies[0].Types["CDS"].Status == "SYNCED"
	})
	p := proxies[0]
	if p.ID != productpageNode || p.Name != "productpage-v1" || p.Namespace != "default" || !p.Connected || p.LastNack != nil {
		t.Errorf("proxy: %+v", p)
	}
	if _, err := time.Parse(time.RFC3339, p.ConnectedAt); err != nil {
		t.Errorf("connectedAt %q: %v", p.ConnectedAt, err)
	}
	if p.Types["CDS"].Sent != cds.GetVersionInfo() || p.Types["CDS"].Acked != cds.GetVersionInfo() {
		t.Errorf("CDS: %+v, want sent and acked %s", p.Types["CDS"], cds.GetVersionInfo())
	}
	if lds := p.Types["LDS"]; lds.Status != "NOT SENT" {
		t.Errorf("LDS never requested: %+v, want NOT SENT", lds)
	}

	ads.Request(resourcev3.ListenerType)
	lds := ads.Expect(resourcev3.ListenerType, 10*time.Second)
	ads.NACK(lds, "", "listener rejected by the test")
	eventually(t, 10*time.Second, "the NACK is shown", func() bool {
		getJSON(t, c.url+"/api/proxies", &proxies)
		return len(proxies) == 1 && proxies[0].LastNack != nil
	})
	if n := proxies[0].LastNack; n.Type != "LDS" || !strings.Contains(n.Message, "rejected by the test") {
		t.Errorf("lastNack: %+v", n)
	}
	if st := proxies[0].Types["LDS"].Status; st != "STALE" {
		t.Errorf("LDS after a NACK: %s, want STALE", st)
	}
}

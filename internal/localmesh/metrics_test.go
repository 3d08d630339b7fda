package localmesh_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/trellis-mesh/trellis/internal/localmesh"
	"github.com/trellis-mesh/trellis/internal/testenv"
	"github.com/trellis-mesh/trellis/manifests"
)

// Two workloads on their own addresses: client-v1 calls server-v1 through both sidecars. The
// VirtualService aborts /fault with a fault (FI).
const metricsMeshConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: default}
spec:
  hosts: [server.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: server}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server-v1, namespace: default}
spec:
  address: 127.0.1.91
  labels: {app: server, version: v1}
  serviceAccount: server-sa
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: server-v1, namespace: default}
spec:
  workloadSelector: {labels: {app: server}}
  ingress:
  - port: {number: 8000, protocol: HTTP, name: http}
    defaultEndpoint: BACKEND
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-v1, namespace: default}
spec:
  address: 127.0.1.92
  labels: {app: client, version: v1}
  serviceAccount: client-sa
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: server, namespace: default}
spec:
  hosts: [server.default.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /fault}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: server.default.svc.cluster.local}}]
  - route: [{destination: {host: server.default.svc.cluster.local}}]
`

// Istio's standard metrics, read from both proxies' 15020 as Prometheus would: every request is
// counted once on each side that saw it, with the full label set, and the metadata exchange
// headers that carried the identities never reach the app or the client.
func TestStandardMetricsCountEveryRequestOnBothSidesWithIstioLabels(t *testing.T) {
	testenv.LockDemoAddresses(t)
	var mu sync.Mutex
	var leaked []string
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-envoy-peer-metadata") {
				mu.Lock()
				leaked = append(leaked, k)
				mu.Unlock()
			}
		}
		if r.URL.Path == "/fail" {
			http.Error(w, "backend failure", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok\n")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	t.Cleanup(func() { backend.Close() })

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "metrics.yaml"), []byte(strings.Replace(metricsMeshConfig, "BACKEND", ln.Addr().String(), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan localmesh.Mesh, 1)
	done := make(chan error, 1)
	go func() {
		done <- localmesh.Run(ctx, localmesh.Options{
			ConfigDir:  dir,
			XDSAddress: "127.0.0.1:0",
			Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
			Ready:      func(m localmesh.Mesh) { ready <- m },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mesh: %v", err)
		}
	})
	select {
	case m := <-ready:
		var status []string
		for _, p := range m.Proxies {
			status = append(status, p.StatusAddress)
		}
		if want := []string{"127.0.1.91:15020", "127.0.1.92:15020"}; !slices.Equal(status, want) {
			t.Fatalf("status addresses %v, want %v", status, want)
		}
	case err := <-done:
		t.Fatalf("mesh did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("mesh not ready in 60 s")
	}

	proxyURL, _ := url.Parse("http://127.0.1.92:15001")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	defer client.CloseIdleConnections()
	send := func(target string, n, wantCode int) {
		t.Helper()
		for range n {
			resp, err := client.Get(target)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != wantCode {
				t.Fatalf("GET %s: status %d, want %d", target, resp.StatusCode, wantCode)
			}
			for k := range resp.Header {
				if strings.HasPrefix(strings.ToLower(k), "x-envoy-peer-metadata") {
					t.Errorf("GET %s: the client got the exchange header %s", target, k)
				}
			}
		}
	}
	send("http://server:8000/ok", 5, 200)
	send("http://server:8000/fail", 3, 500)
	send("http://server:8000/fault", 2, 503)
	send("http://nosuch:8000/", 1, 404)

	client1 := map[string]string{
		"source_workload": "client-v1", "source_canonical_service": "client", "source_canonical_revision": "v1",
		"source_workload_namespace": "default", "source_principal": "unknown", "source_app": "client",
		"source_version": "v1", "source_cluster": "unknown",
	}
	server1 := map[string]string{
		"destination_workload": "server-v1", "destination_workload_namespace": "default",
		"destination_principal": "unknown", "destination_app": "server", "destination_version": "v1",
		"destination_service": "server.default.svc.cluster.local", "destination_service_name": "server",
		"destination_service_namespace": "default", "destination_canonical_service": "server",
		"destination_canonical_revision": "v1", "destination_cluster": "unknown",
	}
	unknownDest := map[string]string{
		"destination_workload": "unknown", "destination_workload_namespace": "unknown",
		"destination_principal": "unknown", "destination_app": "unknown", "destination_version": "unknown",
		"destination_canonical_service": "unknown", "destination_canonical_revision": "unknown", "destination_cluster": "unknown",
	}
	serverService := map[string]string{"destination_service": "server.default.svc.cluster.local",
		"destination_service_name": "server", "destination_service_namespace": "default"}
	noService := map[string]string{"destination_service": "unknown", "destination_service_name": "unknown", "destination_service_namespace": "unknown"}
	request := func(reporter, code, flags, security string) map[string]string {
		return map[string]string{"reporter": reporter, "request_protocol": "http", "response_code": code,
			"grpc_response_status": "", "response_flags": flags, "connection_security_policy": security}
	}
	wantClient := []wantSeries{
		{merge(request("source", "200", "-", "unknown"), client1, server1), 5},
		{merge(request("source", "500", "-", "unknown"), client1, server1), 3},
		{merge(request("source", "503", "FI", "unknown"), client1, unknownDest, serverService), 2},
		{merge(request("source", "404", "NR", "unknown"), client1, unknownDest, noService), 1},
	}
	// The local mesh runs Istio's defaults, PERMISSIVE with auto mTLS: the
	// server side sees both proxies' certificates, the client side (as in
	// Istio) does not report a security policy.
	mtlsPeers := map[string]string{
		"source_principal":      "spiffe://cluster.local/ns/default/sa/client-sa",
		"destination_principal": "spiffe://cluster.local/ns/default/sa/server-sa",
	}
	wantServer := []wantSeries{
		{merge(request("destination", "200", "-", "mutual_tls"), client1, server1, mtlsPeers), 5},
		{merge(request("destination", "500", "-", "mutual_tls"), client1, server1, mtlsPeers), 3},
	}
	for _, side := range []struct {
		name, addr string
		want       []wantSeries
	}{{"client", "127.0.1.92:15020", wantClient}, {"server", "127.0.1.91:15020", wantServer}} {
		var got map[string]*dto.MetricFamily
		deadline := time.Now().Add(10 * time.Second)
		for {
			got = scrape(t, side.addr)
			if total(got["istio_requests_total"]) == sum(side.want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		reqs := got["istio_requests_total"]
		if reqs.GetType() != dto.MetricType_COUNTER {
			t.Fatalf("%s: istio_requests_total is %v, want a counter", side.name, reqs.GetType())
		}
		if len(reqs.GetMetric()) != len(side.want) {
			t.Errorf("%s: %d istio_requests_total series, want %d:\n%s", side.name, len(reqs.GetMetric()), len(side.want), describe(reqs))
		}
		for _, w := range side.want {
			m := findSeries(reqs, w.labels)
			if m == nil {
				t.Errorf("%s: no istio_requests_total series with labels\n  %v\nhave:\n%s", side.name, w.labels, describe(reqs))
				continue
			}
			if v := m.GetCounter().GetValue(); v != w.count {
				t.Errorf("%s: istio_requests_total{code=%s,flags=%s} = %v, want %v", side.name, w.labels["response_code"], w.labels["response_flags"], v, w.count)
			}
			for _, h := range []string{"istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"} {
				hm := findSeries(got[h], w.labels)
				if hm == nil || hm.GetHistogram().GetSampleCount() != uint64(w.count) {
					t.Errorf("%s: %s{code=%s} has %d samples, want %v", side.name, h, w.labels["response_code"], hm.GetHistogram().GetSampleCount(), w.count)
				}
			}
		}
		// The Grafana dashboards (manifests/) query these families by Istio's labels.
		for _, p := range manifests.ProxyContractViolations(got, func(m manifests.ProxyMetric) bool {
			return !strings.HasPrefix(m.Name, "istio_tcp_")
		}) {
			t.Errorf("%s: %s", side.name, p)
		}
		// The Envoy stats are merged in, as on Istio's 15020.
		if _, ok := got["envoy_server_live"]; !ok && len(got) < 5 {
			t.Errorf("%s: no Envoy stats beside the Istio metrics", side.name)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(leaked) > 0 {
		t.Errorf("the app received the metadata exchange headers %v", leaked)
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p expfmt.TextParser
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s/stats/prometheus does not parse: %v", addr, err)
	}
	return mfs
}

func total(mf *dto.MetricFamily) float64 {
	var n float64
	for _, m := range mf.GetMetric() {
		n += m.GetCounter().GetValue()
	}
	return n
}

type wantSeries struct {
	labels map[string]string
	count  float64
}

func sum(ws []wantSeries) float64 {
	var n float64
	for _, w := range ws {
		n += w.count
	}
	return n
}

// findSeries is the series of mf whose label set is exactly labels.
func findSeries(mf *dto.MetricFamily, labels map[string]string) *dto.Metric {
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			if l.GetName() != "le" {
				got[l.GetName()] = l.GetValue()
			}
		}
		if maps.Equal(got, labels) {
			return m
		}
	}
	return nil
}

func describe(mf *dto.MetricFamily) string {
	var b strings.Builder
	for _, m := range mf.GetMetric() {
		fmt.Fprintf(&b, "  %v %v\n", m.GetLabel(), m.GetCounter().GetValue())
	}
	return b.String()
}

package controlplane

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

// Namespaces a and c opt in to auto-scoping; c has its own Sidecar; b does
// not opt in. d's service has a VIP, which is all a passthrough report names.
const autoScopeMesh = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: a}
spec:
  hosts: [svc.a.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: svc-a}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: b}
spec:
  hosts: [svc.b.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: svc-b}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: c}
spec:
  hosts: [svc.c.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: svc-c}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: d}
spec:
  hosts: [svc.d.svc.cluster.local]
  addresses: [240.0.0.9]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: tcp, protocol: TCP}]
  endpoints: [{address: 127.0.1.6}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: telemetry, namespace: istio-system}
spec:
  hosts: [telemetry.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.1.7}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: c}
spec:
  egress:
  - hosts: ["./*", "b/*"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-a-1, namespace: a}
spec: {address: 127.0.1.2, labels: {app: svc-a}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-b-1, namespace: b}
spec: {address: 127.0.1.3, labels: {app: svc-b}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-c-1, namespace: c}
spec: {address: 127.0.1.5, labels: {app: svc-c}}
`

const (
	clusterA    = "outbound|9080||svc.a.svc.cluster.local"
	clusterB    = "outbound|9080||svc.b.svc.cluster.local"
	clusterC    = "outbound|9080||svc.c.svc.cluster.local"
	clusterD    = "outbound|9080||svc.d.svc.cluster.local"
	clusterRoot = "outbound|9080||telemetry.istio-system.svc.cluster.local"
)

// serveProxyMetrics serves, on 127.0.1.2 (svc-a-1's address), what a
// proxy's /stats/prometheus serves: once calling is set, an outbound
// istio_requests_total to svc.b and one through the passthrough to d's VIP, each counter growing on every scrape.
func serveProxyMetrics(t *testing.T, calling *atomic.Bool) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.1.2:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		if !calling.Load() {
			return
		}
		v := n.Add(5)
		src := `reporter="source",source_workload="svc-a",source_workload_namespace="a",source_app="svc-a",source_version="unknown",source_principal="unknown",connection_security_policy="unknown",response_flags="-"`
		fmt.Fprintf(w, "# TYPE istio_requests_total counter\n")
		fmt.Fprintf(w, "istio_requests_total{%s,destination_workload=\"svc-b\",destination_workload_namespace=\"b\",destination_service=\"svc.b.svc.cluster.local\",destination_service_name=\"svc\",destination_service_namespace=\"b\",request_protocol=\"http\",response_code=\"200\"} %d\n", src, v)
		// An HTTP request that left through the passthrough: Istio (and the
		// proxy) name the destination by its Host header, here d's VIP.
		fmt.Fprintf(w, "istio_requests_total{%s,destination_workload=\"unknown\",destination_workload_namespace=\"unknown\",destination_service=\"240.0.0.9:9080\",destination_service_name=\"PassthroughCluster\",destination_service_namespace=\"unknown\",request_protocol=\"http\",response_code=\"200\"} %d\n", src, v)
	})}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().(*net.TCPAddr).Port
}

// redirectNode is a REDIRECT-mode sidecar's node: the mode automatic
// scoping applies to.
func redirectNode(id, app string) *corev3.Node {
	n := adstest.Node(id, map[string]string{"app": app})
	n.Metadata.Fields["INTERCEPTION_MODE"] = structpb.NewStringValue("REDIRECT")
	return n
}

func startAutoScoped(t *testing.T, dir string, port int) Ready {
	t.Helper()
	return startRun(t, Options{
		ConfigDir: dir, DebugAddress: "127.0.0.1:0",
		OnConfigError: func(err error) { t.Errorf("config error: %v", err) },
		AutoScope:     []string{"a", "c"}, AutoScopeMetricsPort: port, AutoScopeInterval: 200 * time.Millisecond,
	})
}

func TestAutoScopeNarrowsToObservedDependenciesAndGrows(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "autoscope.yaml"), autoScopeMesh)
	var calling atomic.Bool
	ready := startAutoScoped(t, dir, serveProxyMetrics(t, &calling))
	addr := ready.XDSAddr.String()

	a := adstest.NewSotW(t, adstest.Dial(t, addr), redirectNode("sidecar~127.0.1.2~svc-a-1.a~a.svc.cluster.local", "svc-a"))
	b := adstest.NewSotW(t, adstest.Dial(t, addr), redirectNode("sidecar~127.0.1.3~svc-b-1.b~b.svc.cluster.local", "svc-b"))
	c := adstest.NewSotW(t, adstest.Dial(t, addr), redirectNode("sidecar~127.0.1.5~svc-c-1.c~c.svc.cluster.local", "svc-c"))
	// Local mode has no passthrough for a first call: never narrowed.
	local := adstest.NewSotW(t, adstest.Dial(t, addr), adstest.Node("sidecar~127.0.1.8~svc-a-2.a~a.svc.cluster.local", map[string]string{"app": "svc-a"}))
	if got, want := subscribeAll(t, local), []string{clusterA, clusterB, clusterC, clusterD, clusterRoot}; !slices.Equal(got, want) {
		t.Fatalf("local-mode proxy in a: outbound clusters %v, want all %v", got, want)
	}

	if got, want := subscribeAll(t, a), []string{clusterA, clusterRoot}; !slices.Equal(got, want) {
		t.Fatalf("auto-scoped proxy in a before any traffic: outbound clusters %v, want %v", got, want)
	}
	if got, want := subscribeAll(t, b), []string{clusterA, clusterB, clusterC, clusterD, clusterRoot}; !slices.Equal(got, want) {
		t.Fatalf("proxy in b (no opt-in): outbound clusters %v, want %v", got, want)
	}
	if got, want := subscribeAll(t, c), []string{clusterB, clusterC}; !slices.Equal(got, want) {
		t.Fatalf("proxy in c (opted in, own Sidecar): outbound clusters %v, want %v", got, want)
	}

	// svc-a-1 now calls svc.b and, through the passthrough, d's VIP: its
	// proxy is pushed clusters for both.
	calling.Store(true)
	cds := a.ExpectACKingOthers(resourcev3.ClusterType, 15*time.Second)
	var got []string
	for _, name := range adstest.ResourceNames(t, cds) {
		if len(name) > 9 && name[:9] == "outbound|" {
			got = append(got, name)
		}
	}
	if want := []string{clusterA, clusterB, clusterD, clusterRoot}; !slices.Equal(got, want) {
		t.Fatalf("auto-scoped proxy in a after calling b and d: outbound clusters %v, want %v", got, want)
	}
	// The others' resources did not change: no push.
	b.ExpectNone(time.Second)
	c.ExpectNone(100 * time.Millisecond)
	local.ExpectNone(100 * time.Millisecond)

	// The learned scope, as a Sidecar the user can freeze.
	resp, err := http.Get("http://" + ready.DebugAddr.String() + "/debug/autoscope?namespace=a")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, h := range []string{`"./*"`, `"istio-system/*"`, `"b/svc.b.svc.cluster.local"`, `"d/svc.d.svc.cluster.local"`} {
		if !strings.Contains(string(body), h) {
			t.Errorf("/debug/autoscope?namespace=a: no egress host %s in\n%s", h, body)
		}
	}
}

package controlplane

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

const services = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  workloadSelector:
    labels: {app: reviews}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: productpage
  namespace: default
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  workloadSelector:
    labels: {app: productpage}
`

const workloads = `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: productpage-v1
  namespace: default
spec:
  address: 127.0.1.2
  labels: {app: productpage, version: v1}
  serviceAccount: productpage
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v1
  namespace: default
spec:
  address: 127.0.1.3
  labels: {app: reviews, version: v1}
  serviceAccount: reviews
`

const reviewsV2 = `---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: reviews-v2
  namespace: default
spec:
  address: 127.0.1.4
  labels: {app: reviews, version: v2}
  serviceAccount: reviews
`

const (
	productpageNode = "sidecar~127.0.1.2~productpage-v1.default~default.svc.cluster.local"
	reviewsCluster  = "outbound|9080||reviews.default.svc.cluster.local"
)

// applyWithin is how fast a config change must reach a connected proxy.
const applyWithin = time.Second

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	// Write then rename, as editors and kubectl-style tools do, so the
	// watcher never reads half a file.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startControlPlane runs Run on an ephemeral port until the test ends.
func startControlPlane(t *testing.T, dir string, onErr func(error)) net.Addr {
	t.Helper()
	return startRun(t, Options{ConfigDir: dir, OnConfigError: onErr}).XDSAddr
}

func TestConfigDirChangeReachesConnectedProxyWithin1s(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "services.yaml"), services)
	writeFile(t, filepath.Join(dir, "workloads.yaml"), workloads)
	configErrs := make(chan error, 4)
	addr := startControlPlane(t, dir, func(err error) { configErrs <- err })

	// The proxy is productpage-v1 as its WorkloadEntry describes it.
	c := adstest.NewSotW(t, adstest.Dial(t, addr.String()),
		adstest.Node(productpageNode, map[string]string{"app": "productpage", "version": "v1"}))
	c.Request(resourcev3.ClusterType)
	cds := c.Expect(resourcev3.ClusterType, 5*time.Second)
	clusters := adstest.ResourceNames(t, cds)
	if !slices.Contains(clusters, reviewsCluster) {
		t.Fatalf("clusters = %v, want %s", clusters, reviewsCluster)
	}
	c.ACK(cds)
	var edsNames []string
	for _, name := range clusters {
		if strings.HasPrefix(name, "outbound|") {
			edsNames = append(edsNames, name)
		}
	}
	c.Request(resourcev3.EndpointType, edsNames...)
	eds := c.Expect(resourcev3.EndpointType, applyWithin)
	c.ACK(eds, edsNames...)

	// A new reviews workload changes reviews' endpoints.
	writeFile(t, filepath.Join(dir, "workloads.yaml"), workloads+reviewsV2)
	next := c.Expect(resourcev3.EndpointType, applyWithin)
	if next.VersionInfo == eds.VersionInfo {
		t.Fatalf("EDS re-sent with unchanged version %s", next.VersionInfo)
	}
	c.ACK(next, edsNames...)

	// An invalid file is reported and changes nothing the proxy sees.
	writeFile(t, filepath.Join(dir, "bad.yaml"), "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad, namespace: default}\nspec:\n  hosts: []\n")
	select {
	case err := <-configErrs:
		if !strings.Contains(err.Error(), "bad.yaml") {
			t.Fatalf("config error %q does not name the file", err)
		}
	case <-time.After(2 * applyWithin):
		t.Fatal("invalid config was not reported")
	}
	c.ExpectNone(300 * time.Millisecond)
}

func TestRunFailsWhenXDSAddressIsTaken(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	err = Run(context.Background(), Options{ConfigDir: t.TempDir(), XDSAddress: lis.Addr().String()})
	var opErr *net.OpError
	if !errors.As(err, &opErr) || !strings.Contains(err.Error(), lis.Addr().String()) {
		t.Fatalf("err = %v, want a listen error naming the address", err)
	}
}

package controlplane

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

// Two namespaces, one service each; namespace a's Sidecar imports only ./*.
const scopedMesh = `apiVersion: networking.istio.io/v1
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
kind: Sidecar
metadata: {name: default, namespace: a}
spec:
  egress:
  - hosts: ["./*"]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-a-1, namespace: a}
spec:
  address: 127.0.1.2
  labels: {app: svc-a}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-b-1, namespace: b}
spec:
  address: 127.0.1.3
  labels: {app: svc-b}
`

const scopedMoreB = `---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-b-2, namespace: b}
spec:
  address: 127.0.1.4
  labels: {app: svc-b}
`

// subscribeAll requests CDS, then EDS for every outbound cluster, then
// LDS, ACKing each, and returns the outbound cluster names.
func subscribeAll(t *testing.T, c *adstest.SotW) []string {
	t.Helper()
	c.Request(resourcev3.ClusterType)
	cds := c.Expect(resourcev3.ClusterType, 5*time.Second)
	c.ACK(cds)
	var eds []string
	for _, name := range adstest.ResourceNames(t, cds) {
		if strings.HasPrefix(name, "outbound|") {
			eds = append(eds, name)
		}
	}
	c.Request(resourcev3.EndpointType, eds...)
	c.ACK(c.Expect(resourcev3.EndpointType, 5*time.Second), eds...)
	c.Request(resourcev3.ListenerType)
	c.ACK(c.Expect(resourcev3.ListenerType, 5*time.Second))
	return eds
}

func TestSidecarScopedProxyGetsNoOtherNamespaceAndNoPushForIt(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "scoped.yaml"), scopedMesh)
	addr := startControlPlane(t, dir, func(err error) { t.Errorf("config error: %v", err) })

	a := adstest.NewSotW(t, adstest.Dial(t, addr.String()),
		adstest.Node("sidecar~127.0.1.2~svc-a-1.a~a.svc.cluster.local", map[string]string{"app": "svc-a"}))
	b := adstest.NewSotW(t, adstest.Dial(t, addr.String()),
		adstest.Node("sidecar~127.0.1.3~svc-b-1.b~b.svc.cluster.local", map[string]string{"app": "svc-b"}))

	const clusterA, clusterB = "outbound|9080||svc.a.svc.cluster.local", "outbound|9080||svc.b.svc.cluster.local"
	if got := subscribeAll(t, a); !slices.Equal(got, []string{clusterA}) {
		t.Fatalf("namespace a proxy: outbound clusters %v, want only %s", got, clusterA)
	}
	if got := subscribeAll(t, b); !slices.Equal(got, []string{clusterA, clusterB}) {
		t.Fatalf("namespace b proxy (no Sidecar): outbound clusters %v, want both", got)
	}

	// A second svc-b endpoint: b's proxy hears of it, a's hears nothing.
	writeFile(t, filepath.Join(dir, "scoped.yaml"), scopedMesh+scopedMoreB)
	eds := b.Expect(resourcev3.EndpointType, 5*time.Second)
	if !strings.Contains(eds.String(), "127.0.1.4") {
		t.Fatalf("namespace b proxy: EDS update without the new endpoint: %v", adstest.ResourceNames(t, eds))
	}
	a.ExpectNone(time.Second)
}

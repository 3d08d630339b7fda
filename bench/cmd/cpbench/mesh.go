package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// mesh is a synthetic mesh written as a directory of Istio YAML: services
// spread over namespaces, each a ServiceEntry with a VIP selecting three
// WorkloadEntries; every tenth service also has a VirtualService (weighted
// subsets) and a DestinationRule (subsets, connection pool).
type mesh struct {
	dir        string
	services   int
	namespaces int
}

const servicePort = 8080

func (m *mesh) ns(i int) string            { return fmt.Sprintf("ns-%d", i%m.namespaces) }
func (m *mesh) host(i int) string          { return fmt.Sprintf("svc-%d.%s.svc.cluster.local", i, m.ns(i)) }
func (m *mesh) cluster(i int) string       { return fmt.Sprintf("outbound|%d||%s", servicePort, m.host(i)) }
func (m *mesh) epFile(i int) string        { return filepath.Join(m.dir, fmt.Sprintf("ep-svc-%d.yaml", i)) }
func (m *mesh) hasPolicy(i int) bool       { return i%10 == 0 }
func ip(base, i int) string                { return fmt.Sprintf("%d.%d.%d.%d", base, (i>>16)&255, (i>>8)&255, i&255) }
func (m *mesh) endpointIP(i, k int) string { return ip(10, 128<<16+i*3+k) }

func (m *mesh) write() error {
	if err := os.RemoveAll(m.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return err
	}
	perNS := make([]strings.Builder, m.namespaces)
	for i := range m.services {
		b := &perNS[i%m.namespaces]
		fmt.Fprintf(b, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc-%[1]d, namespace: %[2]s}
spec:
  hosts: [%[3]s]
  addresses: [%[4]s]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: %[5]d, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: svc-%[1]d}}
---
`, i, m.ns(i), m.host(i), ip(240, 1<<16+i), servicePort)
		if m.hasPolicy(i) {
			fmt.Fprintf(b, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc-%[1]d, namespace: %[2]s}
spec:
  hosts: [%[3]s]
  http:
  - match: [{headers: {x-canary: {exact: "1"}}}]
    route: [{destination: {host: %[3]s, subset: v2}}]
  - route:
    - {destination: {host: %[3]s, subset: v1}, weight: 90}
    - {destination: {host: %[3]s, subset: v2}, weight: 10}
    timeout: 5s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc-%[1]d, namespace: %[2]s}
spec:
  host: %[3]s
  trafficPolicy:
    connectionPool: {http: {http1MaxPendingRequests: 100}}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
`, i, m.ns(i), m.host(i))
		}
		if err := m.writeEndpoints(i, ""); err != nil {
			return err
		}
	}
	for k := range perNS {
		if err := os.WriteFile(filepath.Join(m.dir, fmt.Sprintf("services-ns-%d.yaml", k)), []byte(perNS[k].String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeEndpoints writes service i's three WorkloadEntries; a non-empty
// moved replaces the first one's address (an endpoint change).
func (m *mesh) writeEndpoints(i int, moved string) error {
	var b strings.Builder
	for k := range 3 {
		addr := m.endpointIP(i, k)
		if k == 0 && moved != "" {
			addr = moved
		}
		fmt.Fprintf(&b, `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-%[1]d-%[2]d, namespace: %[3]s}
spec:
  address: %[4]s
  labels: {app: svc-%[1]d, version: v%[5]d}
---
`, i, k, m.ns(i), addr, k%2+1)
	}
	// Write then rename, so the watcher never reads half a file.
	tmp := m.epFile(i) + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, m.epFile(i))
}

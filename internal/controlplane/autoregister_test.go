package controlplane

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/trellis-mesh/trellis/internal/autoregister"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
	"github.com/trellis-mesh/trellis/internal/xds"
)

const vmGroup = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm-svc, namespace: vms}
spec:
  hosts: [vm-svc.vms.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: vm, namespace: vms}
spec:
  metadata: {labels: {app: vm}}
  template: {ports: {http: 8080}, serviceAccount: vm}
`

// endpointAddrs are "ip:port" of the named cluster's endpoints in r.
func endpointAddrs(t *testing.T, r *discoveryv3.DiscoveryResponse, cluster string) []string {
	t.Helper()
	out := []string{}
	for _, a := range r.Resources {
		var cla endpointv3.ClusterLoadAssignment
		if err := a.UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		if cla.ClusterName != cluster {
			continue
		}
		for _, g := range cla.Endpoints {
			for _, lb := range g.LbEndpoints {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				out = append(out, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
			}
		}
	}
	return out
}

const vmCluster = "outbound|80||vm-svc.vms.svc.cluster.local"

// awaitEndpoints watches cluster's endpoints as a client in the VMs'
// namespace; the function it returns waits until they are want, in any
// order.
func awaitEndpoints(t *testing.T, addr, cluster string) func(what string, want []string) {
	watcher := adstest.NewSotW(t, adstest.Dial(t, addr), adstest.Node("sidecar~10.9.0.1~client.vms~vms.svc.cluster.local", map[string]string{"app": "client"}))
	watcher.Request(resourcev3.ClusterType)
	watcher.ACK(watcher.Expect(resourcev3.ClusterType, 5*time.Second))
	watcher.Request(resourcev3.EndpointType, cluster)
	return func(what string, want []string) {
		t.Helper()
		start := time.Now()
		for {
			left := 10*time.Second - time.Since(start)
			if left <= 0 {
				t.Fatalf("%s: endpoints %v not seen within 10s", what, want)
			}
			r := watcher.ExpectACKingOthers(resourcev3.EndpointType, left)
			watcher.ACK(r, cluster)
			if got := endpointAddrs(t, r, cluster); slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
				t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
				return
			}
		}
	}
}

// A proxy naming a WorkloadGroup in its metadata becomes an endpoint of
// the services selecting the group's labels while it is connected, and
// stops being one a grace period after it disconnects (file mode: the
// entry lives in the control plane's memory).
func TestAutoRegisteredProxyIsAnEndpointUntilGraceAfterDisconnect(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "vm.yaml"), vmGroup)
	const grace = 500 * time.Millisecond
	addr := startRun(t, Options{ConfigDir: dir, AutoRegisterGrace: grace,
		OnConfigError: func(err error) { t.Errorf("config error: %v", err) }}).XDSAddr.String()

	await := awaitEndpoints(t, addr, vmCluster)
	await("no VM yet", []string{})

	vmConn := adstest.Dial(t, addr)
	node := adstest.Node("sidecar~10.9.0.7~vm-1.vms~vms.svc.cluster.local", nil)
	node.Metadata.Fields[autoregister.GroupMetadata] = structpb.NewStringValue("vm")
	vm := adstest.NewSotW(t, vmConn, node)
	vm.Request(resourcev3.ClusterType)
	await("VM registered", []string{"10.9.0.7:8080"})

	disconnected := time.Now()
	if err := vmConn.Close(); err != nil {
		t.Fatal(err)
	}
	await("VM gone after the grace period", []string{})
	if d := time.Since(disconnected); d < grace {
		t.Errorf("entry removed %v after disconnect, before the %v grace period", d, grace)
	}
}

// A VM proxy that runs a readinessProbe is an endpoint only while its last
// health report said healthy: not before its first report, not after a
// failing one (Istio's WorkloadGroup probe, file mode).
func TestProbedProxyIsAnEndpointOnlyWhileHealthy(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "vm.yaml"), vmGroup)
	addr := startRun(t, Options{ConfigDir: dir, OnConfigError: func(err error) { t.Errorf("config error: %v", err) }}).XDSAddr.String()
	await := awaitEndpoints(t, addr, vmCluster)
	await("no VM yet", []string{})

	node := adstest.Node("sidecar~10.9.0.7~vm-1.vms~vms.svc.cluster.local", nil)
	node.Metadata.Fields[autoregister.GroupMetadata] = structpb.NewStringValue("vm")
	proxyConfig, err := structpb.NewStruct(map[string]any{"readinessProbe": map[string]any{
		"httpGet": map[string]any{"path": "/ready", "port": 8080.0}, "periodSeconds": 1.0}})
	if err != nil {
		t.Fatal(err)
	}
	node.Metadata.Fields["PROXY_CONFIG"] = structpb.NewStructValue(proxyConfig)
	vm := adstest.NewSotW(t, adstest.Dial(t, addr), node)
	vm.Request(resourcev3.ClusterType)
	vm.ACK(vm.Expect(resourcev3.ClusterType, 5*time.Second)) // its OnConnect ran before this response
	// A VM of the same group without a probe, registered after it, is an
	// endpoint at once: the first is registered but not yet healthy.
	plainNode := adstest.Node("sidecar~10.9.0.8~vm-2.vms~vms.svc.cluster.local", nil)
	plainNode.Metadata.Fields[autoregister.GroupMetadata] = structpb.NewStringValue("vm")
	plain := adstest.NewSotW(t, adstest.Dial(t, addr), plainNode)
	plain.Request(resourcev3.ClusterType)
	await("registered, not yet reported healthy", []string{"10.9.0.8:8080"})

	report := func(healthy bool) {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: xds.HealthInfoType}
		if !healthy {
			req.ErrorDetail = &rpcstatus.Status{Code: int32(codes.Internal), Message: "connection refused"}
		}
		vm.Send(req)
	}
	report(true)
	await("reported healthy", []string{"10.9.0.7:8080", "10.9.0.8:8080"})
	report(false)
	await("reported unhealthy", []string{"10.9.0.8:8080"})
	report(true)
	await("healthy again", []string{"10.9.0.7:8080", "10.9.0.8:8080"})
}

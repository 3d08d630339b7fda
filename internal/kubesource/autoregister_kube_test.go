package kubesource_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
	metav1alpha1 "istio.io/api/meta/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	istiov1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/autoregister"
	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
	"github.com/trellis-mesh/trellis/internal/xds"
)

// In Kubernetes mode a proxy naming a WorkloadGroup gets a WorkloadEntry
// in the API server, owned by the group and carrying Istio's annotations;
// it is deleted a grace period after the proxy disconnects.
func TestAutoRegisteredWorkloadEntryIsWrittenOwnedByItsGroup(t *testing.T) {
	kube, ns, ic := istioNamespace(t)
	ctx := context.Background()
	group, err := ic.NetworkingV1().WorkloadGroups(ns).Create(ctx, &istiov1.WorkloadGroup{
		ObjectMeta: metav1.ObjectMeta{Name: "vm"},
		Spec: networking.WorkloadGroup{Metadata: &networking.WorkloadGroup_ObjectMeta{Labels: map[string]string{"app": "vm"}},
			Template: &networking.WorkloadEntry{Ports: map[string]uint32{"http": 8080}, ServiceAccount: "vm"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := replicaWith(t, kube, ns, "a", func(o *controlplane.Options) { o.AutoRegisterGrace = time.Second })

	conn := adstest.Dial(t, addr)
	node := adstest.Node("sidecar~10.9.0.7~vm-1."+ns+"~"+ns+".svc.cluster.local", nil)
	node.Metadata.Fields[autoregister.GroupMetadata] = structpb.NewStringValue("vm")
	vm := adstest.NewSotW(t, conn, node)
	vm.Request(resourcev3.ClusterType)

	name := autoregister.EntryName("vm", "10.9.0.7", "")
	start := time.Now()
	var we *istiov1.WorkloadEntry
	for we == nil {
		got, err := ic.NetworkingV1().WorkloadEntries(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			we = got
		case !apierrors.IsNotFound(err):
			t.Fatal(err)
		case time.Since(start) > 3*within:
			t.Fatalf("WorkloadEntry %s/%s not written within %v", ns, name, 3*within)
		default:
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("WorkloadEntry written after %v", time.Since(start).Round(time.Millisecond))
	if len(we.OwnerReferences) != 1 || we.OwnerReferences[0].UID != group.UID || we.OwnerReferences[0].Kind != "WorkloadGroup" {
		t.Errorf("owner references = %+v, want the WorkloadGroup %s", we.OwnerReferences, group.UID)
	}
	if we.Spec.GetAddress() != "10.9.0.7" || we.Spec.GetPorts()["http"] != 8080 || we.Spec.GetServiceAccount() != "vm" || we.Labels["app"] != "vm" {
		t.Errorf("entry = labels %v, spec %v; want the template with address 10.9.0.7 and label app=vm", we.Labels, we.Spec.String())
	}
	if we.Annotations[autoregister.GroupAnnotation] != "vm" || we.Annotations[autoregister.ControllerAnnotation] != "a" {
		t.Errorf("annotations = %v", we.Annotations)
	}

	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for {
		_, err := ic.NetworkingV1().WorkloadEntries(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			t.Logf("WorkloadEntry deleted %v after disconnect", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > 3*within {
			t.Fatalf("WorkloadEntry still there %v after disconnect (err %v)", 3*within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A replica that crashes leaves its proxies' entries behind. The leader
// sweeps them by istiod's rules: disconnected past the grace period, or
// connected for longer than 1.5 maximum connection ages (a live proxy
// reconnects, and its entry is rewritten, before that). Entries of live
// workloads and the user's own WorkloadEntries stay.
func TestEntriesLeftByACrashedReplicaAreSweptByTheLeader(t *testing.T) {
	kube, ns, ic := istioNamespace(t)
	ctx := context.Background()
	ago := func(d time.Duration) string { return time.Now().Add(-d).UTC().Format(time.RFC3339Nano) }
	left := func(extra map[string]string) map[string]string {
		ann := map[string]string{autoregister.GroupAnnotation: "vm", autoregister.ControllerAnnotation: "crashed"}
		maps.Copy(ann, extra)
		return ann
	}
	entries := map[string]map[string]string{
		"vm-10.9.1.1": left(map[string]string{autoregister.ConnectedAtAnnotation: ago(2 * time.Hour), autoregister.DisconnectedAtAnnotation: ago(time.Minute)}),
		"vm-10.9.1.2": left(map[string]string{autoregister.ConnectedAtAnnotation: ago(2 * time.Hour)}),
		"vm-10.9.1.3": left(map[string]string{autoregister.ConnectedAtAnnotation: ago(time.Minute)}),
		"static":      {autoregister.ConnectedAtAnnotation: ago(2 * time.Hour), autoregister.DisconnectedAtAnnotation: ago(time.Hour)},
	}
	for name, ann := range entries {
		if _, err := ic.NetworkingV1().WorkloadEntries(ns).Create(ctx, &istiov1.WorkloadEntry{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
			Spec:       networking.WorkloadEntry{Address: "10.9.1.9"},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	replicaWith(t, kube, ns, "a", func(o *controlplane.Options) { o.AutoRegisterSweepInterval = 200 * time.Millisecond })

	start := time.Now()
	for _, name := range []string{"vm-10.9.1.1", "vm-10.9.1.2"} {
		for {
			_, err := ic.NetworkingV1().WorkloadEntries(ns).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Since(start) > 3*within {
				t.Fatalf("stale WorkloadEntry %s still there after %v (err %v)", name, 3*within, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("stale entries swept after %v", time.Since(start).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond) // more sweeps: they must leave the rest alone
	for _, name := range []string{"vm-10.9.1.3", "static"} {
		if _, err := ic.NetworkingV1().WorkloadEntries(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("WorkloadEntry %s: %v; want it kept", name, err)
		}
	}
}

// awaitEntry polls the WorkloadEntry ns/name until ok holds for it.
func awaitEntry(t *testing.T, ic istioclient.Interface, ns, name, what string, ok func(*istiov1.WorkloadEntry) bool) *istiov1.WorkloadEntry {
	t.Helper()
	start := time.Now()
	for {
		we, err := ic.NetworkingV1().WorkloadEntries(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		if err == nil && ok(we) {
			t.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond))
			return we
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not seen within %v (entry %+v)", what, within, we)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func healthCondition(we *istiov1.WorkloadEntry) *metav1alpha1.IstioCondition {
	for _, c := range we.Status.Conditions {
		if c.GetType() == model.ConditionHealthy {
			return c
		}
	}
	return nil
}

// In Kubernetes mode a VM's health reports become the Healthy condition in
// its WorkloadEntry's status, written by the replica it is connected to.
// Every replica reads it from there and serves the VM as an endpoint only
// while it is True (Istio's WorkloadGroup probe).
func TestProbedVMIsAnEndpointOfEveryReplicaOnlyWhileHealthy(t *testing.T) {
	kube, ns, ic := istioNamespace(t)
	ctx := context.Background()
	if _, err := ic.NetworkingV1().WorkloadGroups(ns).Create(ctx, &istiov1.WorkloadGroup{
		ObjectMeta: metav1.ObjectMeta{Name: "vm"},
		Spec: networking.WorkloadGroup{Metadata: &networking.WorkloadGroup_ObjectMeta{Labels: map[string]string{"app": "vm"}},
			Template: &networking.WorkloadEntry{Ports: map[string]uint32{"http": 8080}, ServiceAccount: "vm"},
			Probe:    &networking.ReadinessProbe{HealthCheckMethod: &networking.ReadinessProbe_HttpGet{HttpGet: &networking.HTTPHealthCheckConfig{Path: "/ready", Port: 8080}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	host := "vm-svc." + ns + ".svc.cluster.local"
	if _, err := ic.NetworkingV1().ServiceEntries(ns).Create(ctx, &istiov1.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "vm-svc"},
		Spec: networking.ServiceEntry{Hosts: []string{host}, Location: networking.ServiceEntry_MESH_INTERNAL,
			Resolution: networking.ServiceEntry_STATIC, Ports: []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
			WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "vm"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	addrA, _ := replicaWith(t, kube, ns, "a", nil)
	addrB, _ := replicaWith(t, kube, ns, "b", nil)

	cluster := "outbound|80||" + host
	watcher := adstest.NewSotW(t, adstest.Dial(t, addrB), adstest.Node("sidecar~10.9.0.1~client."+ns+"~"+ns+".svc.cluster.local", nil))
	watcher.Request(resourcev3.ClusterType)
	await(t, watcher, resourcev3.ClusterType, nil, "the VM service's cluster on replica b", func(r *discoveryv3.DiscoveryResponse) bool {
		return slices.Contains(clusterNames(t, r), cluster)
	})
	watcher.Request(resourcev3.EndpointType, cluster)
	endpoints := func(what string, want ...string) {
		t.Helper()
		start := time.Now()
		for { // a new service account changes the cluster too: CDS pushes come between
			r := watcher.ExpectACKingOthers(resourcev3.EndpointType, within-time.Since(start))
			watcher.ACK(r, cluster)
			if slices.Equal(endpointsOf(t, r, cluster), want) {
				t.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond))
				return
			}
		}
	}

	vmNode := func(ip string, probe bool) *adstest.SotW {
		node := adstest.Node("sidecar~"+ip+"~vm."+ns+"~"+ns+".svc.cluster.local", nil)
		node.Metadata.Fields[autoregister.GroupMetadata] = structpb.NewStringValue("vm")
		if probe {
			pc, err := structpb.NewStruct(map[string]any{"readinessProbe": map[string]any{"httpGet": map[string]any{"path": "/ready", "port": 8080.0}}})
			if err != nil {
				t.Fatal(err)
			}
			node.Metadata.Fields["PROXY_CONFIG"] = structpb.NewStructValue(pc)
		}
		vm := adstest.NewSotW(t, adstest.Dial(t, addrA), node)
		vm.Request(resourcev3.ClusterType)
		return vm
	}
	probed := vmNode("10.9.0.7", true)
	name := autoregister.EntryName("vm", "10.9.0.7", "")
	awaitEntry(t, ic, ns, name, "entry with health checks enabled", func(we *istiov1.WorkloadEntry) bool {
		return we.Annotations[model.HealthChecksAnnotation] == "true" && healthCondition(we) == nil
	})
	// A VM without a probe, registered after it, is an endpoint at once;
	// the probed one, already in every replica's config, is not.
	vmNode("10.9.0.8", false)
	endpoints("only the VM without a probe", "10.9.0.8:8080")

	report := func(failure string) {
		req := &discoveryv3.DiscoveryRequest{TypeUrl: xds.HealthInfoType}
		if failure != "" {
			req.ErrorDetail = &rpcstatus.Status{Code: int32(codes.Internal), Message: failure}
		}
		probed.Send(req)
	}
	report("")
	awaitEntry(t, ic, ns, name, "Healthy=True in the entry's status", func(we *istiov1.WorkloadEntry) bool {
		c := healthCondition(we)
		return c != nil && c.GetStatus() == "True" && c.GetLastProbeTime() != nil
	})
	endpoints("both VMs once the probed one is healthy", "10.9.0.7:8080", "10.9.0.8:8080")

	report("Get \"http://localhost:8080/ready\": connection refused")
	awaitEntry(t, ic, ns, name, "Healthy=False with the probe's error", func(we *istiov1.WorkloadEntry) bool {
		c := healthCondition(we)
		return c != nil && c.GetStatus() == "False" && strings.Contains(c.GetMessage(), "connection refused")
	})
	endpoints("the probed VM out again", "10.9.0.8:8080")
}

package kubesource_test

import (
	"context"
	"maps"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"
	istiov1 "istio.io/client-go/pkg/apis/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/autoregister"
	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
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

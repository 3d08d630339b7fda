package kubesource_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellis-mesh/trellis/internal/autoscope"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

// labelNamespace sets (value != "") or removes a label of a namespace.
func labelNamespace(t *testing.T, c *cluster, ns, key, value string) {
	t.Helper()
	var v any = value
	if value == "" {
		v = nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{key: v}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.kube.CoreV1().Namespaces().Patch(context.Background(), ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A namespace labelled trellis.dev/auto-scope=enabled is auto-scoped with
// no --auto-scope option: its sidecars lose the clusters of other
// namespaces' services they were not seen calling; without the label they
// see every service again.
func TestNamespaceLabelTurnsAutoScopeOnAndOff(t *testing.T) {
	c := startCluster(t)
	other := &cluster{kube: c.kube, istio: c.istio, ns: kubeenv.Shared(t).Namespace(t)}
	c.createService(t, "local", 9080)
	other.createService(t, "remote", 9080)
	local, remote := "outbound|9080||"+c.host("local"), "outbound|9080||"+other.host("remote")

	ads := adstest.Dial(t, c.addr.String())
	// A REDIRECT-mode sidecar: the mode automatic scoping applies to.
	node := adstest.Node(c.node(), nil)
	node.Metadata.Fields["INTERCEPTION_MODE"] = structpb.NewStringValue("REDIRECT")
	cds := adstest.NewSotW(t, ads, node)
	cds.Request(resourcev3.ClusterType)
	has := func(names ...string) func(*discoveryv3.DiscoveryResponse) bool {
		return func(r *discoveryv3.DiscoveryResponse) bool {
			got := clusterNames(t, r)
			for _, n := range names {
				if !slices.Contains(got, n) {
					return false
				}
			}
			return true
		}
	}
	await(t, cds, resourcev3.ClusterType, nil, "unscoped: both namespaces' services", has(local, remote))

	labelNamespace(t, c, c.ns, autoscope.Label, "enabled")
	await(t, cds, resourcev3.ClusterType, nil, "labelled: the other namespace's service is gone", func(r *discoveryv3.DiscoveryResponse) bool {
		return has(local)(r) && !has(remote)(r)
	})

	labelNamespace(t, c, c.ns, autoscope.Label, "")
	await(t, cds, resourcev3.ClusterType, nil, "label removed: unscoped again", has(local, remote))
}

// Deleting a namespace takes its Services (and everything else of it) out
// of the config at once, before its objects are deleted one by one (here
// they never are: no namespace controller runs).
func TestNamespaceDeletionDropsItsConfig(t *testing.T) {
	c := startCluster(t)
	other := &cluster{kube: c.kube, istio: c.istio, ns: kubeenv.Shared(t).Namespace(t)}
	other.createService(t, "doomed", 9080)
	doomed := "outbound|9080||" + other.host("doomed")

	ads := adstest.Dial(t, c.addr.String())
	cds := adstest.NewSotW(t, ads, adstest.Node(c.node(), nil))
	cds.Request(resourcev3.ClusterType)
	await(t, cds, resourcev3.ClusterType, nil, "the other namespace's service", func(r *discoveryv3.DiscoveryResponse) bool {
		return slices.Contains(clusterNames(t, r), doomed)
	})
	if err := c.kube.CoreV1().Namespaces().Delete(context.Background(), other.ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.kube.CoreV1().Services(other.ns).Get(context.Background(), "doomed", metav1.GetOptions{}); err != nil {
		t.Fatalf("the Service is already gone (%v): the test would not show the namespace's deletion dropping it", err)
	}
	await(t, cds, resourcev3.ClusterType, nil, "namespace deleted: its service is gone", func(r *discoveryv3.DiscoveryResponse) bool {
		return !slices.Contains(clusterNames(t, r), doomed)
	})
}

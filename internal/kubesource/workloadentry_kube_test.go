package kubesource_test

import (
	"context"
	"slices"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	networking "istio.io/api/networking/v1alpha3"
	istiov1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

// A Kubernetes Service selects WorkloadEntries as well as Pods, as in
// Istio's VM set-up: a VM's entry with the Service's labels is one more
// endpoint, at the port its entry names for the Service port's name.
func TestServiceSelectsWorkloadEntriesToo(t *testing.T) {
	c := startCluster(t)
	c.createPod(t, "vmsvc-pod", "10.4.0.1", map[string]string{"app": "vmsvc"})
	c.createService(t, "vmsvc", 9080)
	c.writeSlice(t, "vmsvc", 9080, endpoint{pod: "vmsvc-pod", ip: "10.4.0.1"})
	ctx := context.Background()
	if _, err := c.istio.NetworkingV1().WorkloadEntries(c.ns).Create(ctx, &istiov1.WorkloadEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "vm"},
		Spec:       networking.WorkloadEntry{Address: "10.4.0.9", Labels: map[string]string{"app": "vmsvc"}, Ports: map[string]uint32{"http": 8080}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	name := "outbound|9080||" + c.host("vmsvc")
	client := adstest.NewSotW(t, adstest.Dial(t, c.addr.String()), adstest.Node(c.node(), nil))
	client.Request(resourcev3.EndpointType, name)
	hasEndpoints := func(want ...string) func(*discoveryv3.DiscoveryResponse) bool {
		return func(r *discoveryv3.DiscoveryResponse) bool {
			return slices.Equal(endpointsOf(t, r, name), want)
		}
	}
	await(t, client, resourcev3.EndpointType, []string{name}, "the Pod and the VM", hasEndpoints("10.4.0.1:9080", "10.4.0.9:8080"))

	if err := c.istio.NetworkingV1().WorkloadEntries(c.ns).Delete(ctx, "vm", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, client, resourcev3.EndpointType, []string{name}, "the Pod alone once the entry is deleted", hasEndpoints("10.4.0.1:9080"))
}

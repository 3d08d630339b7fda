package kubesource_test

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

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

// setPodReady reports the Pod's readiness, as the kubelet would.
func (c *cluster) setPodReady(t *testing.T, name string, ready bool) {
	t.Helper()
	ctx := context.Background()
	pod, err := c.kube.CoreV1().Pods(c.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	if _, err := c.kube.CoreV1().Pods(c.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A ServiceEntry's workloadSelector selects the namespace's Pods as well
// as its WorkloadEntries, while they are Ready (Istio's semantics).
func TestServiceEntrySelectsReadyPods(t *testing.T) {
	c := startCluster(t)
	c.createPod(t, "db-0", "10.5.0.1", map[string]string{"app": "db"})
	c.setPodReady(t, "db-0", true)
	c.createPod(t, "db-1", "10.5.0.2", map[string]string{"app": "db"})
	host := "db.example.internal"
	if _, err := c.istio.NetworkingV1().ServiceEntries(c.ns).Create(context.Background(), &istiov1.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: networking.ServiceEntry{Hosts: []string{host}, Location: networking.ServiceEntry_MESH_INTERNAL,
			Resolution: networking.ServiceEntry_STATIC, Ports: []*networking.ServicePort{{Number: 5432, Name: "tcp", Protocol: "TCP", TargetPort: 15432}},
			WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "db"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	name := "outbound|5432||" + host
	client := adstest.NewSotW(t, adstest.Dial(t, c.addr.String()), adstest.Node(c.node(), nil))
	client.Request(resourcev3.EndpointType, name)
	hasEndpoints := func(want ...string) func(*discoveryv3.DiscoveryResponse) bool {
		return func(r *discoveryv3.DiscoveryResponse) bool { return slices.Equal(endpointsOf(t, r, name), want) }
	}
	await(t, client, resourcev3.EndpointType, []string{name}, "the ready Pod", hasEndpoints("10.5.0.1:15432"))
	c.setPodReady(t, "db-1", true)
	await(t, client, resourcev3.EndpointType, []string{name}, "both once the second is ready", hasEndpoints("10.5.0.1:15432", "10.5.0.2:15432"))
	c.setPodReady(t, "db-0", false)
	await(t, client, resourcev3.EndpointType, []string{name}, "the second alone once the first is not ready", hasEndpoints("10.5.0.2:15432"))
}

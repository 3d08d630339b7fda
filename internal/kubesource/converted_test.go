package kubesource

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// An unchanged Service converts to the very same ServiceEntry, so that
// model.EndpointDelta sees it unchanged by pointer; any change to what the
// conversion reads (the Service, a slice, a Pod or Node an endpoint points
// at) converts it again.
func TestUnchangedServiceKeepsItsServiceEntry(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "s1", ResourceVersion: "1"},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.0.0.10", Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	node := "n1"
	port, name := int32(8080), "http"
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: "web-a", ResourceVersion: "1"},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.1"}, NodeName: &node,
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-1"}}},
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1", UID: "p1", ResourceVersion: "1", Labels: map[string]string{"app": "web"}}}
	nodeObj := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", ResourceVersion: "1"}}
	look := lookup{
		pod:  func(ns, name string) *corev1.Pod { return pod },
		node: func(name string) *corev1.Node { return nodeObj },
	}
	c := newConverted()
	convert := func() any {
		return c.serviceEntry(svc, []*discoveryv1.EndpointSlice{slice}, look, "cluster.local", map[string]bool{})
	}
	first := convert()
	if first == nil {
		t.Fatal("no ServiceEntry for a Service with a TCP port")
	}
	if convert() != first {
		t.Fatal("an unchanged Service was converted again")
	}
	for _, change := range []struct {
		what string
		do   func()
	}{
		{"the Service", func() { svc = svc.DeepCopy(); svc.ResourceVersion = "2" }},
		{"an EndpointSlice", func() { slice = slice.DeepCopy(); slice.ResourceVersion = "2" }},
		{"an endpoint's Pod", func() { pod = pod.DeepCopy(); pod.ResourceVersion = "2" }},
		{"an endpoint's Node", func() { nodeObj = nodeObj.DeepCopy(); nodeObj.ResourceVersion = "2" }},
		{"the Pod, deleted", func() { pod = nil }},
	} {
		before := convert()
		change.do()
		if convert() == before {
			t.Errorf("a new version of %s kept the old ServiceEntry", change.what)
		}
	}

	// A Service no longer there is forgotten at the next sweep.
	c.sweep(map[string]bool{}, map[types.UID]bool{})
	if len(c.services) != 0 {
		t.Errorf("%d conversions kept after their Services went", len(c.services))
	}
}

func TestUnchangedPodKeepsItsWorkloadEntry(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1", UID: "p1", ResourceVersion: "1"},
		Status: corev1.PodStatus{PodIP: "10.1.0.1", Phase: corev1.PodRunning}}
	c := newConverted()
	first := c.podWorkload(pod, map[types.UID]bool{})
	if first == nil || c.podWorkload(pod, map[types.UID]bool{}) != first {
		t.Fatal("an unchanged Pod was converted again")
	}
	moved := pod.DeepCopy()
	moved.ResourceVersion, moved.Status.PodIP = "2", "10.1.0.2"
	if we := c.podWorkload(moved, map[types.UID]bool{}); we == first || we.Spec.GetAddress() != "10.1.0.2" {
		t.Errorf("a Pod with a new IP kept its old WorkloadEntry (%v)", we.Spec.GetAddress())
	}
}

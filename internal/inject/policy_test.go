package inject

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRequiredFollowsIstioPolicy(t *testing.T) {
	ns := func(label string) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
		if label != "" {
			n.Labels = map[string]string{NamespaceLabel: label}
		}
		return n
	}
	pod := func(labels, annotations map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: labels, Annotations: annotations},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
		}
	}
	in, out := map[string]string{PodLabel: "true"}, map[string]string{PodLabel: "false"}
	hostNet := pod(nil, nil)
	hostNet.Spec.HostNetwork = true
	injected := pod(nil, map[string]string{StatusKey: "{}"})
	byHand := pod(nil, nil)
	byHand.Spec.Containers = append(byHand.Spec.Containers, corev1.Container{Name: ProxyContainer})
	for _, tc := range []struct {
		name string
		ns   *corev1.Namespace
		pod  *corev1.Pod
		want bool
	}{
		{"enabled namespace injects", ns("enabled"), pod(nil, nil), true},
		{"pod label opts out of enabled namespace", ns("enabled"), pod(out, nil), false},
		{"deprecated annotation opts out", ns("enabled"), pod(nil, out), false},
		{"label wins over annotation", ns("enabled"), pod(in, out), true},
		{"unlabelled namespace skips", ns(""), pod(nil, nil), false},
		{"pod opts in in unlabelled namespace", ns(""), pod(in, nil), true},
		{"istio values: yes means yes", ns(""), pod(map[string]string{PodLabel: "Yes"}, nil), true},
		{"unknown value means no", ns("enabled"), pod(map[string]string{PodLabel: "maybe"}, nil), false},
		{"disabled namespace wins over pod opt-in", ns("disabled"), pod(in, nil), false},
		{"system namespace never", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system", Labels: map[string]string{NamespaceLabel: "enabled"}}}, pod(nil, nil), false},
		{"hostNetwork never", ns("enabled"), hostNet, false},
		{"already injected", ns("enabled"), injected, false},
		{"proxy container added by hand", ns("enabled"), byHand, false},
		{"file mode injects", nil, pod(nil, nil), true},
		{"file mode honours opt-out", nil, pod(out, nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := Required(tc.ns, tc.pod)
			if got != tc.want {
				t.Errorf("Required = %v (%s), want %v", got, why, tc.want)
			}
		})
	}
}

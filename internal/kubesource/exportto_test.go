package kubesource

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Istio's networking.istio.io/exportTo Service annotation becomes the
// synthetic ServiceEntry's exportTo; without it the mesh default applies.
func TestExportToAnnotationBecomesServiceEntryExportTo(t *testing.T) {
	for _, tc := range []struct {
		annotation string
		want       []string
	}{
		{"", nil},
		{".", []string{"."}},
		{"~", []string{"~"}},
		{"team-a, istio-system ,", []string{"team-a", "istio-system"}},
	} {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "default"},
			Spec: corev1.ServiceSpec{
				ClusterIP: "10.96.0.10",
				Ports:     []corev1.ServicePort{{Name: "http", Port: 9080}},
			},
		}
		if tc.annotation != "" {
			svc.Annotations = map[string]string{"networking.istio.io/exportTo": tc.annotation}
		}
		se := serviceEntry(svc, nil, lookup{}, "cluster.local")
		if se == nil {
			t.Fatalf("%q: no ServiceEntry", tc.annotation)
		}
		if got := se.Spec.GetExportTo(); !slices.Equal(got, tc.want) {
			t.Errorf("annotation %q: exportTo %q, want %q", tc.annotation, got, tc.want)
		}
	}
}

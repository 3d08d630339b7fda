package inject

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/proxyconfig"
)

func TestInjectYAMLNamesTheBadField(t *testing.T) {
	in := []byte(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {sidecar.istio.io/proxyCPU: lots}
    spec:
      containers: [{name: web, image: example/web:1}]
`)
	_, _, err := InjectYAML(in, FileOptions{Params: testParams(true)})
	if err == nil || !strings.Contains(err.Error(), "shop/web: metadata.annotations[sidecar.istio.io/proxyCPU]") {
		t.Errorf("err = %v, want one naming shop/web and the annotation", err)
	}
}

// trellis-proxy refuses unknown component loggers, so the template must not pass them.
func TestUnknownComponentLoggersAreDropped(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: map[string]string{
			"sidecar.istio.io/componentLogLevel": "misc:error,upstream:debug",
		}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web"}}},
	}
	eff, _, err := proxyconfig.Resolve(proxyconfig.Input{Pod: pod})
	if err != nil {
		t.Fatal(err)
	}
	out, warnings, err := Inject(pod, "", eff, testParams(true))
	if err != nil {
		t.Fatal(err)
	}
	args := out.Spec.InitContainers[1].Args
	if !slices.Contains(args, "--component-log-level=upstream:debug") {
		t.Errorf("args %v: want --component-log-level=upstream:debug only", args)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "misc") {
		t.Errorf("warnings %q: want one about misc", warnings)
	}
	// The built-in default (Istio's misc:error) is dropped without a warning on every pod.
	plain := pod.DeepCopy()
	plain.Annotations = nil
	eff, _, err = proxyconfig.Resolve(proxyconfig.Input{Pod: plain})
	if err != nil {
		t.Fatal(err)
	}
	if _, warnings, _ := Inject(plain, "", eff, testParams(true)); len(warnings) != 0 {
		t.Errorf("warnings %q for the defaults, want none", warnings)
	}
}

func TestWorkloadNameFromOwner(t *testing.T) {
	yes := true
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		GenerateName:    "reviews-v1-7d9f8c-",
		Labels:          map[string]string{"pod-template-hash": "7d9f8c"},
		OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "reviews-v1-7d9f8c", Controller: &yes}},
	}}
	if got := WorkloadName(pod); got != "reviews-v1" {
		t.Errorf("WorkloadName = %q, want the Deployment's name reviews-v1", got)
	}
}

package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"
	apinetworking "istio.io/api/networking/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
	clientnetworking "istio.io/client-go/pkg/apis/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

// kubeWorld puts the hierarchy into a real API server: the istio ConfigMap in a fresh istio
// namespace (which the MeshConfig makes the root), a mesh-wide ProxyConfig there, two
// competing namespace-wide ones and a workload one in the app namespace, and two pods.
func kubeWorld(t *testing.T) (kube *kubeenv.Env, istioNS, appNS string) {
	kube = kubeenv.Shared(t)
	kube.InstallIstioCRDs(t)
	istioNS, appNS = kube.Namespace(t), kube.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ic := kube.IstioClient(t)
	if _, err := kube.Client().CoreV1().ConfigMaps(istioNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "istio"},
		Data:       map[string]string{"mesh": "rootNamespace: " + istioNS + "\ndefaultConfig:\n  terminationDrainDuration: 12s\n"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pcs := []*clientnetworking.ProxyConfig{
		{ObjectMeta: metav1.ObjectMeta{Name: "mesh-defaults", Namespace: istioNS, Annotations: map[string]string{"sidecar.istio.io/logLevel": "info"}},
			Spec: apinetworking.ProxyConfig{EnvironmentVariables: map[string]string{"ISTIO_META_DNS_CAPTURE": "true"}}},
		// a-ns is created first, so it wins whether or not both get the same creation second.
		{ObjectMeta: metav1.ObjectMeta{Name: "a-ns", Namespace: appNS, Annotations: map[string]string{"sidecar.istio.io/logLevel": "error"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b-ns", Namespace: appNS, Annotations: map[string]string{"sidecar.istio.io/logLevel": "debug"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "reviews-tuning", Namespace: appNS},
			Spec: apinetworking.ProxyConfig{Selector: &typev1beta1.WorkloadSelector{MatchLabels: map[string]string{"app": "reviews"}},
				Concurrency: wrapperspb.Int32(4)}},
	}
	for _, pc := range pcs {
		if _, err := ic.NetworkingV1beta1().ProxyConfigs(pc.Namespace).Create(ctx, pc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "reviews-1", Labels: map[string]string{"app": "reviews"},
			Annotations: map[string]string{"sidecar.istio.io/proxyCPULimit": "500m"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "ratings-1", Labels: map[string]string{"app": "ratings"}}},
	} {
		p.Spec.Containers = []corev1.Container{{Name: "app", Image: "example/app"}}
		if _, err := kube.Client().CoreV1().Pods(appNS).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return kube, istioNS, appNS
}

func TestProxyConfigExplainKubernetes(t *testing.T) {
	kube, istioNS, appNS := kubeWorld(t)
	flags := []string{"-n", appNS, "--kubeconfig", kube.Kubeconfig, "--istio-namespace", istioNS}
	var o explainOut
	runJSON(t, &o, append([]string{"proxy-config", "explain", "reviews-1"}, flags...)...)
	wantField(t, o, "concurrency", "4", "workload", "ProxyConfig "+appNS+"/reviews-tuning spec.concurrency")
	wantField(t, o, "sidecar.istio.io/proxyCPULimit", "500m", "pod", "Pod "+appNS+"/reviews-1 metadata.annotations[sidecar.istio.io/proxyCPULimit]")
	wantField(t, o, "sidecar.istio.io/logLevel", "error", "namespace", "ProxyConfig "+appNS+"/a-ns")
	wantField(t, o, "proxyMetadata[ISTIO_META_DNS_CAPTURE]", "true", "mesh", "ProxyConfig "+istioNS+"/mesh-defaults spec.environmentVariables")
	wantField(t, o, "terminationDrainDuration", "12s", "MeshConfig", "MeshConfig defaultConfig.terminationDrainDuration")
	wantField(t, o, "holdApplicationUntilProxyStarts", "true", "default", "Trellis default (Istio: false)")
	if len(o.Conflicts) != 1 || o.Conflicts[0].Level != "namespace" || o.Conflicts[0].Chosen != appNS+"/a-ns" ||
		strings.Join(o.Conflicts[0].Ignored, ",") != appNS+"/b-ns" {
		t.Errorf("conflicts = %+v, want namespace level %s/a-ns over b-ns", o.Conflicts, appNS)
	}
	// Without a concurrency, the default CPU limit (2000m) gives two workers.
	runJSON(t, &o, append([]string{"proxy-config", "explain", "ratings-1"}, flags...)...)
	wantField(t, o, "concurrency", "2", "default", "proxy CPU limit 2000m rounded up")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := runCLI(ctx, append([]string{"proxy-config", "explain", "nope"}, flags...)...); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("explaining a missing pod: %v", err)
	}
}

func TestProxyConfigDiffKubernetes(t *testing.T) {
	kube, istioNS, appNS := kubeWorld(t)
	change := filepath.Join(t.TempDir(), "change.yaml")
	writeTestFile(t, change, `apiVersion: networking.istio.io/v1beta1
kind: ProxyConfig
metadata: {name: reviews-tuning, namespace: `+appNS+`}
spec:
  selector: {matchLabels: {app: reviews}}
  concurrency: 6
`)
	flags := []string{"-n", appNS, "--kubeconfig", kube.Kubeconfig, "--istio-namespace", istioNS}
	var d diffOut
	runJSON(t, &d, append([]string{"proxy-config", "diff", "-f", change}, flags...)...)
	if d.Checked != 2 || len(d.Pods) != 1 || d.Pods[0].Pod != appNS+"/reviews-1" || !d.Pods[0].Restart {
		t.Fatalf("diff = %+v; want only %s/reviews-1, restart needed", d, appNS)
	}
	if c := d.Pods[0].setting("concurrency"); c == nil || c.Old != "4" || c.New != "6" || len(d.Pods[0].Settings) != 1 {
		t.Errorf("reviews-1 settings: %+v", d.Pods[0].Settings)
	}
	wantSpecDiff(t, d.Pods[0].Spec, []string{`-      value: "4"`}, []string{`+      value: "6"`})
	if !strings.Contains(d.Pods[0].Spec, "    - name: GOMAXPROCS\n-      value: \"4\"\n+      value: \"6\"\n") {
		t.Errorf("reviews-1 spec diff does not change GOMAXPROCS 4 -> 6:\n%s", d.Pods[0].Spec)
	}
	// Nothing was applied.
	ic := kube.IstioClient(t)
	pc, err := ic.NetworkingV1beta1().ProxyConfigs(appNS).Get(context.Background(), "reviews-tuning", metav1.GetOptions{})
	if err != nil || pc.Spec.GetConcurrency().GetValue() != 4 {
		t.Errorf("the cluster's ProxyConfig changed: %v %v", pc, err)
	}
	// Deleting the winning namespace ProxyConfig lets b-ns win: both pods change log level.
	runJSON(t, &d, append([]string{"proxy-config", "diff", "--delete", appNS + "/a-ns"}, flags...)...)
	if len(d.Pods) != 2 {
		t.Fatalf("delete a-ns: %+v", d)
	}
	for _, p := range d.Pods {
		if c := p.setting("sidecar.istio.io/logLevel"); c == nil || c.Old != "error" || c.New != "debug" || !strings.Contains(c.NewSetBy, appNS+"/b-ns") {
			t.Errorf("%s log level: %+v", p.Pod, c)
		}
		wantSpecDiff(t, p.Spec, []string{"-    - --log-level=error"}, []string{"+    - --log-level=debug"})
		if p.OldConflicts == nil || len(p.Conflicts) != 0 {
			t.Errorf("%s: the conflict should go away: %+v -> %+v", p.Pod, p.OldConflicts, p.Conflicts)
		}
	}
}

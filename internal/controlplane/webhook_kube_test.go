package controlplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

// In Kubernetes mode with the CA, istio-ca-root-cert holds the mesh root in
// every namespace, new ones included, and is put back when edited or
// deleted; the webhook answers on the istiod Service's name with a
// certificate the root verifies, injecting with the MeshConfig's trust
// domain and the istiod Service's addresses.
func TestKubernetesModeKeepsRootCertAndServesWebhook(t *testing.T) {
	kube := kubeenv.Start(t)
	kube.InstallIstioCRDs(t)
	istioNS, appNS := kube.Namespace(t), kube.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := kube.Client().CoreV1().ConfigMaps(istioNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "istio"}, Data: map[string]string{"mesh": "trustDomain: example.org\n"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ready := startRun(t, Options{
		Kubernetes: kube.Config(), IstioNamespace: istioNS,
		CAAddress: "127.0.0.1:0", CADir: t.TempDir(), WebhookAddress: "127.0.0.1:0",
	})
	if ready.WebhookAddr == nil || ready.CA == nil {
		t.Fatalf("Ready without the webhook or the CA: %+v", ready)
	}
	root := string(ready.CA.RootPEM())

	cms := kube.Client().CoreV1().ConfigMaps(appNS)
	waitRoot := func(why string) {
		t.Helper()
		for {
			cm, err := cms.Get(ctx, RootCertConfigMap, metav1.GetOptions{})
			if err == nil && cm.Data[RootCertKey] == root {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: %s never held the root (last: %v)", why, RootCertConfigMap, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitRoot("namespace present at start")
	cm, err := cms.Get(ctx, RootCertConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[RootCertKey] = "tampered"
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRoot("after an edit")
	if err := cms.Delete(ctx, RootCertConfigMap, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitRoot("after a delete")
	appNS = kube.Namespace(t)
	cms = kube.Client().CoreV1().ConfigMaps(appNS)
	waitRoot("namespace created later")

	// The webhook, as the API server reaches it through the istiod Service.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(root))
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "istiod." + istioNS + ".svc"},
	}}
	t.Cleanup(client.CloseIdleConnections)
	pod := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: appNS, Labels: map[string]string{"sidecar.istio.io/inject": "true"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/app"}}},
	}
	raw, _ := json.Marshal(pod)
	review, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Namespace: appNS, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}},
	})
	url := "https://" + ready.WebhookAddr.String() + "/inject"
	var patch string
	for {
		resp, err := client.Post(url, "application/json", bytes.NewReader(review))
		if err != nil {
			t.Fatalf("webhook: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &out); err != nil || out.Response == nil || !out.Response.Allowed {
			t.Fatalf("webhook answered %s: %s", resp.Status, body)
		}
		patch = string(out.Response.Patch)
		// The trust domain follows MeshConfig once the config is applied.
		if strings.Contains(patch, ".svc.example.org") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the injected proxy never got the MeshConfig trust domain:\n%s", patch)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"--xds-address=istiod." + istioNS + ".svc:15010", "--ca-address=istiod." + istioNS + ".svc:15012", "istio-ca-root-cert"} {
		if !strings.Contains(patch, want) {
			t.Errorf("patch lacks %q:\n%s", want, patch)
		}
	}
}

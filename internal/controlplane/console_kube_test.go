package controlplane

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	networking "istio.io/api/networking/v1"
	istiov1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

// In Kubernetes mode a canary weight changed in the console is written to
// the VirtualService in the cluster (where the source reads it back), and an
// invalid one is refused without touching it.
func TestConsoleWritesWeightsBackToTheClusterInKubernetesMode(t *testing.T) {
	kube := kubeenv.Start(t)
	kube.InstallIstioCRDs(t)
	istioNS, ns := kube.Namespace(t), kube.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	istio := kube.IstioClient(t)
	vss := istio.NetworkingV1().VirtualServices(ns)
	if _, err := vss.Create(ctx, &istiov1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews"},
		Spec: networking.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{
				{Destination: &networking.Destination{Host: "reviews"}, Weight: 90},
				{Destination: &networking.Destination{Host: "reviews-canary"}, Weight: 10},
			}}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ready := startRun(t, Options{
		Kubernetes: kube.Config(), IstioNamespace: istioNS,
		UIAddress: "127.0.0.1:0", DebugAddress: "",
	})
	url := "http://" + ready.UIAddr.String() + "/api/virtualservices/" + ns + "/reviews/http/0/weights"

	// The console knows the VirtualService once the source has delivered it.
	var code int
	var body string
	for {
		if code, body = putWeights(t, url, `{"weights": [40, 60]}`); code == http.StatusOK || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != http.StatusOK {
		t.Fatalf("PUT weights: %d %s", code, body)
	}
	weights := func() []int32 {
		vs, err := vss.Get(ctx, "reviews", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var w []int32
		for _, d := range vs.Spec.GetHttp()[0].GetRoute() {
			w = append(w, d.GetWeight())
		}
		return w
	}
	if got := weights(); len(got) != 2 || got[0] != 40 || got[1] != 60 {
		t.Fatalf("weights in the cluster after the change: %v, want [40 60]", got)
	}

	if code, body = putWeights(t, url, `{"weights": [50, 60]}`); code != http.StatusUnprocessableEntity || !strings.Contains(body, "100") {
		t.Fatalf("invalid weights: %d %s, want 422 naming the sum", code, body)
	}
	if got := weights(); got[0] != 40 || got[1] != 60 {
		t.Fatalf("an invalid change reached the cluster: %v", got)
	}
}

func putWeights(t *testing.T, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

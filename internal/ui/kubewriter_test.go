package ui_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	istiov1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
	"github.com/trellis-mesh/trellis/internal/ui"
)

func TestMain(m *testing.M) { os.Exit(kubeenv.Run(m)) }

// A VirtualService read from Kubernetes is written back there: the
// console's PUT updates the object in a real API server, keeping the rest
// of it, and refuses an invalid change without touching it.
func TestKubeWriterUpdatesTheVirtualServiceInTheCluster(t *testing.T) {
	kube := kubeenv.Shared(t)
	kube.InstallIstioCRDs(t)
	ns := kube.Namespace(t)
	ic := kube.IstioClient(t)
	ctx := context.Background()
	api := ic.NetworkingV1().VirtualServices(ns)
	obj, err := api.Create(ctx, &istiov1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: ns, Labels: map[string]string{"team": "books"}},
		Spec: networking.VirtualService{
			Hosts: []string{"reviews"},
			Http: []*networking.HTTPRoute{{
				Name: "canary",
				Route: []*networking.HTTPRouteDestination{
					{Destination: &networking.Destination{Host: "reviews", Subset: "v1"}, Weight: 90},
					{Destination: &networking.Destination{Host: "reviews", Subset: "v3"}, Weight: 10},
				},
				Retries: &networking.HTTPRetry{Attempts: 3},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The console's view of it, as a Kubernetes source would give it.
	tracker := ui.NewConfigTracker("")
	tracker.Accept(model.NewSnapshot(&model.Config{VirtualServices: []*model.VirtualService{{
		Meta: model.Meta{Kind: "VirtualService", Namespace: ns, Name: "reviews"},
		Spec: &obj.Spec,
	}}}))
	srv := httptest.NewServer(ui.New(ui.Options{Config: tracker, Writer: ui.NewKubeWriter(ic)}))
	t.Cleanup(srv.Close)
	url := srv.URL + "/api/virtualservices/" + ns + "/reviews/http/0/weights"

	code, body := put(t, url, `{"weights": [40, 60]}`)
	if code != http.StatusOK || !strings.Contains(body, `"weight":60`) {
		t.Fatalf("PUT: %d %s", code, body)
	}
	got, err := api.Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := got.Spec.GetHttp()[0]
	if r.GetRoute()[0].GetWeight() != 40 || r.GetRoute()[1].GetWeight() != 60 {
		t.Errorf("weights in the cluster: %v/%v, want 40/60", r.GetRoute()[0].GetWeight(), r.GetRoute()[1].GetWeight())
	}
	if r.GetName() != "canary" || r.GetRetries().GetAttempts() != 3 || got.Labels["team"] != "books" {
		t.Errorf("the rest of the object changed: %+v labels %v", r, got.Labels)
	}

	code, body = put(t, url, `{"weights": [50, 40]}`)
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, "VirtualService "+ns+"/reviews") {
		t.Errorf("PUT adding up to 90: %d %s, want 422 naming the object", code, body)
	}
	after, err := api.Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != got.ResourceVersion {
		t.Errorf("a refused change updated the object (resourceVersion %s → %s)", got.ResourceVersion, after.ResourceVersion)
	}
}

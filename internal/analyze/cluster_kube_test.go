package analyze_test

import (
	"context"
	"os"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	istiov1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/analyze"
	"github.com/trellis-mesh/trellis/internal/kubesource"
	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

func TestMain(m *testing.M) { os.Exit(kubeenv.Run(m)) }

// Analyzing a cluster reports an invalid resource as the control plane
// rejects it, with its field path, and writes nothing to the cluster: no
// Event and no status (istioctl analyze only reports too).
func TestClusterAnalysisReportsInvalidResourcesAndWritesNothing(t *testing.T) {
	kube := kubeenv.Shared(t)
	kube.InstallIstioCRDs(t)
	ns := kube.Namespace(t)
	ic := kube.IstioClient(t)
	ctx := context.Background()
	if _, err := ic.NetworkingV1().VirtualServices(ns).Create(ctx, &istiov1.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "bad"},
		Spec: networking.VirtualService{Hosts: []string{"reviews"}, Http: []*networking.HTTPRoute{{Route: []*networking.HTTPRouteDestination{
			{Destination: &networking.Destination{Host: "a"}, Weight: 70},
			{Destination: &networking.Destination{Host: "b"}, Weight: 20},
		}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	in, err := analyze.FromCluster(ctx, kube.Config(), ns)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range in.Errors {
		if e.Kind == "VirtualService" && e.Namespace == ns && e.Name == "bad" && e.Field == "spec.http[0].route[1].weight" {
			found = true
		}
	}
	if !found {
		t.Fatalf("errors %v do not report VirtualService %s/bad's weights", in.Errors, ns)
	}

	time.Sleep(500 * time.Millisecond) // room for writes that should not come
	events, err := kube.Client().CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events.Items {
		if ev.Reason == kubesource.ReasonValidationFailed {
			t.Errorf("analysis recorded an Event on %s %s: %s", ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.Message)
		}
	}
	vs, err := ic.NetworkingV1().VirtualServices(ns).Get(ctx, "bad", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs.Status.GetValidationMessages()) > 0 || len(vs.Status.GetConditions()) > 0 {
		t.Errorf("analysis wrote status: %v", vs.Status.String())
	}
}

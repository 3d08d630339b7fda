package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apinetworking "istio.io/api/networking/v1"
	clientnetworking "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/analyze"
	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

func analyzeTestdata(name string) string {
	return filepath.Join("..", "..", "internal", "analyze", "testdata", name)
}

func TestAnalyzeExitStatusFollowsTheFailureThreshold(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		fails    bool
		has, not []string
	}{
		{"errors fail by default", []string{analyzeTestdata("dangling")}, true,
			[]string{`Error [IST0101] (VirtualService default/reviews`, `Referenced host not found: "reviewz"`, "Warning [IST0173]"}, nil},
		{"warnings and info pass by default", []string{analyzeTestdata("shadowed")}, false,
			[]string{"Warning [IST0130]", "Info [IST0131]"}, nil},
		{"warnings fail at Warning", []string{analyzeTestdata("shadowed"), "--failure-threshold", "warning"}, true,
			[]string{"Warning [IST0130]"}, nil},
		{"output threshold hides info", []string{analyzeTestdata("shadowed"), "--output-threshold", "Warning"}, false,
			[]string{"Warning [IST0130]"}, []string{"IST0131"}},
		{"suppressed errors do not fail", []string{analyzeTestdata("dangling"), "--suppress", "IST0101=VirtualService default/*"}, false,
			[]string{"Warning [IST0173]"}, []string{"IST0101"}},
		{"clean", []string{analyzeTestdata("clean")}, false, []string{"No validation issues found"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCLI(context.Background(), append([]string{"analyze"}, tc.args...)...)
			if (err != nil) != tc.fails {
				t.Fatalf("error %v, want failure %v; output:\n%s", err, tc.fails, out)
			}
			for _, s := range tc.has {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tc.not {
				if strings.Contains(out, s) {
					t.Errorf("output has %q:\n%s", s, out)
				}
			}
		})
	}
}

func TestAnalyzeWritesJSON(t *testing.T) {
	out, err := runCLI(context.Background(), "analyze", analyzeTestdata("invalid"), "-o", "json")
	if err == nil {
		t.Fatal("invalid config analyzed without failure")
	}
	var msgs []analyze.Message
	if err := json.Unmarshal([]byte(out), &msgs); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(msgs) != 2 || msgs[0].Code != "IST0106" || msgs[0].Level != analyze.Error ||
		msgs[0].Resource.Name != "broken" || msgs[0].Field != "spec.http[0].route[0].weight" || msgs[0].Resource.Line == 0 {
		t.Fatalf("messages %+v", msgs)
	}
}

func TestAnalyzeFlagMistakes(t *testing.T) {
	for _, args := range [][]string{
		{"analyze"},
		{"analyze", "dir", "--kubeconfig", "kc"},
		{"analyze", analyzeTestdata("clean"), "--failure-threshold", "fatal"},
		{"analyze", analyzeTestdata("clean"), "-o", "xml"},
		{"analyze", analyzeTestdata("clean"), "--suppress", "IST0101"},
	} {
		if out, err := runCLI(context.Background(), args...); err == nil {
			t.Errorf("%q accepted:\n%s", args, out)
		}
	}
}

// TestAnalyzeClusterReportsDanglingSubset writes a Service with an
// EndpointSlice and its Pod, a DestinationRule and a VirtualService routing
// to a subset the rule lacks through a real API server, and runs
// `trellis analyze --kubeconfig`.
func TestAnalyzeClusterReportsDanglingSubset(t *testing.T) {
	kube := kubeenv.Shared(t)
	kube.InstallIstioCRDs(t)
	ns := kube.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := kube.Client()
	if _, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "reviews"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 9080}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := c.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews-v1", Labels: map[string]string{"app": "reviews", "version": "v1"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example.com/reviews"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.1.0.5", PodIPs: []corev1.PodIP{{IP: "10.1.0.5"}}}
	if _, err := c.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready := true
	name, port, proto := "http", int32(9080), corev1.ProtocolTCP
	if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "reviews-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.5"},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "reviews-v1"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ic := kube.IstioClient(t)
	if _, err := ic.NetworkingV1().DestinationRules(ns).Create(ctx, &clientnetworking.DestinationRule{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews"},
		Spec: apinetworking.DestinationRule{Host: "reviews", Subsets: []*apinetworking.Subset{
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2"}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.NetworkingV1().VirtualServices(ns).Create(ctx, &clientnetworking.VirtualService{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews-route"},
		Spec: apinetworking.VirtualService{Hosts: []string{"reviews"}, Http: []*apinetworking.HTTPRoute{{
			Route: []*apinetworking.HTTPRouteDestination{{Destination: &apinetworking.Destination{Host: "reviews", Subset: "v3"}}}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	out, err := runCLI(ctx, "analyze", "--kubeconfig", kube.Kubeconfig, "-n", ns)
	t.Logf("trellis analyze:\n%s", out)
	if err == nil {
		t.Fatalf("a dangling subset analyzed without failure:\n%s", out)
	}
	for _, want := range []string{
		`Error [IST0101] (VirtualService ` + ns + `/reviews-route) Referenced`,
		`Referenced host+subset in destinationrule not found: "reviews+v3"`,
		// v2 selects no Pod of the Service; v1 selects reviews-v1.
		`Warning [IST0173] (DestinationRule ` + ns + `/reviews) The Subset v2`,
		"The Subset v2 defined",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "The Subset v1") {
		t.Errorf("subset v1 selects reviews-v1, yet reported:\n%s", out)
	}
}

func TestAnalyzeUnreachableClusterGivesUpAfterTimeout(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(context.Background(), "analyze", "--kubeconfig", kc, "--timeout", "1s")
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("error %v, want the deadline; output:\n%s", err, out)
	}
}

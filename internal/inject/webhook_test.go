package inject

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1beta1"
	istionetworking "istio.io/client-go/pkg/apis/networking/v1beta1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellis-mesh/trellis/internal/proxyconfig"
	"github.com/trellis-mesh/trellis/internal/security/ca"
	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

func TestMain(m *testing.M) { os.Exit(kubeenv.Run(m)) }

// TestWebhookInjectsThroughTheAPIServer registers the webhook with a real kube-apiserver, as
// install does (but by URL, since the server runs here), and creates pods through the API.
func TestWebhookInjectsThroughTheAPIServer(t *testing.T) {
	kube := kubeenv.Shared(t)
	kube.InstallIstioCRDs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	client := kube.Client()
	istio := kube.IstioClient(t)

	// The control plane's namespace holds the mesh config; its root namespace is that one.
	system := kube.Namespace(t)
	if _, err := client.CoreV1().ConfigMaps(system).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: MeshConfigMap},
		Data:       map[string]string{"mesh": "rootNamespace: " + system + "\ndefaultConfig:\n  terminationDrainDuration: 20s\n"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	src, err := NewKubeSource(ctx, client, istio, system)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Stop)

	authority, err := ca.LoadOrCreateDir(t.TempDir(), ca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := ServingTLS(authority, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stopServe := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Serve(serveCtx, ln, tlsCfg, NewWebhook(WebhookOptions{Params: testParams(true), Source: src, Logger: testLogger(t)}))
	}()
	t.Cleanup(func() {
		stopServe()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	url := "https://" + ln.Addr().String() + WebhookPath
	mwc := WebhookConfiguration("trellis-test-"+system, admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: authority.RootPEM()})
	if _, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), mwc.Name, metav1.DeleteOptions{})
	})

	shop := kube.Namespace(t)
	setNamespaceLabel(ctx, t, kube, shop, "enabled")
	plain := kube.Namespace(t)

	// A namespace-wide ProxyConfig, created through the API.
	if _, err := istio.NetworkingV1beta1().ProxyConfigs(shop).Create(ctx, &istionetworking.ProxyConfig{
		ObjectMeta: metav1.ObjectMeta{Name: "tuning", Annotations: map[string]string{"sidecar.istio.io/proxyCPU": "300m"}},
		Spec:       networkingapi.ProxyConfig{Concurrency: wrapperspb.Int32(3), EnvironmentVariables: map[string]string{"FROM_PROXYCONFIG": "yes"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ProxyConfig in the webhook's cache", func() bool {
		for _, pc := range src.ProxyConfigs() {
			if pc.Namespace == shop && pc.Name == "tuning" {
				return true
			}
		}
		return false
	})

	// The apiserver picks the webhook configuration up asynchronously: create until injected.
	var stored *corev1.Pod
	waitFor(t, "a pod in the labelled namespace to be injected", func() bool {
		p, err := client.CoreV1().Pods(shop).Create(ctx, testPod("", nil, nil), metav1.CreateOptions{})
		if err != nil {
			t.Logf("create: %v", err)
			return false
		}
		if Injected(p) {
			stored = p
			return true
		}
		_ = client.CoreV1().Pods(shop).Delete(ctx, p.Name, metav1.DeleteOptions{})
		return false
	})

	t.Run("native sidecar with the ProxyConfig's values", func(t *testing.T) {
		ic := stored.Spec.InitContainers
		if len(ic) != 2 || ic[0].Name != InitContainer || ic[1].Name != ProxyContainer {
			t.Fatalf("init containers %v, want [istio-init istio-proxy]", names(ic))
		}
		proxy := ic[1]
		if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("proxy restartPolicy %v, want Always (native sidecar)", proxy.RestartPolicy)
		}
		if got := envValue(proxy, "GOMAXPROCS"); got != "3" {
			t.Errorf("GOMAXPROCS = %q, want the ProxyConfig's concurrency 3", got)
		}
		if got := envValue(proxy, "FROM_PROXYCONFIG"); got != "yes" {
			t.Errorf("FROM_PROXYCONFIG = %q, want yes", got)
		}
		if got := envValue(proxy, "TERMINATION_DRAIN_DURATION"); got != "20s" {
			t.Errorf("TERMINATION_DRAIN_DURATION = %q, want the mesh config's 20s", got)
		}
		if got := proxy.Resources.Requests[corev1.ResourceCPU]; got.Cmp(resource.MustParse("300m")) != 0 {
			t.Errorf("proxy CPU request %s, want the ProxyConfig annotation's 300m", got.String())
		}
		if len(stored.Spec.Containers) != 1 || stored.Spec.Containers[0].Name != "app" {
			t.Errorf("containers %v, want only the app", names(stored.Spec.Containers))
		}
		if stored.Labels["security.istio.io/tlsMode"] != "istio" || stored.Annotations["prometheus.io/port"] != "15020" {
			t.Errorf("labels %v annotations %v: want Istio's tlsMode label and scrape annotations", stored.Labels, stored.Annotations)
		}
	})

	t.Run("injecting the stored pod again changes nothing", func(t *testing.T) {
		eff, _, err := proxyconfig.Resolve(proxyconfig.Input{Pod: stored})
		if err != nil {
			t.Fatal(err)
		}
		again, _, err := Inject(stored, "", eff, testParams(true))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(again, stored) {
			t.Error("second injection changed the pod")
		}
	})

	for _, tc := range []struct {
		name, ns    string
		labels, ann map[string]string
	}{
		{"unlabelled namespace: unchanged", plain, nil, nil},
		{"pod label opt-out: unchanged", shop, map[string]string{PodLabel: "false"}, nil},
		{"deprecated annotation opt-out: unchanged", shop, nil, map[string]string{PodLabel: "false"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := client.CoreV1().Pods(tc.ns).Create(ctx, testPod("", tc.labels, tc.ann), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Spec.InitContainers) != 0 || len(p.Spec.Containers) != 1 || Injected(p) {
				t.Errorf("pod was injected: init %v containers %v", names(p.Spec.InitContainers), names(p.Spec.Containers))
			}
		})
	}

	t.Run("pod opt-in in an unlabelled namespace", func(t *testing.T) {
		p, err := client.CoreV1().Pods(plain).Create(ctx, testPod("", map[string]string{PodLabel: "true"}, nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !Injected(p) {
			t.Errorf("pod not injected: init %v", names(p.Spec.InitContainers))
		}
	})

	t.Run("a bad annotation rejects the pod with the field", func(t *testing.T) {
		_, err := client.CoreV1().Pods(shop).Create(ctx, testPod("", nil, map[string]string{"sidecar.istio.io/proxyCPU": "lots"}), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "sidecar.istio.io/proxyCPU") {
			t.Errorf("create: %v, want a rejection naming sidecar.istio.io/proxyCPU", err)
		}
	})
}

// testLogger sends the webhook's log to the test's.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testPod(name string, labels, annotations map[string]string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations},
		// The ServiceAccount admission plugin, off in kubeenv, sets this before webhooks run;
		// the projected token volume is invalid without it.
		Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "example/app:1"}}},
	}
	if name == "" {
		p.GenerateName = "app-"
	}
	return p
}

func setNamespaceLabel(ctx context.Context, t *testing.T, kube *kubeenv.Env, ns, value string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{NamespaceLabel: value}}})
	if _, err := kube.Client().CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

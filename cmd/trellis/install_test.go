package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/trellis-mesh/trellis/internal/controlplane"
	"github.com/trellis-mesh/trellis/internal/security/ca"
	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
	"github.com/trellis-mesh/trellis/manifests/crds"
)

// renderedDeployment runs `trellis install` and returns its Deployment.
func renderedDeployment(t *testing.T) appsv1.Deployment {
	t.Helper()
	dir := t.TempDir()
	if _, err := ca.LoadOrCreateDir(dir, ca.Options{}); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(context.Background(), "install", "--skip-crds", "--image", "example.com/trellis:test", "--ca-dir", dir)
	if err != nil {
		t.Fatalf("trellis install: %v\n%s", err, out)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			t.Fatalf("no Deployment in the output: %v", err)
		}
		if obj["kind"] != "Deployment" {
			continue
		}
		var dep appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj, &dep); err != nil {
			t.Fatal(err)
		}
		return dep
	}
}

// TestInstalledArgsParseWithControlPlaneCommand keeps the Deployment from
// drifting from the CLI: its command line is accepted by the real
// `trellis controlplane` command's flags, required flags and flag groups,
// and the ports it listens on are the ports the container declares.
func TestInstalledArgsParseWithControlPlaneCommand(t *testing.T) {
	dep := renderedDeployment(t)
	c := dep.Spec.Template.Spec.Containers[0]
	if len(c.Command) != 1 || c.Command[0] != "trellis" {
		t.Fatalf("command %q, want [trellis]", c.Command)
	}
	root := newRootCmd()
	sub, rest, err := root.Find(c.Args)
	if err != nil || sub.Name() != "controlplane" {
		t.Fatalf("args %q do not name the controlplane command: %v", c.Args, err)
	}
	if err := sub.ParseFlags(rest); err != nil {
		t.Fatalf("trellis controlplane rejects the installed args %q: %v", rest, err)
	}
	if err := sub.ValidateRequiredFlags(); err != nil {
		t.Fatalf("installed args: %v", err)
	}
	if err := sub.ValidateFlagGroups(); err != nil {
		t.Fatalf("installed args: %v", err)
	}
	if extra := sub.Flags().Args(); len(extra) > 0 {
		t.Fatalf("stray arguments %q", extra)
	}
	declared := map[string]int32{}
	for _, p := range c.Ports {
		declared[p.Name] = p.ContainerPort
	}
	for flag, port := range map[string]string{"xds-address": "grpc-xds", "ca-address": "https-ca", "debug-address": "http-monitoring",
		"webhook-address": "https-webhook"} {
		got := sub.Flags().Lookup(flag).Value.String()
		if want := fmt.Sprintf(":%d", declared[port]); got != want {
			t.Errorf("--%s=%s, but the container declares %s on %d", flag, got, port, declared[port])
		}
	}
	probe := c.ReadinessProbe.HTTPGet
	if want := sub.Flags().Lookup("debug-address").Value.String(); fmt.Sprintf(":%d", probe.Port.IntVal) != want || probe.Path != "/ready" {
		t.Errorf("readiness probe %s on %d, want /ready on --debug-address %s", probe.Path, probe.Port.IntVal, want)
	}
}

func TestInstallCRDsOnlyPrintsIstiosFile(t *testing.T) {
	out, err := runCLI(context.Background(), "install", "--crds-only")
	if err != nil {
		t.Fatal(err)
	}
	if out != string(crds.YAML) {
		t.Error("--crds-only: want Istio's CRD file exactly")
	}
}

func TestInstallMistakesAreReported(t *testing.T) {
	empty := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"--ca-dir without a CA root", []string{"install", "--image", "x", "--ca-dir", empty}, "pass --ca-bundle FILE"},
		{"--cacerts without a CA root", []string{"install", "--image", "x", "--cacerts", empty}, "pass --ca-bundle FILE"},
		{"missing CA bundle file", []string{"install", "--image", "x", "--ca-bundle", empty + "/nope.pem"}, "--ca-bundle: open"},
		{"no image", []string{"install", "--ca-bundle", "../../internal/install/testdata/root-cert.pem"}, "image: required"},
		{"both CRD switches", []string{"install", "--crds-only", "--skip-crds"}, "none of the others can be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runCLI(context.Background(), tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// With no CA flag and no CA in the default directory, install prints the
// webhooks without caBundle (the control plane fills it in) instead of
// failing; a CA in the default directory is still used.
func TestInstallWithoutCAFlagsLeavesCABundleEmpty(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	hook := func() admissionregistrationv1.MutatingWebhookConfiguration {
		t.Helper()
		out, err := runCLI(context.Background(), "install", "--skip-crds", "--image", "x")
		if err != nil {
			t.Fatalf("trellis install without a CA: %v\n%s", err, out)
		}
		var hook admissionregistrationv1.MutatingWebhookConfiguration
		decodeKind(t, out, "MutatingWebhookConfiguration", &hook)
		return hook
	}
	for _, w := range hook().Webhooks {
		if len(w.ClientConfig.CABundle) != 0 {
			t.Errorf("webhook %s: caBundle %q, want none", w.Name, w.ClientConfig.CABundle)
		}
	}
	// A local CA (`trellis up`'s) is not the cluster's: it is not read.
	dir, err := controlplane.DefaultCADir()
	must(t, err)
	_, err = ca.LoadOrCreateDir(dir, ca.Options{})
	must(t, err)
	for _, w := range hook().Webhooks {
		if len(w.ClientConfig.CABundle) != 0 {
			t.Errorf("webhook %s: caBundle from the local CA directory, want none", w.Name)
		}
	}
}

// decodeKind decodes the first object of kind in install's output into into.
func decodeKind(t *testing.T, out, kind string, into any) {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			t.Fatalf("no %s in the output: %v", kind, err)
		}
		if obj["kind"] == kind {
			must(t, runtime.DefaultUnstructuredConverter.FromUnstructured(obj, into))
			return
		}
	}
}

// TestInstalledControlPlaneBecomesReady runs `trellis controlplane` with the
// installed command line against a real API server (--kubernetes swapped
// for --kubeconfig, $(POD_NAMESPACE) expanded as the kubelet does, loopback
// ports in place of the pod's), with install's MutatingWebhookConfiguration
// registered first (by URL on loopback, its caBundle as install printed
// it). It reaches /ready, the readiness probe's endpoint, serves xDS,
// keeps the webhooks' caBundle equal to its CA's root, put back after a
// reset by hand, injects a Pod created in an istio-injection=enabled
// namespace (so the API server verified the webhook with that caBundle)
// and writes istio-ca-root-cert there. Its CA is the cacerts Secret when
// the user made one (docs/install.md's recipe), else the self-signed root
// it keeps in istio-ca-secret, which install, run with no CA flag, could
// not know: it prints no caBundle and the control plane fills it in.
func TestInstalledControlPlaneBecomesReady(t *testing.T) {
	kube := kubeenv.Shared(t)
	kube.InstallIstioCRDs(t)
	t.Run("cacerts Secret", func(t *testing.T) { testInstalledControlPlane(t, kube, true) })
	t.Run("no CA flag: self-signed root in istio-ca-secret", func(t *testing.T) { testInstalledControlPlane(t, kube, false) })
}

func testInstalledControlPlane(t *testing.T, kube *kubeenv.Env, cacerts bool) {
	istioNS := kube.Namespace(t)
	ctx, cancelAPI := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelAPI()
	t.Setenv("XDG_STATE_HOME", t.TempDir()) // no CA in install's default directory
	args := []string{"install", "--skip-crds", "--image", "example.com/trellis:test", "--namespace", istioNS}
	var root []byte
	if cacerts {
		// The cacerts Secret, made from a self-signed root as docs/install.md
		// does from the user's PKI; install is given its root-cert.pem.
		caDir, files := t.TempDir(), t.TempDir()
		if _, err := ca.LoadOrCreateDir(caDir, ca.Options{}); err != nil {
			t.Fatal(err)
		}
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cacerts"}, Data: map[string][]byte{}}
		for name, from := range map[string]string{"ca-cert.pem": "ca-cert.pem", "ca-key.pem": "ca-key.pem", "root-cert.pem": "ca-cert.pem"} {
			b, err := os.ReadFile(filepath.Join(caDir, from))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(files, name), b, 0o600))
			secret.Data[name] = b
		}
		root = secret.Data["root-cert.pem"]
		if _, err := kube.Client().CoreV1().Secrets(istioNS).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--cacerts", files)
	}
	out, err := runCLI(context.Background(), args...)
	if err != nil {
		t.Fatalf("trellis install: %v\n%s", err, out)
	}
	var (
		dep  appsv1.Deployment
		cm   corev1.ConfigMap
		hook admissionregistrationv1.MutatingWebhookConfiguration
	)
	decodeKind(t, out, "Deployment", &dep)
	decodeKind(t, out, "ConfigMap", &cm)
	decodeKind(t, out, "MutatingWebhookConfiguration", &hook)
	if cm.Data["mesh"] == "" || len(dep.Spec.Template.Spec.Containers) == 0 || len(hook.Webhooks) == 0 {
		t.Fatal("install printed no istio ConfigMap, Deployment or MutatingWebhookConfiguration")
	}
	for _, w := range hook.Webhooks {
		if got := w.ClientConfig.CABundle; string(got) != string(root) {
			t.Fatalf("install printed caBundle %q for %s, want %q", got, w.Name, root)
		}
	}
	if _, err := kube.Client().CoreV1().ConfigMaps(istioNS).Create(ctx, &cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ports := map[string]int{}
	args = nil
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		name, value, _ := strings.Cut(a, "=")
		switch {
		case name == "--kubernetes":
			name, value = "--kubeconfig", kube.Kubeconfig
		case value == "$(POD_NAMESPACE)":
			value = istioNS
		case strings.HasSuffix(name, "-address"):
			ports[name] = freePort(t)
			value = "127.0.0.1:" + strconv.Itoa(ports[name])
		}
		if value == "" {
			args = append(args, a)
		} else {
			args = append(args, name+"="+value)
		}
	}
	if ports["--webhook-address"] == 0 {
		t.Fatalf("installed args %q serve no webhook", args)
	}
	if len(dep.Spec.Template.Spec.Volumes) != 1 || dep.Spec.Template.Spec.Volumes[0].Name != "tmp" {
		t.Errorf("the Deployment mounts %+v; want only its tmp volume (the CA reads its Secrets through the API)",
			dep.Spec.Template.Spec.Volumes)
	}

	// install's webhook configuration, applied before the control plane
	// starts, as `kubectl apply` of install's output does, reached by URL:
	// the API server runs on this host.
	url := fmt.Sprintf("https://127.0.0.1:%d%s", ports["--webhook-address"], *hook.Webhooks[0].ClientConfig.Service.Path)
	for i := range hook.Webhooks {
		hook.Webhooks[i].ClientConfig.Service = nil
		hook.Webhooks[i].ClientConfig.URL = &url
	}
	hooks := kube.Client().AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := hooks.Create(ctx, &hook, metav1.CreateOptions{}); err != nil {
		t.Fatalf("register the webhook: %v", err)
	}
	t.Cleanup(func() { _ = hooks.Delete(context.Background(), hook.Name, metav1.DeleteOptions{}) })

	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var log string
	go func() {
		var err error
		log, err = runCLI(runCtx, args...)
		done <- err
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controlplane: %v\n%s", err, log)
		}
	}
	defer stop()
	fail := func(format string, a ...any) {
		t.Helper()
		stop()
		t.Fatalf(format+"\ncontrol plane log:\n%s", append(a, log)...)
	}

	ready := fmt.Sprintf("http://127.0.0.1:%d/ready", ports["--debug-address"])
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			fail("%s never answered 200 (last: %v)", ready, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports["--xds-address"]))
	if err != nil {
		fail("xDS: %v", err)
	}
	c.Close()
	if !cacerts {
		s, err := kube.Client().CoreV1().Secrets(istioNS).Get(ctx, "istio-ca-secret", metav1.GetOptions{})
		if err != nil {
			fail("no istio-ca-secret: %v", err)
		}
		root = s.Data["ca-cert.pem"]
	}
	waitCABundle := func(why string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			got, err := hooks.Get(ctx, hook.Name, metav1.GetOptions{})
			patched := err == nil
			for _, w := range got.Webhooks {
				patched = patched && string(w.ClientConfig.CABundle) == string(root)
			}
			if patched {
				return
			}
			if time.Now().After(deadline) {
				fail("%s: the webhooks' caBundle never became the CA's root (last: %v)", why, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitCABundle("at start")

	appNS := kube.Namespace(t)
	if _, err := kube.Client().CoreV1().Namespaces().Patch(ctx, appNS, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"istio-injection":"enabled"}}}`), metav1.PatchOptions{}); err != nil {
		fail("label the namespace: %v", err)
	}

	// The API server picks the webhook and its caBundle up within a moment:
	// until then pods come back as sent, or are refused (failurePolicy Fail).
	pods := kube.Client().CoreV1().Pods(appNS)
	var pod *corev1.Pod
	deadline = time.Now().Add(60 * time.Second)
	for i := 0; ; i++ {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("reviews-%d", i), Labels: map[string]string{"app": "reviews"}},
			// What the ServiceAccount admission plugin, off in kubeenv, sets.
			Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "example.com/reviews"}}},
		}
		pod, err = pods.Create(ctx, p, metav1.CreateOptions{})
		if err == nil && hasContainer(pod, "istio-proxy") {
			break
		}
		if time.Now().After(deadline) {
			fail("pod in an istio-injection=enabled namespace not injected (last error: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !hasContainer(pod, "istio-init") {
		t.Errorf("injected pod has no istio-init")
	}
	if pod.Annotations["sidecar.istio.io/status"] == "" {
		t.Errorf("injected pod has no sidecar.istio.io/status annotation")
	}

	deadline = time.Now().Add(60 * time.Second)
	for {
		got, err := kube.Client().CoreV1().ConfigMaps(appNS).Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
		if err == nil && got.Data["root-cert.pem"] == string(root) {
			break
		}
		if time.Now().After(deadline) {
			fail("istio-ca-root-cert in %s never held the CA's root (last: %v)", appNS, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Reset by hand (or by an apply of an older caBundle): patched back.
	reset, err := hooks.Get(ctx, hook.Name, metav1.GetOptions{})
	if err != nil {
		fail("get the webhook: %v", err)
	}
	reset.Webhooks[0].ClientConfig.CABundle = nil
	if _, err := hooks.Update(ctx, reset, metav1.UpdateOptions{}); err != nil {
		fail("reset the caBundle: %v", err)
	}
	waitCABundle("after a reset")

	stop()
	want := "Secret " + istioNS + "/istio-ca-secret"
	if cacerts {
		want = "Secret " + istioNS + "/cacerts"
	}
	if !strings.Contains(log, `root="`+want+`"`) {
		t.Errorf("the CA does not sign with the root in %s:\n%s", want, log)
	}
	if !strings.Contains(log, "sidecar injected") {
		t.Errorf("the webhook did not log the injection:\n%s", log)
	}
}

// hasContainer reports whether the pod runs name, as a container or an
// init container (a native sidecar).
func hasContainer(pod *corev1.Pod, name string) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == name {
				return true
			}
		}
	}
	return false
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

package controlplane

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/install"
	"github.com/trellis-mesh/trellis/internal/kubesource"
	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

// With the webhook on, the control plane fills in the caBundle of install's
// MutatingWebhookConfiguration when it is created after the control plane
// started, with the root of the CA it keeps in istio-ca-secret, and puts it
// back when it is reset; other webhook configurations are left alone.
func TestWebhookCABundleIsPatchedWithTheCARoot(t *testing.T) {
	kube := kubeenv.Start(t)
	kube.InstallIstioCRDs(t) // the webhook's injection source reads ProxyConfigs
	istioNS := kube.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ready := startRun(t, Options{
		Kubernetes: kube.Config(), IstioNamespace: istioNS,
		CAAddress: "127.0.0.1:0", WebhookAddress: "127.0.0.1:0",
	})
	secret, err := kube.Client().CoreV1().Secrets(istioNS).Get(ctx, install.SelfSignedCASecret, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the CA kept no root in %s: %v", install.SelfSignedCASecret, err)
	}
	root := ready.CA.RootPEM()
	if !bytes.Equal(secret.Data["ca-cert.pem"], root) {
		t.Fatalf("the CA's root is not the one in %s", install.SelfSignedCASecret)
	}

	hooks := kube.Client().AdmissionregistrationV1().MutatingWebhookConfigurations()
	url := "https://127.0.0.1:1/inject"
	none := admissionv1.SideEffectClassNone
	mwc := func(name string) *admissionv1.MutatingWebhookConfiguration {
		hook := func(n string) admissionv1.MutatingWebhook {
			return admissionv1.MutatingWebhook{Name: n, ClientConfig: admissionv1.WebhookClientConfig{URL: &url},
				SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
				// Matches nothing: the test's pods never reach it.
				ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"never": "matches"}}}
		}
		return &admissionv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name},
			Webhooks: []admissionv1.MutatingWebhook{hook("namespace.sidecar-injector.istio.io"), hook("object.sidecar-injector.istio.io")}}
	}
	other := mwc("someone-elses-webhook")
	if _, err := hooks.Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := hooks.Create(ctx, mwc(install.WebhookName), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Within half the resync period: the write must follow the event.
	waitPatched := func(why string) {
		t.Helper()
		deadline := time.Now().Add(caBundleResync / 2)
		for {
			got, err := hooks.Get(ctx, install.WebhookName, metav1.GetOptions{})
			patched := err == nil
			for _, w := range got.Webhooks {
				patched = patched && bytes.Equal(w.ClientConfig.CABundle, root)
			}
			if patched {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the caBundle never became the CA's root (last: %v)", why, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitPatched("created with an empty caBundle")

	got, err := hooks.Get(ctx, install.WebhookName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.Webhooks[1].ClientConfig.CABundle = []byte("-----BEGIN CERTIFICATE-----\nbm90IG91ciByb290\n-----END CERTIFICATE-----\n")
	if _, err := hooks.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPatched("after a reset")

	if o, err := hooks.Get(ctx, other.Name, metav1.GetOptions{}); err != nil || len(o.Webhooks[0].ClientConfig.CABundle) != 0 {
		t.Errorf("another webhook configuration was touched (err %v)", err)
	}
}

// Only the Lease holder writes the caBundle, and a replica that takes the
// Lease over patches at once, without waiting for the object to change.
// The two replicas have different roots here (their own CA directories) so
// that the bundle shows who wrote it; installed replicas share one.
func TestWebhookCABundleIsWrittenByTheLeader(t *testing.T) {
	kube := kubeenv.Start(t)
	kube.InstallIstioCRDs(t)
	istioNS := kube.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hooks := kube.Client().AdmissionregistrationV1().MutatingWebhookConfigurations()
	url := "https://127.0.0.1:1/inject"
	none := admissionv1.SideEffectClassNone
	if _, err := hooks.Create(ctx, &admissionv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: install.WebhookName},
		Webhooks: []admissionv1.MutatingWebhook{{Name: "namespace.sidecar-injector.istio.io", ClientConfig: admissionv1.WebhookClientConfig{URL: &url},
			SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
			ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"never": "matches"}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	replica := func(identity string) (root []byte, stop func()) {
		r, stop := startRunStoppable(t, Options{
			Kubernetes: kube.Config(), IstioNamespace: istioNS,
			CAAddress: "127.0.0.1:0", CADir: t.TempDir(), WebhookAddress: "127.0.0.1:0",
			Logger: slog.New(slog.NewTextHandler(t.Output(), nil)).With("replica", identity),
			LeaderElection: kubesource.ElectorOptions{Identity: identity,
				LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 250 * time.Millisecond},
		})
		return r.CA.RootPEM(), stop
	}
	// Within half the resync period: the write must come from an event or
	// the election, not from the periodic re-check.
	waitBundle := func(why string, want []byte) {
		t.Helper()
		deadline := time.Now().Add(caBundleResync / 2)
		for {
			got, err := hooks.Get(ctx, install.WebhookName, metav1.GetOptions{})
			if err == nil && bytes.Equal(got.Webhooks[0].ClientConfig.CABundle, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the caBundle never became the expected root (last: %v)", why, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	rootA, stopA := replica("a")
	waitBundle("a alone", rootA)
	rootB, _ := replica("b")
	if bytes.Equal(rootA, rootB) {
		t.Fatal("the replicas share a root; the test cannot tell who wrote")
	}
	got, err := hooks.Get(ctx, install.WebhookName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.Webhooks[0].ClientConfig.CABundle = nil
	if _, err := hooks.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBundle("reset while a leads", rootA)
	stopA()
	waitBundle("b took the Lease over", rootB)
}

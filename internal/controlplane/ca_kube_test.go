package controlplane

import (
	"context"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/security/ca"
	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

// In Kubernetes mode without a CA directory the control plane keeps its root
// in istio-ca-secret, as istiod, and a pod proves its identity with its
// service-account token (TokenReview): it gets its own SPIFFE identity and
// no other.
func TestKubernetesModeCAKeepsItsRootInASecretAndAcceptsServiceAccountTokens(t *testing.T) {
	kube := kubeenv.Start(t)
	istioNS, appNS := kube.Namespace(t), kube.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ready := startRun(t, Options{
		Kubernetes: kube.Config(), IstioNamespace: istioNS,
		CAAddress: "127.0.0.1:0",
	})

	secret, err := kube.Client().CoreV1().Secrets(istioNS).Get(ctx, ca.SelfSignedSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the root is not kept in %s: %v", ca.SelfSignedSecret, err)
	}
	if got := string(secret.Data[ca.CACertFile]); got != string(ready.CA.RootPEM()) {
		t.Fatalf("the CA signs with another root than %s holds", ca.SelfSignedSecret)
	}

	if _, err := kube.Client().CoreV1().ServiceAccounts(appNS).Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reviews"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expiry := int64(600)
	tr, err := kube.Client().CoreV1().ServiceAccounts(appNS).CreateToken(ctx, "reviews", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{"istio-ca"}, ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id := "spiffe://cluster.local/ns/" + appNS + "/sa/reviews"
	chain, err := requestCert(t, ready, tr.Status.Token, id)
	if err != nil {
		t.Fatalf("a pod's own token was refused: %v", err)
	}
	if got := chain[0].URIs[0].String(); got != id {
		t.Fatalf("certificate for %s, want %s", got, id)
	}
	if _, err := requestCert(t, ready, tr.Status.Token, "spiffe://cluster.local/ns/"+appNS+"/sa/admin"); err == nil {
		t.Fatal("a token got a certificate for another service account")
	}
}

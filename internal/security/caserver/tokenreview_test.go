package caserver

import (
	"context"
	"strings"
	"testing"
	"time"

	pb "istio.io/api/security/v1alpha1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

func TestServiceAccountTokensAreCheckedWithTokenReview(t *testing.T) {
	kube := kubeenv.Shared(t)
	ns := kube.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if _, err := kube.Client().CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// What the kubelet projects into a pod for istio-proxy: a bound token
	// with audience istio-ca (the TokenRequest API).
	tokenFor := func(audience string) string {
		t.Helper()
		expiry := int64(600)
		tr, err := kube.Client().CoreV1().ServiceAccounts(ns).CreateToken(ctx, "reviews", &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &expiry},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	auth, _ := newAuthority(t)
	ts := startServer(t, auth, func(o *Options) {
		o.Authenticators = []Authenticator{TokenReview{Client: kube.Client()}}
	})
	c := ts.client(t, "istiod.istio-system.svc")
	self := "spiffe://cluster.local/ns/" + ns + "/sa/reviews"

	token := tokenFor("istio-ca")
	resp, err := c.CreateCertificate(withToken(t, token), &pb.IstioCertificateRequest{Csr: csrPEM(t, self)})
	if err != nil {
		t.Fatal(err)
	}
	if leaf := parseChain(t, resp.CertChain)[0]; leaf.URIs[0].String() != self {
		t.Fatalf("issued for %v", leaf.URIs)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "kubernetes-tokenreview") || strings.Contains(logs, token) {
		t.Fatalf("want the issuance logged with its authenticator and without the token:\n%s", logs)
	}

	for _, tc := range []struct {
		name, token, csr string
		want             codes.Code
	}{
		{"another service account", token, csrPEM(t, "spiffe://cluster.local/ns/"+ns+"/sa/admin"), codes.PermissionDenied},
		{"token for another audience", tokenFor("https://kubernetes.default.svc"), csrPEM(t, self), codes.Unauthenticated},
		{"not a Kubernetes token", "garbage", csrPEM(t, self), codes.Unauthenticated},
	} {
		_, err := c.CreateCertificate(withToken(t, tc.token), &pb.IstioCertificateRequest{Csr: tc.csr})
		if status.Code(err) != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}

	// Deleting the service account revokes its tokens.
	if err := kube.Client().CoreV1().ServiceAccounts(ns).Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.CreateCertificate(withToken(t, token), &pb.IstioCertificateRequest{Csr: csrPEM(t, self)})
		if status.Code(err) == codes.Unauthenticated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("token of a deleted service account still accepted: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

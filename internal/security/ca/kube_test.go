package ca

import (
	"bytes"
	"context"
	"os"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/testenv/kubeenv"
)

func TestMain(m *testing.M) { os.Exit(kubeenv.Run(m)) }

func kubeContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestKubernetesRootIsCreatedOnceInIstioCASecretAndReadBack(t *testing.T) {
	kube := kubeenv.Shared(t)
	ns := kube.Namespace(t)
	ctx := kubeContext(t)

	// Control planes starting together must end up with one root.
	const n = 3
	auths := make([]*Authority, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { auths[i], errs[i] = LoadKubernetes(ctx, kube.Client(), ns, Options{}) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !bytes.Equal(auths[i].RootPEM(), auths[0].RootPEM()) {
			t.Fatalf("control plane %d has another root", i)
		}
	}
	s, err := kube.Client().CoreV1().Secrets(ns).Get(ctx, SelfSignedSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.Data[CACertFile], auths[0].RootPEM()) || len(s.Data[CAKeyFile]) == 0 {
		t.Fatalf("Secret %s has keys %v, want Istio's %s with the root and %s", SelfSignedSecret, keys(s.Data), CACertFile, CAKeyFile)
	}
	if s.Type != "istio.io/ca-root" {
		t.Fatalf("Secret type %q", s.Type)
	}

	// A restart reads the same root back.
	again, err := LoadKubernetes(ctx, kube.Client(), ns, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.RootPEM(), auths[0].RootPEM()) {
		t.Fatal("restart created a new root")
	}
	chain, err := again.Sign(newCSR(t, "spiffe://cluster.local/ns/default/sa/sleep"), 0)
	if err != nil {
		t.Fatal(err)
	}
	verifyChain(t, chain, auths[0].Root())
}

func TestKubernetesCACertsSecretWinsOverTheSelfSignedRoot(t *testing.T) {
	kube := kubeenv.Shared(t)
	ns := kube.Namespace(t)
	ctx := kubeContext(t)
	root := newTestRoot(t, "Example Root CA")
	inter := newTestCA(t, "Trellis cluster CA", &root, true)
	_, err := kube.Client().CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: CACertsSecret},
		Data: map[string][]byte{
			CACertFile:    encodeCerts(inter.cert),
			CAKeyFile:     inter.keyPEM(t),
			RootCertFile:  encodeCerts(root.cert),
			CertChainFile: append(encodeCerts(inter.cert), encodeCerts(root.cert)...),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := LoadKubernetes(ctx, kube.Client(), ns, Options{})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.Sign(newCSR(t, "spiffe://cluster.local/ns/default/sa/sleep"), 0)
	if err != nil {
		t.Fatal(err)
	}
	verifyChain(t, chain, root.cert)
	if _, err := kube.Client().CoreV1().Secrets(ns).Get(ctx, SelfSignedSecret, metav1.GetOptions{}); err == nil {
		t.Fatal("created istio-ca-secret although cacerts exists")
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

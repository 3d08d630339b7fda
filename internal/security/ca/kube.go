package ca

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Istio's Secrets in the root namespace: the self-signed root istiod creates,
// and the user's plugged-in CA, which wins when present.
const (
	SelfSignedSecret = "istio-ca-secret"
	CACertsSecret    = "cacerts"
	// selfSignedSecretType is the type istiod gives istio-ca-secret.
	selfSignedSecretType corev1.SecretType = "istio.io/ca-root"
)

// LoadKubernetes returns the Authority kept in Secrets of namespace (the
// mesh's root namespace, istio-system by default), as istiod does: the
// user's CA from the cacerts Secret when it exists; otherwise the
// self-signed root in istio-ca-secret, created if absent. When several
// control planes start at once, the first Create wins and the others read
// its root back, so all of them sign with one root.
func LoadKubernetes(ctx context.Context, client kubernetes.Interface, namespace string, opts Options) (*Authority, error) {
	secrets := client.CoreV1().Secrets(namespace)
	plugged, err := secrets.Get(ctx, CACertsSecret, metav1.GetOptions{})
	switch {
	case err == nil:
		b, err := caCertsFromPEM(plugged.Data)
		if err != nil {
			return nil, fmt.Errorf("secret %s/%s: %w", namespace, CACertsSecret, err)
		}
		return newAuthority(b, "Secret "+namespace+"/"+CACertsSecret, opts)
	case !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("secret %s/%s: %w", namespace, CACertsSecret, err)
	}

	s, err := secrets.Get(ctx, SelfSignedSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		s, err = createSelfSignedSecret(ctx, client, namespace, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", namespace, SelfSignedSecret, err)
	}
	b, err := selfSignedFromPEM(s.Data[CACertFile], s.Data[CAKeyFile])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", namespace, SelfSignedSecret, err)
	}
	return newAuthority(b, "Secret "+namespace+"/"+SelfSignedSecret, opts)
}

// createSelfSignedSecret creates a fresh root in istio-ca-secret, or returns
// the one another control plane created first.
func createSelfSignedSecret(ctx context.Context, client kubernetes.Interface, namespace string, opts Options) (*corev1.Secret, error) {
	b, err := newSelfSignedRoot(opts.withDefaults().Now())
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(b.signer)
	if err != nil {
		return nil, err
	}
	secrets := client.CoreV1().Secrets(namespace)
	s, err := secrets.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SelfSignedSecret, Namespace: namespace},
		Type:       selfSignedSecretType,
		Data:       map[string][]byte{CACertFile: encodeCerts(b.cert), CAKeyFile: keyPEM},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return secrets.Get(ctx, SelfSignedSecret, metav1.GetOptions{})
	}
	return s, err
}

package inject

import (
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/security/ca"
)

// WebhookConfigurationName is the MutatingWebhookConfiguration install creates.
const WebhookConfigurationName = "trellis-sidecar-injector"

// ServiceClientConfig points the apiserver at the webhook behind a Service (port: the
// Service's port, 443 as istiod's), trusting caBundle (PEM) for its certificate.
func ServiceClientConfig(service, namespace string, port int32, caBundle []byte) admissionregistrationv1.WebhookClientConfig {
	path := WebhookPath
	return admissionregistrationv1.WebhookClientConfig{
		Service:  &admissionregistrationv1.ServiceReference{Name: service, Namespace: namespace, Path: &path, Port: &port},
		CABundle: caBundle,
	}
}

// WebhookConfiguration is Istio's injector registration: two webhooks on pod CREATE, one for
// namespaces labelled istio-injection=enabled (pods labelled sidecar.istio.io/inject=false are
// not even sent), one for pods labelled sidecar.istio.io/inject=true in namespaces without the
// label. Like Istio: failurePolicy Fail (a pod never starts without its proxy by accident),
// sideEffects None, reinvocationPolicy Never, 10s timeout. Pods opting out only by the
// deprecated annotation are sent and left unchanged by the webhook.
func WebhookConfiguration(name string, client admissionregistrationv1.WebhookClientConfig) *admissionregistrationv1.MutatingWebhookConfiguration {
	hook := func(webhookName string, ns, obj *metav1.LabelSelector) admissionregistrationv1.MutatingWebhook {
		fail := admissionregistrationv1.Fail
		none := admissionregistrationv1.SideEffectClassNone
		never := admissionregistrationv1.NeverReinvocationPolicy
		equivalent := admissionregistrationv1.Equivalent
		timeout := int32(10)
		return admissionregistrationv1.MutatingWebhook{
			Name:         webhookName,
			ClientConfig: client,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{
					APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
				},
			}},
			FailurePolicy:           &fail,
			MatchPolicy:             &equivalent,
			SideEffects:             &none,
			ReinvocationPolicy:      &never,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
			NamespaceSelector:       ns,
			ObjectSelector:          obj,
		}
	}
	req := func(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "sidecar-injector"}},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			hook("namespace.sidecar-injector.trellis.dev",
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req(NamespaceLabel, metav1.LabelSelectorOpIn, "enabled")}},
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req(PodLabel, metav1.LabelSelectorOpNotIn, "false")}}),
			hook("object.sidecar-injector.trellis.dev",
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req(NamespaceLabel, metav1.LabelSelectorOpDoesNotExist)}},
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{req(PodLabel, metav1.LabelSelectorOpIn, "true")}}),
		},
	}
}

// ServiceHosts are the names the apiserver uses for a Service: the webhook's certificate
// must carry the one it dials (service.namespace.svc).
func ServiceHosts(service, namespace string) []string {
	return []string{
		service + "." + namespace + ".svc",
		service + "." + namespace + ".svc.cluster.local",
		service + "." + namespace,
		service,
	}
}

// servingTTL is the webhook certificate's lifetime; it is renewed at half of it.
const servingTTL = 24 * time.Hour

// ServingTLS is a server tls.Config whose certificate the Trellis CA issues for hosts and
// re-issues at half its lifetime. The apiserver trusts it through the CA's root
// (a.RootPEM()), the caBundle of the MutatingWebhookConfiguration.
func ServingTLS(a *ca.Authority, hosts []string) (*tls.Config, error) {
	var (
		mu      sync.Mutex
		current *tls.Certificate
	)
	get := func() (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		if current != nil && time.Until(current.Leaf.NotAfter) > servingTTL/2 {
			return current, nil
		}
		c, err := a.IssueServing(hosts, servingTTL)
		if err != nil {
			if current != nil {
				return current, nil // keep serving the old one until it expires
			}
			return nil, fmt.Errorf("webhook serving certificate: %w", err)
		}
		current = c
		return c, nil
	}
	if _, err := get(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return get() },
	}, nil
}

// FileTLS serves the certificate and key of PEM files (a cert-manager Secret, say), read on
// every handshake (a webhook sees few), so a renewed pair needs no restart.
func FileTLS(certFile, keyFile string) (*tls.Config, error) {
	load := func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("webhook certificate: %w", err)
		}
		return &c, nil
	}
	if _, err := load(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return load() },
	}, nil
}

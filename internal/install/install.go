package install

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/manifests/crds"
)

// Names of what Render creates. The Service `istiod` is an alias of
// ControlPlaneName: Istio's proxies, istioctl and injection templates look
// for istiod.<namespace>.svc.
const (
	DefaultNamespace   = "istio-system"
	DefaultReplicas    = 2
	DefaultTrustDomain = "cluster.local"

	ControlPlaneName = "trellis-controlplane"
	IstiodAlias      = "istiod"
	WebhookName      = "trellis-sidecar-injector"
	// MeshConfigMap is Istio's ConfigMap name; its `mesh` key holds the
	// MeshConfig.
	MeshConfigMap = "istio"
	MeshKey       = "mesh"
	// CACertsSecret is Istio's plugged-in CA Secret (ca-cert.pem,
	// ca-key.pem, root-cert.pem, cert-chain.pem), which the control plane
	// reads through the API when it exists.
	CACertsSecret = "cacerts"
	// SelfSignedCASecret is where the control plane keeps a self-signed
	// root without CACertsSecret (internal/security/ca.LoadKubernetes).
	SelfSignedCASecret = "istio-ca-secret"
	// RootCertConfigMap is Istio's mesh root ConfigMap, which the control
	// plane writes into every namespace for injected proxies.
	RootCertConfigMap = "istio-ca-root-cert"
)

// Istio's control-plane ports, as the Deployment and Services expose them.
const (
	PortXDS        = 15010 // grpc-xds: plaintext ADS
	PortCA         = 15012 // https-ca: Istio's CreateCertificate over TLS (gRPC)
	PortMonitoring = 15014 // http-monitoring: /metrics, /ready, /debug/*
	PortWebhook    = 15017 // https-webhook: POST /inject
	PortConsole    = 15080 // http-console, on the pod's loopback only
	// WebhookServicePort is the Service port the API server calls, 443 as
	// on istiod's Service; it targets PortWebhook.
	WebhookServicePort = 443
)

// Include selects which part of the manifests Render prints.
type Include int

const (
	All          Include = iota // CRDs, then the control plane
	CRDsOnly                    // Istio's CRDs alone
	ControlPlane                // everything but the CRDs
)

// Options are what the manifests vary on.
type Options struct {
	Namespace   string // "" means DefaultNamespace
	Image       string // the trellis image; required unless CRDsOnly
	Replicas    int32  // 0 means DefaultReplicas
	TrustDomain string // MeshConfig trustDomain; "" means DefaultTrustDomain
	// CABundle is the PEM root that signed the webhook's serving
	// certificate; empty leaves the webhooks' caBundle out, for the control
	// plane's leader to fill in with its CA's root.
	CABundle []byte
	Include  Include
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Replicas == 0 {
		o.Replicas = DefaultReplicas
	}
	if o.TrustDomain == "" {
		o.TrustDomain = DefaultTrustDomain
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	if msgs := validation.IsDNS1123Label(o.Namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("namespace %q: %v", o.Namespace, msgs))
	}
	if o.Include == CRDsOnly {
		return errors.Join(errs...)
	}
	if o.Image == "" {
		errs = append(errs, errors.New("image: required (an image with the trellis binary on PATH)"))
	}
	if o.Replicas < 1 {
		errs = append(errs, fmt.Errorf("replicas %d: must be at least 1", o.Replicas))
	}
	if msgs := validation.IsDNS1123Subdomain(o.TrustDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("trust domain %q: %v", o.TrustDomain, msgs))
	}
	if err := checkCABundle(o.CABundle); err != nil {
		errs = append(errs, fmt.Errorf("CA bundle: %w", err))
	}
	return errors.Join(errs...)
}

// checkCABundle accepts nothing (the control plane patches it in) or PEM
// holding certificates only: what the API server needs to verify the
// webhook, and never a private key by mistake.
func checkCABundle(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("blank (leave it out for the control plane to fill in)")
	}
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if len(bytes.TrimSpace(rest)) > 0 {
				return errors.New("not PEM: trailing data after the certificates")
			}
			break
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %q: want CERTIFICATE only", b.Type)
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM CERTIFICATE block")
	}
	return nil
}

// Render returns the manifests as one multi-document YAML: Istio's CRDs as
// istio.io/api ships them, then the control plane's objects in the order
// kubectl apply needs (Namespace first, the webhook last).
func Render(opts Options) ([]byte, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if o.Include != ControlPlane {
		out.Write(crds.YAML)
	}
	if o.Include == CRDsOnly {
		return out.Bytes(), nil
	}
	for _, obj := range objects(o) {
		doc, err := marshal(obj)
		if err != nil {
			return nil, err
		}
		if out.Len() > 0 {
			out.WriteString("---\n")
		}
		out.Write(doc)
	}
	return out.Bytes(), nil
}

// marshal prints obj with sorted keys, without the empty status and
// creationTimestamp that typed objects carry.
func marshal(obj runtime.Object) ([]byte, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("%T: %w", obj, err)
	}
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	if spec, ok := m["spec"].(map[string]any); ok {
		if tmpl, ok := spec["template"].(map[string]any); ok {
			if meta, ok := tmpl["metadata"].(map[string]any); ok {
				delete(meta, "creationTimestamp")
			}
		}
	}
	return yaml.Marshal(m)
}

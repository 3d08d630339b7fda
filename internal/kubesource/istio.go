package kubesource

import (
	"encoding/json"
	"fmt"

	analysisv1alpha1 "istio.io/api/analysis/v1alpha1"
	metav1alpha1 "istio.io/api/meta/v1alpha1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// istioObject is what the validator needs of one Istio resource read
// through the API: who it is and its document.
type istioObject struct {
	kind, apiVersion string
	resource         string // the API resource (plural), for writing status
	meta             *metav1.ObjectMeta
	spec             any // the istio.io/api message, marshalled with its own JSON rules
	status           istioStatus
}

// istioStatus is what the status writer reads of a resource's status
// (IstioStatus; a ServiceEntry's has the same fields and more).
type istioStatus interface {
	GetConditions() []*metav1alpha1.IstioCondition
	GetValidationMessages() []*analysisv1alpha1.AnalysisMessageBase
	GetObservedGeneration() int64
}

// asIstio unwraps an informer's object; ok is false for anything else.
func asIstio(obj any) (o istioObject, ok bool) {
	const (
		networking = "networking.istio.io/v1"
		security   = "security.istio.io/v1"
		telemetry  = "telemetry.istio.io/v1"
	)
	switch v := obj.(type) {
	case *networkingv1.VirtualService:
		return istioObject{"VirtualService", networking, "virtualservices", &v.ObjectMeta, &v.Spec, &v.Status}, true
	case *networkingv1.DestinationRule:
		return istioObject{"DestinationRule", networking, "destinationrules", &v.ObjectMeta, &v.Spec, &v.Status}, true
	case *networkingv1.ServiceEntry:
		return istioObject{"ServiceEntry", networking, "serviceentries", &v.ObjectMeta, &v.Spec, &v.Status}, true
	case *networkingv1.WorkloadEntry:
		return istioObject{"WorkloadEntry", networking, "workloadentries", &v.ObjectMeta, &v.Spec, &v.Status}, true
	case *networkingv1.WorkloadGroup:
		return istioObject{"WorkloadGroup", networking, "workloadgroups", &v.ObjectMeta, &v.Spec, &v.Status}, true
	case *networkingv1.Gateway:
		return istioObject{"Gateway", networking, "gateways", &v.ObjectMeta, &v.Spec, &v.Status}, true
	case *networkingv1.Sidecar:
		return istioObject{"Sidecar", networking, "sidecars", &v.ObjectMeta, &v.Spec, &v.Status}, true
	case *securityv1.PeerAuthentication:
		return istioObject{"PeerAuthentication", security, "peerauthentications", &v.ObjectMeta, &v.Spec, &v.Status}, true
	case *securityv1.AuthorizationPolicy:
		return istioObject{"AuthorizationPolicy", security, "authorizationpolicies", &v.ObjectMeta, &v.Spec, &v.Status}, true
	case *securityv1.RequestAuthentication:
		return istioObject{"RequestAuthentication", security, "requestauthentications", &v.ObjectMeta, &v.Spec, &v.Status}, true
	case *telemetryv1.Telemetry:
		return istioObject{"Telemetry", telemetry, "telemetries", &v.ObjectMeta, &v.Spec, &v.Status}, true
	}
	return istioObject{}, false
}

// key names the object in maps and messages: "Kind namespace/name".
func (o istioObject) key() string { return o.kind + " " + o.meta.Namespace + "/" + o.meta.Name }

// document is the object as the user would have written it in a file:
// apiVersion, kind, the metadata the validator reads, and spec. JSON is
// YAML, so config.ParseObject reads it as it reads files.
func (o istioObject) document() ([]byte, error) {
	spec, err := json.Marshal(o.spec)
	if err != nil {
		return nil, fmt.Errorf("%s: marshal spec: %w", o.key(), err)
	}
	type meta struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Labels      map[string]string `json:"labels,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	type condition struct {
		Type    string `json:"type"`
		Status  string `json:"status"`
		Message string `json:"message,omitempty"`
	}
	type status struct {
		Conditions []condition `json:"conditions"`
	}
	var st *status
	if o.kind == "WorkloadEntry" { // the only kind whose conditions config reads (Healthy)
		for _, c := range o.status.GetConditions() {
			if st == nil {
				st = &status{}
			}
			st.Conditions = append(st.Conditions, condition{c.GetType(), c.GetStatus(), c.GetMessage()})
		}
	}
	return json.Marshal(struct {
		APIVersion string          `json:"apiVersion"`
		Kind       string          `json:"kind"`
		Metadata   meta            `json:"metadata"`
		Spec       json.RawMessage `json:"spec"`
		Status     *status         `json:"status,omitempty"`
	}{o.apiVersion, o.kind, meta{o.meta.Name, o.meta.Namespace, o.meta.Labels, o.meta.Annotations}, spec, st})
}

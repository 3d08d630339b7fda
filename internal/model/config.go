package model

import (
	"fmt"
	"strings"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1beta1 "istio.io/api/networking/v1beta1"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
)

// KubernetesSource is Source.File of Istio resources read from a cluster;
// errors then read "kubernetes: Kind ns/name: field: reason".
const KubernetesSource = "kubernetes"

// RegistrySource begins Source.File of the ServiceEntries and
// WorkloadEntries a service registry makes of Kubernetes Services and Pods
// ("kubernetes: Service ns/name"): not Istio resources a user wrote.
const RegistrySource = "kubernetes: "

// Source says where a resource was read from, so errors can point at it.
type Source struct {
	File string // path as given by the source; "" for non-file sources
	Line int    // 1-based line of the document's first line; 0 if unknown
}

// Registry reports whether the resource is a service registry's.
func (s Source) Registry() bool { return strings.HasPrefix(s.File, RegistrySource) }

func (s Source) String() string {
	if s.File == "" {
		return "<unknown>"
	}
	if s.Line == 0 {
		return s.File
	}
	return fmt.Sprintf("%s:%d", s.File, s.Line)
}

// Meta is the Kubernetes-style metadata every Istio resource carries.
type Meta struct {
	Kind        string // e.g. "VirtualService"
	Namespace   string
	Name        string
	Labels      map[string]string
	Annotations map[string]string
	// Conditions are the resource's status conditions, which controllers
	// write and users do not: Trellis reads a WorkloadEntry's Healthy.
	Conditions []Condition
	Source     Source
}

// Condition is one of a resource's status conditions (Istio's
// IstioCondition): Status is "True", "False" or "Unknown".
type Condition struct {
	Type, Status, Message string
}

// Condition returns the condition of type t, or nil.
func (m Meta) Condition(t string) *Condition {
	for i := range m.Conditions {
		if m.Conditions[i].Type == t {
			return &m.Conditions[i]
		}
	}
	return nil
}

// Key is "Kind namespace/name", the form used in error messages.
func (m Meta) Key() string { return m.Kind + " " + m.Namespace + "/" + m.Name }

// Resource pairs metadata with an Istio API spec. Specs are never mutated
// after a Snapshot is built.
type Resource[T any] struct {
	Meta
	Spec T
}

type (
	VirtualService  = Resource[*networking.VirtualService]
	DestinationRule = Resource[*networking.DestinationRule]
	ServiceEntry    = Resource[*networking.ServiceEntry]
	WorkloadEntry   = Resource[*networking.WorkloadEntry]
	// WorkloadGroup is the template of auto-registered WorkloadEntries
	// (internal/autoregister); it is not translated itself.
	WorkloadGroup = Resource[*networking.WorkloadGroup]
	Gateway       = Resource[*networking.Gateway]
	Sidecar       = Resource[*networking.Sidecar]
	// Telemetry is telemetry.istio.io Telemetry (v1 and v1alpha1 share the schema).
	Telemetry = Resource[*telemetry.Telemetry]
	// The security.istio.io kinds (v1 and v1beta1 share the schema).
	PeerAuthentication    = Resource[*security.PeerAuthentication]
	AuthorizationPolicy   = Resource[*security.AuthorizationPolicy]
	RequestAuthentication = Resource[*security.RequestAuthentication]
	// ProxyConfig is networking.istio.io/v1beta1 ProxyConfig: it shapes injection, not xDS
	// (internal/proxyconfig resolves it; config.ProxyConfigResources converts it).
	ProxyConfig = Resource[*networkingv1beta1.ProxyConfig]
)

// Config is the full set of Istio resources a source loaded. Slices are
// sorted by namespace, then name, so that everything derived from a Config
// is deterministic.
type Config struct {
	Mesh             *meshv1alpha1.MeshConfig
	VirtualServices  []*VirtualService
	DestinationRules []*DestinationRule
	ServiceEntries   []*ServiceEntry
	WorkloadEntries  []*WorkloadEntry
	Gateways         []*Gateway
	Sidecars         []*Sidecar
	Telemetries      []*Telemetry

	PeerAuthentications    []*PeerAuthentication
	AuthorizationPolicies  []*AuthorizationPolicy
	RequestAuthentications []*RequestAuthentication

	ProxyConfigs []*ProxyConfig

	// Pods are a service registry's workloads (Kubernetes Pods), as
	// WorkloadEntries with their readiness as the Ready condition: a
	// registry's ServiceEntries list their ready endpoints inline, and an
	// inline endpoint at a Pod's address in the entry's namespace is that
	// Pod; a user's ServiceEntry workloadSelector selects them too. Empty
	// for the file source.
	Pods []*WorkloadEntry

	// Namespaces are a registry's namespaces (Kubernetes Namespaces) by
	// name, each with its labels (never nil; empty if none): what Istio
	// reads namespace labels for, such as the auto-scope opt-in. Nil for
	// the file source, which has no Namespace objects.
	Namespaces map[string]map[string]string

	// WorkloadGroups are the templates proxies auto-register with.
	WorkloadGroups []*WorkloadGroup
}

// DefaultMesh returns the MeshConfig used when a source gives none, with
// Istio's defaults for the fields Trellis reads.
func DefaultMesh() *meshv1alpha1.MeshConfig {
	return &meshv1alpha1.MeshConfig{
		TrustDomain:   "cluster.local",
		RootNamespace: "istio-system",
		DefaultConfig: &meshv1alpha1.ProxyConfig{
			ProxyAdminPort: 15000,
			StatusPort:     15020,
		},
	}
}

// Package proxyconfig resolves the settings of one workload's sidecar from Istio's ProxyConfig
// hierarchy: the pod's annotations, then a ProxyConfig whose selector matches the pod, then the
// namespace's ProxyConfig (no selector), then the mesh-wide ProxyConfig (no selector, in the root
// namespace), then MeshConfig defaultConfig, then Trellis's defaults. Every effective value keeps
// where it came from, so `trellis proxy-config explain` can say which level set it.
//
// One vocabulary serves every level: the annotations Istio reads on pods (sidecar.istio.io/*,
// traffic.sidecar.istio.io/*, proxy.istio.io/config) are also read on ProxyConfig resources, so a
// namespace or workload can set what Istio's ProxyConfig schema has no field for, while the
// resource stays valid against Istio's CRD.
package proxyconfig

import (
	"time"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1beta1 "istio.io/api/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
)

// Level is where an effective value came from, weakest first.
type Level int

const (
	LevelDefault         Level = iota // Trellis's built-in default
	LevelMeshConfig                   // MeshConfig defaultConfig
	LevelMeshProxyConfig              // a ProxyConfig without selector in the root namespace
	LevelNamespace                    // a ProxyConfig without selector in the pod's namespace
	LevelWorkload                     // a ProxyConfig whose selector matches the pod
	LevelPod                          // the pod's own annotations
)

// Origin names the level and the exact thing that set a value, e.g.
// {LevelWorkload, "ProxyConfig shop/reviews-tuning annotation sidecar.istio.io/proxyCPU"}.
type Origin struct {
	Level  Level
	Setter string
}

// Value is one effective setting and its origin.
type Value[T any] struct {
	V    T
	From Origin
}

// Effective is everything injection and the proxy need from the hierarchy. Strings that hold
// Kubernetes quantities or Istio's comma lists keep Istio's annotation syntax ("" = unset).
type Effective struct {
	ProxyCPU, ProxyCPULimit, ProxyMemory, ProxyMemoryLimit Value[string]
	InitCPU, InitCPULimit, InitMemory, InitMemoryLimit     Value[string]
	// Concurrency is the proxy's worker count; by default the CPU limit rounded up, at least 1.
	Concurrency                                   Value[int]
	LogLevel                                      Value[string] // trace|debug|info|warning|error|critical|off
	ComponentLogLevel                             Value[string] // "misc:error,upstream:debug"
	StatsInclusionPrefixes, StatsInclusionRegexps Value[[]string]
	// Interception, in Istio's annotation syntax: "*" or comma lists of ports / CIDRs.
	IncludeInboundPorts, ExcludeInboundPorts         Value[string]
	IncludeOutboundIPRanges, ExcludeOutboundIPRanges Value[string]
	IncludeOutboundPorts, ExcludeOutboundPorts       Value[string]
	DNSCapture                                       Value[bool]
	HoldApplicationUntilProxyStarts                  Value[bool]
	TerminationDrainDuration                         Value[time.Duration]
	Image                                            Value[string]
	EnvironmentVariables                             Value[map[string]string]

	envFrom map[string]Origin // per key of EnvironmentVariables: see EnvOrigin
}

// Resource is one ProxyConfig as read from a source: Istio's spec plus the metadata that
// placement and precedence need.
type Resource struct {
	Name, Namespace string
	Created         time.Time
	Annotations     map[string]string
	Spec            *networkingv1beta1.ProxyConfig
}

// Input is what Resolve needs; Mesh nil means Istio's default MeshConfig.
type Input struct {
	Mesh          *meshv1alpha1.MeshConfig
	RootNamespace string // MeshConfig rootNamespace; "" means istio-system
	Namespace     *corev1.Namespace
	Pod           *corev1.Pod
	ProxyConfigs  []*Resource
}

// Conflict reports several ProxyConfigs competing at one level: the oldest (then by name) wins,
// deterministically, and the others are named so the user can fix them.
type Conflict struct {
	Level   Level
	Chosen  string   // "namespace/name"
	Ignored []string // "namespace/name", sorted
}

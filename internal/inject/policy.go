package inject

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// The labels and annotations that select pods for injection, Istio's names.
const (
	NamespaceLabel = "istio-injection" // on a Namespace: enabled | disabled
	PodLabel       = "sidecar.istio.io/inject"
	StatusKey      = "sidecar.istio.io/status" // set on injected pods; its presence means "done"
)

// ignoredNamespaces never get sidecars, as in Istio: the cluster's own system namespaces.
var ignoredNamespaces = map[string]bool{
	"kube-system": true, "kube-public": true, "kube-node-lease": true, "local-path-storage": true,
}

// Required says whether pod gets a sidecar, and why (for logs and `trellis inject` messages).
// ns is the pod's namespace, nil when unknown (`trellis inject` on files): then every pod is
// injected unless it opts out, as istioctl kube-inject does.
//
// Istio's rules, in order: hostNetwork pods never (the rules would capture the node's
// traffic); already-injected pods not again; system namespaces never; the pod's own
// sidecar.istio.io/inject (label, else the deprecated annotation) "false" opts out everywhere;
// a namespace labelled istio-injection=disabled gets nothing, even for pods that opt in; a
// namespace labelled enabled injects every other pod; an unlabelled namespace injects only pods
// that opt in with "true". Istio's injector-config neverInjectSelector/alwaysInjectSelector and
// revisions (istio.io/rev) are not supported.
func Required(ns *corev1.Namespace, pod *corev1.Pod) (bool, string) {
	if pod.Spec.HostNetwork {
		return false, "hostNetwork pod"
	}
	if Injected(pod) {
		return false, "already injected"
	}
	if ns != nil && ignoredNamespaces[ns.Name] {
		return false, "system namespace " + ns.Name
	}
	podChoice, set := podOptIn(pod)
	if set && !podChoice {
		return false, "pod opts out (" + PodLabel + ")"
	}
	if ns == nil {
		return true, "namespace labels unknown: injected unless the pod opts out"
	}
	switch ns.Labels[NamespaceLabel] {
	case "enabled":
		return true, "namespace " + ns.Name + " has " + NamespaceLabel + "=enabled"
	case "disabled":
		return false, "namespace " + ns.Name + " has " + NamespaceLabel + "=disabled"
	}
	if podChoice {
		return true, "pod opts in (" + PodLabel + "=true)"
	}
	return false, "neither the namespace nor the pod opts in"
}

// podOptIn reads sidecar.istio.io/inject: the label wins over the deprecated annotation.
// Istio's values: y, yes, true, on mean yes; any other value means no.
func podOptIn(pod *corev1.Pod) (inject, set bool) {
	v, ok := pod.Labels[PodLabel]
	if !ok {
		v, ok = pod.Annotations[PodLabel]
	}
	if !ok {
		return false, false
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "y", "yes", "true", "on":
		return true, true
	}
	return false, true
}

// Injected reports whether pod already carries the sidecar: the status annotation, or a
// container named like ours (a pod injected by hand or by Istio).
func Injected(pod *corev1.Pod) bool {
	if _, ok := pod.Annotations[StatusKey]; ok {
		return true
	}
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, c := range cs {
			if c.Name == ProxyContainer {
				return true
			}
		}
	}
	return false
}

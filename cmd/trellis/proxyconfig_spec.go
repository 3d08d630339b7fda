package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/inject"
	"github.com/trellis-mesh/trellis/internal/proxyconfig"
)

// specContext is how many unchanged lines surround each change of the injected-spec diff:
// enough to see which container and list an env or arg line belongs to.
const specContext = 3

// specDiff is the unified diff between the pod's injected spec under the old and the new
// settings; "" when they are the same.
func specDiff(pod *corev1.Pod, oldE, newE *proxyconfig.Effective, p inject.Params) (string, error) {
	base := uninjected(pod)
	render := func(e *proxyconfig.Effective) (string, error) {
		out, _, err := inject.Inject(base, "", e, p)
		if err != nil {
			return "", fmt.Errorf("injection: %w", err)
		}
		return injectedView(out)
	}
	before, err := render(oldE)
	if err != nil {
		return "", err
	}
	after, err := render(newE)
	if err != nil || before == after {
		return "", err
	}
	return difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(strings.TrimSuffix(before, "\n")), B: difflib.SplitLines(strings.TrimSuffix(after, "\n")),
		FromFile: "injected now", ToFile: "injected after the change", Context: specContext,
	})
}

// injectedView is the part of a pod injection writes, as YAML: metadata, the containers and
// init containers, and the grace period the drain duration sets.
func injectedView(pod *corev1.Pod) (string, error) {
	view := struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations,omitempty"`
			Labels      map[string]string `json:"labels,omitempty"`
		} `json:"metadata"`
		Spec struct {
			InitContainers                []corev1.Container `json:"initContainers,omitempty"`
			Containers                    []corev1.Container `json:"containers"`
			TerminationGracePeriodSeconds *int64             `json:"terminationGracePeriodSeconds,omitempty"`
		} `json:"spec"`
	}{}
	view.Metadata.Annotations, view.Metadata.Labels = pod.Annotations, pod.Labels
	view.Spec.InitContainers, view.Spec.Containers = pod.Spec.InitContainers, pod.Spec.Containers
	view.Spec.TerminationGracePeriodSeconds = pod.Spec.TerminationGracePeriodSeconds
	b, err := yaml.Marshal(view)
	return string(b), err
}

// uninjected is a running pod without what injection added (named by its status annotation),
// so it can be injected again with other settings, as its re-created successor would be.
func uninjected(pod *corev1.Pod) *corev1.Pod {
	raw, ok := pod.Annotations[inject.StatusKey]
	if !ok {
		return pod
	}
	var st struct {
		InitContainers []string `json:"initContainers"`
		Containers     []string `json:"containers"`
		Volumes        []string `json:"volumes"`
	}
	out := pod.DeepCopy()
	delete(out.Annotations, inject.StatusKey)
	if json.Unmarshal([]byte(raw), &st) != nil {
		return out
	}
	drop := func(names []string) func(corev1.Container) bool {
		return func(c corev1.Container) bool { return slices.Contains(names, c.Name) }
	}
	out.Spec.InitContainers = slices.DeleteFunc(out.Spec.InitContainers, drop(st.InitContainers))
	out.Spec.Containers = slices.DeleteFunc(out.Spec.Containers, drop(st.Containers))
	out.Spec.Volumes = slices.DeleteFunc(out.Spec.Volumes, func(v corev1.Volume) bool { return slices.Contains(st.Volumes, v.Name) })
	return out
}

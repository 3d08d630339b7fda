package inject

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/proxyconfig"
)

// FileOptions are `trellis inject`'s inputs besides the YAML.
type FileOptions struct {
	Params       Params
	Mesh         *meshv1alpha1.MeshConfig // nil: Istio's defaults
	ProxyConfigs []*proxyconfig.Resource
}

// docSeparator splits a YAML stream into documents.
var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$\n?`)

// InjectYAML is istioctl kube-inject: every Pod template of a Deployment, StatefulSet,
// DaemonSet, ReplicaSet, Job or CronJob and every bare Pod in the multi-document stream gets the
// sidecar, unless Required says no; every other document passes through byte for byte.
// Namespace labels are unknown here, so pods are injected unless they opt out. The result is
// one document per input document; warnings are prefixed with the document's kind/name.
func InjectYAML(in []byte, opts FileOptions) ([]byte, []string, error) {
	var out bytes.Buffer
	var warnings []string
	for i, doc := range docSeparator.Split(string(in), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		injected, warns, err := injectDoc([]byte(doc), opts)
		if err != nil {
			return nil, warnings, fmt.Errorf("document %d: %w", i+1, err)
		}
		warnings = append(warnings, warns...)
		if out.Len() > 0 {
			out.WriteString("---\n")
		}
		out.Write(injected)
		if !bytes.HasSuffix(injected, []byte("\n")) {
			out.WriteByte('\n')
		}
	}
	return out.Bytes(), warnings, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// injectDoc injects one document, or returns it unchanged.
func injectDoc(doc []byte, opts FileOptions) ([]byte, []string, error) {
	var head struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return nil, nil, err
	}
	var obj any
	var tmpl func() (*metav1.ObjectMeta, *corev1.PodSpec)
	switch head.APIVersion + "/" + head.Kind {
	case "v1/Pod":
		o := &corev1.Pod{}
		obj, tmpl = o, func() (*metav1.ObjectMeta, *corev1.PodSpec) { return &o.ObjectMeta, &o.Spec }
	case "apps/v1/Deployment":
		o := &appsv1.Deployment{}
		obj, tmpl = o, func() (*metav1.ObjectMeta, *corev1.PodSpec) {
			return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
		}
	case "apps/v1/StatefulSet":
		o := &appsv1.StatefulSet{}
		obj, tmpl = o, func() (*metav1.ObjectMeta, *corev1.PodSpec) {
			return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
		}
	case "apps/v1/DaemonSet":
		o := &appsv1.DaemonSet{}
		obj, tmpl = o, func() (*metav1.ObjectMeta, *corev1.PodSpec) {
			return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
		}
	case "apps/v1/ReplicaSet":
		o := &appsv1.ReplicaSet{}
		obj, tmpl = o, func() (*metav1.ObjectMeta, *corev1.PodSpec) {
			return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
		}
	case "batch/v1/Job":
		o := &batchv1.Job{}
		obj, tmpl = o, func() (*metav1.ObjectMeta, *corev1.PodSpec) {
			return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
		}
	case "batch/v1/CronJob":
		o := &batchv1.CronJob{}
		obj, tmpl = o, func() (*metav1.ObjectMeta, *corev1.PodSpec) {
			return &o.Spec.JobTemplate.Spec.Template.ObjectMeta, &o.Spec.JobTemplate.Spec.Template.Spec
		}
	default:
		return doc, nil, nil
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", head.Kind, head.Metadata.Name, err)
	}
	meta, spec := tmpl()
	ns := head.Metadata.Namespace
	if ns == "" {
		ns = "default"
	}
	pod := &corev1.Pod{ObjectMeta: *meta, Spec: *spec}
	pod.Namespace = ns
	// A template's pod has no name yet: errors then name the workload.
	pod.Name = head.Metadata.Name
	if ok, _ := Required(nil, pod); !ok {
		return doc, nil, nil
	}
	where := head.Kind + " " + ns + "/" + head.Metadata.Name
	eff, _, err := proxyconfig.Resolve(proxyconfig.Input{
		Mesh:          opts.Mesh,
		RootNamespace: opts.Mesh.GetRootNamespace(),
		Namespace:     &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		Pod:           pod,
		ProxyConfigs:  opts.ProxyConfigs,
	})
	if err != nil {
		return nil, nil, err // names the resource and field already
	}
	injected, warns, err := Inject(pod, head.Metadata.Name, eff, opts.Params)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", where, err)
	}
	for i := range warns {
		warns[i] = where + ": " + warns[i]
	}
	out, err := patchTemplate(doc, head.Kind, pod, injected)
	return out, warns, err
}

// patchTemplate writes the injection into the document's own YAML: only the fields injection
// changed are replaced, so the rest reads as the user wrote it (no defaults or empty status).
func patchTemplate(doc []byte, kind string, pod, injected *corev1.Pod) ([]byte, error) {
	orig, err := toMap(pod)
	if err != nil {
		return nil, err
	}
	mod, err := toMap(injected)
	if err != nil {
		return nil, err
	}
	// The namespace was filled in for Resolve; it is not part of the template.
	ops := diff(orig, mod)
	var raw map[string]any
	if err := yaml.Unmarshal(doc, &raw); err != nil {
		return nil, err
	}
	target := raw
	path := templatePaths[kind]
	for _, k := range path {
		next, _ := target[k].(map[string]any)
		if next == nil {
			next = map[string]any{}
			target[k] = next
		}
		target = next
	}
	apply(target, ops)
	return yaml.Marshal(raw)
}

// templatePaths lead from a workload document to its pod template.
var templatePaths = map[string][]string{
	"Pod":         nil,
	"Deployment":  {"spec", "template"},
	"StatefulSet": {"spec", "template"},
	"DaemonSet":   {"spec", "template"},
	"ReplicaSet":  {"spec", "template"},
	"Job":         {"spec", "template"},
	"CronJob":     {"spec", "jobTemplate", "spec", "template"},
}

package proxyconfig

import (
	"sort"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Validate checks one ProxyConfig on its own, as a config source loads it: every annotation
// of the vocabulary, spec.concurrency and spec.selector. It applies the same checks Resolve
// does, so a resource that passes here never fails Resolve (which also checks pods and the
// MeshConfig). Errors are sorted by field.
func Validate(pc *Resource) []*FieldError {
	r := resolver{e: Defaults()}
	r.applyResource(pc, LevelNamespace)
	res := "ProxyConfig " + pc.Namespace + "/" + pc.Name
	sel := pc.Spec.GetSelector()
	if sel != nil && len(sel.GetMatchLabels()) == 0 {
		// Istio rejects it: an empty selector would silently make the resource namespace-wide.
		r.fail(res, "spec.selector.matchLabels", "", "must not be empty; leave spec.selector out for a namespace-wide ProxyConfig")
	}
	for k, v := range sel.GetMatchLabels() {
		path := "spec.selector.matchLabels[" + k + "]"
		for _, msg := range validation.IsQualifiedName(k) {
			r.fail(res, path, k, "label key: "+msg)
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			r.fail(res, path, v, "label value: "+msg)
		}
	}
	out := make([]*FieldError, 0, len(r.errs))
	for _, err := range r.errs {
		out = append(out, err.(*FieldError))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Field < out[j].Field })
	return out
}

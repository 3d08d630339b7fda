package model

// TelemetriesFor returns the Telemetry resources that apply to a workload in ns with labels, in
// Istio's order of precedence, weakest first: the root namespace's selector-less one (mesh-wide),
// the namespace's selector-less one, then one whose selector matches the workload. Where several
// qualify at a level, the first by name wins (Istio takes the oldest).
func (s *Snapshot) TelemetriesFor(ns string, labels map[string]string) []*Telemetry {
	var root, nsDefault, workload *Telemetry
	rootNS := s.Config.Mesh.GetRootNamespace()
	for _, t := range s.Config.Telemetries {
		sel := t.Spec.GetSelector().GetMatchLabels()
		switch {
		case t.Namespace == ns && len(sel) > 0 && LabelsMatch(sel, labels) && workload == nil:
			workload = t
		case t.Namespace == ns && len(sel) == 0 && ns != rootNS && nsDefault == nil:
			nsDefault = t
		case t.Namespace == rootNS && len(sel) == 0 && root == nil:
			root = t
		}
	}
	var out []*Telemetry
	for _, t := range []*Telemetry{root, nsDefault, workload} {
		if t != nil {
			out = append(out, t)
		}
	}
	return out
}

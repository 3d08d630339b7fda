package model

import "slices"

// NewSnapshotFrom is NewSnapshot(cfg), reusing prev's services for the
// ServiceEntries that are the same objects as in prev.Config and whose
// workloads (selected WorkloadEntries, Pods at their inline endpoints) are
// the same objects too: after a one-file change only the services it
// touches are rebuilt. Results equal NewSnapshot's. It falls back to
// NewSnapshot when prev is nil or a view, or the ServiceEntries or the
// WorkloadEntries or Pods are not the same list in the same order (up to
// changed objects with unchanged names and hosts).
func NewSnapshotFrom(prev *Snapshot, cfg *Config) *Snapshot {
	if prev == nil || prev.full != nil {
		return NewSnapshot(cfg)
	}
	pc := prev.Config
	if len(pc.ServiceEntries) != len(cfg.ServiceEntries) {
		return NewSnapshot(cfg)
	}
	dirty := map[*ServiceEntry]bool{}
	for i, se := range cfg.ServiceEntries {
		old := pc.ServiceEntries[i]
		if se == old {
			continue
		}
		if se.Namespace != old.Namespace || se.Name != old.Name || !slices.Equal(se.Spec.GetHosts(), old.Spec.GetHosts()) {
			return NewSnapshot(cfg) // host ownership may move
		}
		dirty[se] = true
	}
	markWorkloads := func(a, b []*WorkloadEntry, pods bool) bool {
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if a[i] == b[i] {
				continue
			}
			if a[i].Namespace != b[i].Namespace || a[i].Name != b[i].Name {
				return false
			}
			for _, we := range []*WorkloadEntry{a[i], b[i]} {
				for _, se := range cfg.ServiceEntries {
					if se.Namespace == we.Namespace && usesWorkload(se, we, pods) {
						dirty[se] = true
					}
				}
			}
		}
		return true
	}
	if !markWorkloads(pc.WorkloadEntries, cfg.WorkloadEntries, false) || !markWorkloads(pc.Pods, cfg.Pods, true) {
		return NewSnapshot(cfg)
	}
	var drs drIndex
	if slices.Equal(pc.DestinationRules, cfg.DestinationRules) {
		drs = prev.drs
	}
	return newSnapshot(cfg, func(se *ServiceEntry, host string) *Service {
		if dirty[se] {
			return nil
		}
		if svc := prev.byHost[host]; svc != nil && svc.Entry == se {
			return svc
		}
		return nil
	}, drs)
}

// usesWorkload: se's endpoints may come from we, of its namespace: a Pod
// at one of its inline endpoints, or a workload its selector matches (a
// Pod only for a user's ServiceEntry, as endpointsOf selects).
func usesWorkload(se *ServiceEntry, we *WorkloadEntry, pod bool) bool {
	if sel := se.Spec.GetWorkloadSelector().GetLabels(); len(sel) > 0 && (!pod || !se.Source.Registry()) && LabelsMatch(sel, we.Spec.GetLabels()) {
		return true
	}
	if pod {
		for _, ep := range se.Spec.GetEndpoints() {
			if ep.GetAddress() == we.Spec.GetAddress() {
				return true
			}
		}
	}
	return false
}

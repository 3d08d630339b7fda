package model

import (
	"slices"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

// A WorkloadEntry with health checks is an endpoint only while its Healthy
// condition is True (istiod's isHealthy); one without is always. A health
// change is an endpoint-only change of the services selecting it.
func TestHealthCheckedWorkloadIsAnEndpointOnlyWhileHealthy(t *testing.T) {
	vm := func(conds ...Condition) *WorkloadEntry {
		m := meta("WorkloadEntry", "vms", "vm-10.9.0.7")
		m.Annotations = map[string]string{HealthChecksAnnotation: "true"}
		m.Conditions = conds
		return &WorkloadEntry{Meta: m, Spec: &networking.WorkloadEntry{Address: "10.9.0.7", Labels: map[string]string{"app": "vm"}}}
	}
	plain := &WorkloadEntry{Meta: meta("WorkloadEntry", "vms", "plain"),
		Spec: &networking.WorkloadEntry{Address: "10.9.0.8", Labels: map[string]string{"app": "vm"}}}
	snapshot := func(we *WorkloadEntry) *Snapshot {
		return NewSnapshot(&Config{
			ServiceEntries: []*ServiceEntry{{Meta: meta("ServiceEntry", "vms", "vm-svc"), Spec: &networking.ServiceEntry{
				Hosts:            []string{"vm-svc.vms.svc.cluster.local"},
				Ports:            []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
				WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "vm"}},
			}}},
			WorkloadEntries: []*WorkloadEntry{plain, we},
		})
	}
	addrs := func(s *Snapshot) []string {
		var out []string
		for _, ep := range s.Service("vm-svc.vms.svc.cluster.local").Endpoints {
			out = append(out, ep.Address)
		}
		return out
	}
	healthy := Condition{Type: ConditionHealthy, Status: "True"}
	failing := Condition{Type: ConditionHealthy, Status: "False", Message: "connection refused"}
	steps := []struct {
		name string
		we   *WorkloadEntry
		want []string
	}{
		{"no report yet", vm(), []string{"10.9.0.8"}},
		{"healthy", vm(healthy), []string{"10.9.0.8", "10.9.0.7"}},
		{"failing", vm(failing), []string{"10.9.0.8"}},
		{"another condition only", vm(Condition{Type: "Reconciled", Status: "True"}), []string{"10.9.0.8"}},
	}
	var prev *Snapshot
	for _, s := range steps {
		snap := snapshot(s.we)
		if got := addrs(snap); !slices.Equal(got, s.want) {
			t.Errorf("%s: endpoints %v, want %v", s.name, got, s.want)
		}
		if from := addrs(NewSnapshotFrom(prev, snap.Config)); !slices.Equal(from, s.want) {
			t.Errorf("%s: NewSnapshotFrom's endpoints %v, want %v", s.name, from, s.want)
		}
		if prev != nil {
			ch, ok := EndpointDelta(prev, snap)
			changed := !slices.Equal(addrs(prev), s.want)
			if !ok || slices.Contains(ch.Hosts, "vm-svc.vms.svc.cluster.local") != changed {
				t.Errorf("%s: EndpointDelta = %+v, %v; want the service's endpoints changed: %v", s.name, ch, ok, changed)
			}
		}
		prev = snap
	}

	// A failing workload still serves its services itself: its proxy's
	// inbound side does not come and go with the probe.
	failingVM := vm(failing)
	if svcs := snapshot(failingVM).ServicesOf(failingVM); len(svcs) != 1 || svcs[0].EndpointOf(failingVM) == nil {
		t.Errorf("ServicesOf(failing workload) = %v, want its service, with its endpoint", svcs)
	}

	// Without the annotation (or with it off) conditions do not matter.
	off := vm(failing)
	off.Annotations[HealthChecksAnnotation] = "false"
	if !WorkloadHealthy(off) || !WorkloadHealthy(plain) {
		t.Error("a workload without health checks must always be healthy")
	}
}

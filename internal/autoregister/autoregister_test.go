package autoregister

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/testenv/adstest"
)

func TestEntryNameIsIstios(t *testing.T) {
	for _, tc := range []struct{ group, ip, network, want string }{
		{"vm", "10.0.5.7", "", "vm-10.0.5.7"},
		{"vm", "fd00::7", "", "vm-fd00--7"},
		{"vm", "10.0.5.7", "net1", "vm-10.0.5.7-net1"},
	} {
		if got := EntryName(tc.group, tc.ip, tc.network); got != tc.want {
			t.Errorf("EntryName(%q, %q, %q) = %q, want %q", tc.group, tc.ip, tc.network, got, tc.want)
		}
	}
}

func vmNode(ip string, labels map[string]string) *corev3.Node {
	n := adstest.Node("sidecar~"+ip+"~vm-1.vms~vms.svc.cluster.local", labels)
	n.Metadata.Fields[GroupMetadata] = structpb.NewStringValue("vm")
	return n
}

// A reconnect within the grace period keeps the entry; the labels are the
// template's, the group's and the proxy's, in rising precedence.
func TestReconnectWithinGraceKeepsEntry(t *testing.T) {
	c := New(Options{GracePeriod: 10 * time.Second, Identity: "cp-0"})
	c.SetGroups([]*model.WorkloadGroup{{Meta: model.Meta{Kind: "WorkloadGroup", Namespace: "vms", Name: "vm"},
		Spec: &networking.WorkloadGroup{
			Metadata: &networking.WorkloadGroup_ObjectMeta{Labels: map[string]string{"app": "vm", "tier": "group"}},
			Template: &networking.WorkloadEntry{Labels: map[string]string{"tier": "template", "t": "1"}, Ports: map[string]uint32{"http": 8080}}}}})
	node := vmNode("10.9.0.7", map[string]string{"tier": "proxy"})
	t0 := time.Now()
	c.OnConnect(node)
	c.update(t0)
	es := c.Entries()
	if len(es) != 1 || es[0].Name != "vm-10.9.0.7" || es[0].Spec.GetAddress() != "10.9.0.7" {
		t.Fatalf("entries = %v", es)
	}
	if l := es[0].Spec.GetLabels(); l["app"] != "vm" || l["tier"] != "proxy" || l["t"] != "1" {
		t.Errorf("labels = %v, want app=vm (group), tier=proxy (proxy wins), t=1 (template)", l)
	}
	c.OnDisconnect(node.GetId())
	c.update(t0.Add(5 * time.Second))
	if len(c.Entries()) != 1 {
		t.Fatal("entry gone within the grace period")
	}
	c.OnConnect(node) // reconnect
	if _, changed := c.update(t0.Add(30 * time.Second)); len(c.Entries()) != 1 {
		t.Fatalf("entry dropped after a reconnect within the grace period (changed %v)", changed)
	}
	c.OnDisconnect(node.GetId())
	dis := time.Now()
	c.update(dis.Add(9 * time.Second))
	if len(c.Entries()) != 1 {
		t.Fatal("entry gone before the grace period ended")
	}
	c.update(dis.Add(11 * time.Second))
	if len(c.Entries()) != 0 {
		t.Fatal("entry kept after the grace period")
	}
}

func TestStaleFollowsIstiodsCleanupRules(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	at := func(ago time.Duration) string { return now.Add(-ago).Format(time.RFC3339Nano) }
	const grace, age = 10 * time.Second, 30 * time.Minute
	for _, tc := range []struct {
		name string
		ann  map[string]string
		age  time.Duration
		want bool
	}{
		{"disconnected within grace", map[string]string{GroupAnnotation: "vm", ConnectedAtAnnotation: at(time.Hour), DisconnectedAtAnnotation: at(5 * time.Second)}, age, false},
		{"disconnected past grace", map[string]string{GroupAnnotation: "vm", ConnectedAtAnnotation: at(time.Hour), DisconnectedAtAnnotation: at(11 * time.Second)}, age, true},
		{"connected for less than 1.5 max ages", map[string]string{GroupAnnotation: "vm", ConnectedAtAnnotation: at(44 * time.Minute)}, age, false},
		{"connected for more than 1.5 max ages", map[string]string{GroupAnnotation: "vm", ConnectedAtAnnotation: at(46 * time.Minute)}, age, true},
		{"connected long ago, no max age", map[string]string{GroupAnnotation: "vm", ConnectedAtAnnotation: at(48 * time.Hour)}, 0, false},
		{"not auto-registered", map[string]string{ConnectedAtAnnotation: at(48 * time.Hour), DisconnectedAtAnnotation: at(time.Hour)}, age, false},
		{"unreadable time", map[string]string{GroupAnnotation: "vm", DisconnectedAtAnnotation: "yesterday"}, age, false},
	} {
		if got := Stale(tc.ann, now, grace, tc.age); got != tc.want {
			t.Errorf("%s: Stale = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// probingNode is a VM proxy whose PROXY_CONFIG has a readinessProbe, as
// Istio's agent sends it.
func probingNode(ip string) *corev3.Node {
	n := vmNode(ip, nil)
	probe, err := structpb.NewStruct(map[string]any{"readinessProbe": map[string]any{"httpGet": map[string]any{"port": 8080.0}}})
	if err != nil {
		panic(err)
	}
	n.Metadata.Fields["PROXY_CONFIG"] = structpb.NewStructValue(probe)
	return n
}

// A proxy with a readinessProbe gets an entry with health checks enabled,
// whose Healthy condition follows its reports and survives a reconnect;
// a proxy without one gets neither, whatever it reports.
func TestEntryHealthFollowsTheProxysReports(t *testing.T) {
	c := New(Options{Identity: "cp-0"})
	c.SetGroups([]*model.WorkloadGroup{{Meta: model.Meta{Kind: "WorkloadGroup", Namespace: "vms", Name: "vm"},
		Spec: &networking.WorkloadGroup{Template: &networking.WorkloadEntry{Ports: map[string]uint32{"http": 8080}}}}})
	prober, plain := probingNode("10.9.0.7"), vmNode("10.9.0.8", nil)
	c.OnConnect(prober)
	c.OnConnect(plain)
	entry := func(name string) *model.WorkloadEntry {
		t.Helper()
		c.update(time.Now())
		for _, e := range c.Entries() {
			if e.Name == name {
				return e
			}
		}
		t.Fatalf("no entry %s in %v", name, c.Entries())
		return nil
	}
	healthy := func(step string, want bool) {
		t.Helper()
		if got := model.WorkloadHealthy(entry("vm-10.9.0.7")); got != want {
			t.Errorf("%s: healthy = %v, want %v (conditions %+v)", step, got, want, entry("vm-10.9.0.7").Conditions)
		}
	}
	if e := entry("vm-10.9.0.7"); e.Annotations[model.HealthChecksAnnotation] != "true" {
		t.Fatalf("annotations %v: want %s", e.Annotations, model.HealthChecksAnnotation)
	}
	healthy("before the first report", false)
	c.OnHealth(prober.GetId(), true, "")
	healthy("reported healthy", true)
	c.OnDisconnect(prober.GetId())
	c.OnConnect(prober)
	healthy("after a reconnect", true)
	c.OnHealth(prober.GetId(), false, "connection refused")
	healthy("reported unhealthy", false)
	if cond := entry("vm-10.9.0.7").Condition(model.ConditionHealthy); cond == nil || cond.Message != "connection refused" {
		t.Errorf("condition %+v: want the probe's error as its message", cond)
	}

	c.OnHealth(plain.GetId(), false, "ignored")
	if e := entry("vm-10.9.0.8"); e.Annotations[model.HealthChecksAnnotation] != "" || len(e.Conditions) != 0 || !model.WorkloadHealthy(e) {
		t.Errorf("a proxy without a probe: annotations %v, conditions %v; want neither, and healthy", e.Annotations, e.Conditions)
	}
	c.OnHealth("sidecar~10.9.0.99~x.vms~vms.svc.cluster.local", true, "") // not registered: ignored
}

package autoscope_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/autoscope"
	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/translate"
	"github.com/trellis-mesh/trellis/internal/ui"
)

// mesh is nsCount namespaces of perNS services, one HTTP port and three
// inline endpoints each (10.<ns>.<svc>.1-3).
func mesh(nsCount, perNS int, m *meshv1alpha1.MeshConfig) *model.Config {
	cfg := &model.Config{Mesh: m}
	for n := range nsCount {
		ns := fmt.Sprintf("ns-%02d", n)
		for s := range perNS {
			name := fmt.Sprintf("svc-%02d", s)
			se := &networking.ServiceEntry{
				Hosts:      []string{name + "." + ns + ".svc.cluster.local"},
				Location:   networking.ServiceEntry_MESH_INTERNAL,
				Resolution: networking.ServiceEntry_STATIC,
				Ports:      []*networking.ServicePort{{Number: 8080, Name: "http", Protocol: "HTTP"}},
			}
			for e := range 3 {
				se.Endpoints = append(se.Endpoints, &networking.WorkloadEntry{Address: fmt.Sprintf("10.%d.%d.%d", n, s, e+1)})
			}
			cfg.ServiceEntries = append(cfg.ServiceEntries, &model.ServiceEntry{Meta: model.Meta{Kind: "ServiceEntry", Namespace: ns, Name: name}, Spec: se})
		}
	}
	return cfg
}

// calls is what the scraper reports for ns-00/client calling each
// destination (a service host, or an address for passthrough traffic).
func calls(dsts ...string) *ui.Traffic {
	t := &ui.Traffic{Nodes: []ui.Node{{ID: "ns-00/client", Namespace: "ns-00", Workload: "client", Kind: ui.KindWorkload}}}
	for _, d := range dsts {
		t.Nodes = append(t.Nodes, ui.Node{ID: d, Service: d, Kind: ui.KindService})
		t.Edges = append(t.Edges, ui.Edge{ID: "ns-00/client>" + d, Source: "ns-00/client", Target: d, RPS: 1})
	}
	return t
}

var client = &model.Proxy{ID: "sidecar~10.99.0.1~client.ns-00~ns-00.svc.cluster.local", Type: model.SidecarProxy,
	IP: "10.99.0.1", Name: "client", Namespace: "ns-00", Interception: model.InterceptRedirect}

func build(t *testing.T, cfg *model.Config, l *autoscope.Learner) *translate.Resources {
	t.Helper()
	snap := model.NewSnapshot(cfg)
	if l != nil {
		translate.SetAutoScope(snap, l.Sidecars(snap))
	}
	res, err := translate.Build(snap, client)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func outbound(res *translate.Resources) []string {
	var out []string
	for _, c := range res.Clusters {
		if strings.HasPrefix(c.GetName(), "outbound|") {
			out = append(out, c.GetName())
		}
	}
	return out
}

func size(res *translate.Resources) (n int) {
	for _, m := range res.Listeners {
		n += proto.Size(m)
	}
	for _, m := range res.Routes {
		n += proto.Size(m)
	}
	for _, m := range res.Clusters {
		n += proto.Size(m)
	}
	for _, m := range res.Endpoints {
		n += proto.Size(m)
	}
	return n
}

// The figures are logged for docs/scoping.md
// (go test ./internal/autoscope -run TestLearnedScope -v).
func TestLearnedScopeIsOwnNamespacePlusObservedServices(t *testing.T) {
	cfg := mesh(20, 10, model.DefaultMesh())
	snap := model.NewSnapshot(cfg)
	l := autoscope.New(autoscope.Options{Namespaces: []string{"ns-00"}})
	// One service by name, two through the passthrough: by a short Host
	// header and by an endpoint address.
	if !l.Observe(calls("svc-01.ns-05.svc.cluster.local", "svc-02.ns-07:8080", "10.9.3.2:8080"), snap, time.Now()) {
		t.Fatal("Observe: no change after the first calls")
	}
	full, scoped := build(t, cfg, nil), build(t, cfg, l)
	got := outbound(scoped)
	want := []string{"outbound|8080||svc-01.ns-05.svc.cluster.local", "outbound|8080||svc-02.ns-07.svc.cluster.local", "outbound|8080||svc-03.ns-09.svc.cluster.local"}
	for s := range 10 {
		want = append(want, fmt.Sprintf("outbound|8080||svc-%02d.ns-00.svc.cluster.local", s))
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("auto-scoped proxy: outbound clusters\n%v\nwant\n%v", got, want)
	}
	t.Logf("REDIRECT, 200 services in 20 namespaces, client calls 3 outside its namespace: full %d clusters, %d endpoints, %d bytes; auto-scoped %d clusters, %d endpoints, %d bytes",
		len(full.Clusters), len(full.Endpoints), size(full), len(scoped.Clusters), len(scoped.Endpoints), size(scoped))

	// Seen again: nothing new, no re-push.
	if l.Observe(calls("svc-01.ns-05.svc.cluster.local"), snap, time.Now()) {
		t.Error("Observe: change reported for a dependency already learned")
	}
}

func TestDependencyIsForgottenAfterTTL(t *testing.T) {
	snap := model.NewSnapshot(mesh(2, 2, model.DefaultMesh()))
	l := autoscope.New(autoscope.Options{Namespaces: []string{"*"}, TTL: time.Minute})
	t0 := time.Now()
	l.Observe(calls("svc-01.ns-01.svc.cluster.local"), snap, t0)
	if l.Observe(nil, snap, t0.Add(59*time.Second)) {
		t.Error("dependency dropped before its TTL")
	}
	if got := l.Learned()["ns-00"]; !slices.Equal(got, []string{"svc-01.ns-01.svc.cluster.local"}) {
		t.Errorf("learned %v before the TTL", got)
	}
	if !l.Observe(nil, snap, t0.Add(61*time.Second)) {
		t.Error("no change reported when the dependency expired")
	}
	if got := l.Learned()["ns-00"]; len(got) != 0 {
		t.Errorf("learned %v after the TTL, want nothing", got)
	}
}

func TestRegistryOnlyMeshIsNotNarrowed(t *testing.T) {
	m := model.DefaultMesh()
	m.OutboundTrafficPolicy = &meshv1alpha1.MeshConfig_OutboundTrafficPolicy{Mode: meshv1alpha1.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY}
	cfg := mesh(3, 2, m)
	l := autoscope.New(autoscope.Options{Namespaces: []string{"ns-00"}})
	if got := len(outbound(build(t, cfg, l))); got != 6 {
		t.Errorf("REGISTRY_ONLY mesh, auto-scoped namespace: %d outbound clusters, want all 6", got)
	}
}

func TestFrozenSidecarYAML(t *testing.T) {
	snap := model.NewSnapshot(mesh(3, 1, model.DefaultMesh()))
	l := autoscope.New(autoscope.Options{Namespaces: []string{"ns-00"}})
	l.Observe(calls("svc-00.ns-02.svc.cluster.local"), snap, time.Now())
	got := autoscope.YAML(l.Sidecars(snap)["ns-00"])
	want := `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: ns-00
spec:
  egress:
  - hosts:
    - "./*"
    - "istio-system/*"
    - "ns-02/svc-00.ns-02.svc.cluster.local"
`
	if got != want {
		t.Errorf("YAML:\n%s\nwant\n%s", got, want)
	}

	// Frozen: loaded as a user's Sidecar, it scopes the proxy as the
	// learned scope did (and automatic scoping then stands aside).
	obj, _, err := config.ParseObject("frozen.yaml", []byte(got))
	if err != nil {
		t.Fatalf("the YAML does not parse as config: %v", err)
	}
	frozen, _, verrs := config.Assemble(model.DefaultMesh(), []*config.Object{obj})
	if len(verrs) > 0 {
		t.Fatalf("the YAML does not validate: %v", verrs)
	}
	cfg := mesh(3, 1, model.DefaultMesh())
	auto := outbound(build(t, cfg, l))
	cfg.Sidecars = frozen.Sidecars
	if got := outbound(build(t, cfg, l)); !slices.Equal(got, auto) || len(got) != 2 {
		t.Errorf("with the frozen Sidecar: outbound clusters %v, want the learned scope's %v", got, auto)
	}
}

// The namespace label opts a namespace in with no option, and opts one out
// of "*".
func TestNamespaceLabelOptsInAndOutOfStar(t *testing.T) {
	cfg := mesh(3, 2, model.DefaultMesh())
	cfg.Namespaces = map[string]map[string]string{"ns-00": {autoscope.Label: "enabled"}, "ns-01": {}, "ns-02": {}}
	if got := len(outbound(build(t, cfg, autoscope.New(autoscope.Options{})))); got != 2 {
		t.Errorf("labelled namespace, no option: %d outbound clusters, want its own 2", got)
	}
	cfg.Namespaces["ns-00"] = map[string]string{autoscope.Label: "disabled"}
	if got := len(outbound(build(t, cfg, autoscope.New(autoscope.Options{Namespaces: []string{"*"}})))); got != 6 {
		t.Errorf("namespace labelled disabled under '*': %d outbound clusters, want all 6", got)
	}
	if got := len(outbound(build(t, cfg, autoscope.New(autoscope.Options{Namespaces: []string{"ns-00"}})))); got != 2 {
		t.Errorf("namespace labelled disabled but named outright: %d outbound clusters, want its own 2", got)
	}
}

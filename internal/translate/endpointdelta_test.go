package translate

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
)

// endpointMutation changes one endpoint, keeping whether it is on loopback
// (which local-mode clusters bind by, so would be a cluster change).
type endpointMutation struct {
	name string
	edit func(we *networking.WorkloadEntry)
}

var endpointMutations = []endpointMutation{
	{"address", func(we *networking.WorkloadEntry) {
		if strings.HasPrefix(we.Address, "127.") {
			we.Address = "127.0.99.99"
		} else {
			we.Address = "10.99.99.99"
		}
	}},
	{"labels", func(we *networking.WorkloadEntry) {
		labels := map[string]string{"eds-test": "x"}
		for k, v := range we.GetLabels() {
			labels[k] = v
		}
		we.Labels = labels
	}},
	{"weight", func(we *networking.WorkloadEntry) { we.Weight += 7 }},
	{"locality", func(we *networking.WorkloadEntry) { we.Locality = "eds-region/eds-zone/eds-sub" }},
}

// mutateEndpoint returns a copy of cfg where the first endpoint of svc is
// changed by m, in the WorkloadEntry or the inline ServiceEntry endpoint it
// comes from; nil when svc has none.
func mutateEndpoint(cfg *model.Config, svc *model.Service, m endpointMutation) *model.Config {
	if len(svc.Endpoints) == 0 {
		return nil
	}
	ep := svc.Endpoints[0]
	out := *cfg
	if we := ep.Workload; we != nil && slices.Contains(cfg.WorkloadEntries, we) {
		changed := &model.WorkloadEntry{Meta: we.Meta, Spec: proto.Clone(we.Spec).(*networking.WorkloadEntry)}
		m.edit(changed.Spec)
		out.WorkloadEntries = slices.Clone(cfg.WorkloadEntries)
		out.WorkloadEntries[slices.Index(cfg.WorkloadEntries, we)] = changed
		return &out
	}
	if ep.Workload != nil || svc.Entry == nil || len(svc.Entry.Spec.GetEndpoints()) == 0 {
		return nil
	}
	se := &model.ServiceEntry{Meta: svc.Entry.Meta, Spec: proto.Clone(svc.Entry.Spec).(*networking.ServiceEntry)}
	m.edit(se.Spec.Endpoints[0])
	out.ServiceEntries = slices.Clone(cfg.ServiceEntries)
	out.ServiceEntries[slices.Index(cfg.ServiceEntries, svc.Entry)] = se
	return &out
}

// hostOfCluster is the host of an outbound cluster name, "" for others.
func hostOfCluster(name string) string {
	parts := strings.SplitN(name, "|", 4)
	if len(parts) != 4 || parts[0] != "outbound" {
		return ""
	}
	return parts[3]
}

// checkEndpointOnlyChange: translated for each proxy, new differs from old
// only in the load assignments of ch.Hosts' clusters (proxies at
// ch.Addresses aside), and those are exactly BuildEndpoints's.
func checkEndpointOnlyChange(t *testing.T, old, new *model.Snapshot, ch model.EndpointChange, proxies []*model.Proxy) {
	t.Helper()
	for _, p := range proxies {
		before, err := Build(old, p)
		if err != nil {
			t.Fatalf("%s: Build old: %v", p.ID, err)
		}
		after, err := Build(new, p)
		if err != nil {
			t.Fatalf("%s: Build new: %v", p.ID, err)
		}
		var want []*endpointv3.ClusterLoadAssignment
		for _, cla := range after.Endpoints {
			if slices.Contains(ch.Hosts, hostOfCluster(cla.GetClusterName())) {
				want = append(want, cla)
			}
		}
		got, err := BuildEndpoints(new, p, ch.Hosts)
		if err != nil {
			t.Fatalf("%s: BuildEndpoints: %v", p.ID, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: BuildEndpoints gave %d load assignments, Build %d", p.ID, len(got), len(want))
		}
		for i := range got {
			if !proto.Equal(got[i], want[i]) || !bytesEqual(t, got[i], want[i]) {
				t.Fatalf("%s: BuildEndpoints %s differs from Build's", p.ID, got[i].GetClusterName())
			}
		}
		if slices.Contains(ch.Addresses, p.IP) {
			continue // re-translated whole by the server
		}
		keep := func(r *Resources) *Resources {
			c := *r
			c.Endpoints = slices.DeleteFunc(slices.Clone(r.Endpoints), func(cla *endpointv3.ClusterLoadAssignment) bool {
				return slices.Contains(ch.Hosts, hostOfCluster(cla.GetClusterName()))
			})
			return &c
		}
		if string(marshalResources(t, keep(before))) != string(marshalResources(t, keep(after))) {
			t.Fatalf("%s: resources other than the changed hosts' load assignments differ", p.ID)
		}
	}
}

func bytesEqual(t *testing.T, a, b proto.Message) bool {
	t.Helper()
	opts := proto.MarshalOptions{Deterministic: true}
	x, err := opts.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := opts.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(x) == string(y)
}

// expectedHosts are the hosts whose endpoint list holds svc's first
// endpoint (a WorkloadEntry may back several services).
func expectedHosts(snap *model.Snapshot, svc *model.Service) []string {
	ep := svc.Endpoints[0]
	if ep.Workload == nil {
		return slices.Sorted(slices.Values(svc.Entry.Spec.GetHosts()))
	}
	var out []string
	for _, s := range snap.Services {
		if slices.ContainsFunc(s.Endpoints, func(e *model.Endpoint) bool { return e.Workload == ep.Workload }) {
			out = append(out, s.Hostname)
		}
	}
	return out
}

// checkSnapshotFrom: NewSnapshotFrom(old, new's config) equals
// NewSnapshot's new, and reuses every service whose entry and workloads
// did not change.
func checkSnapshotFrom(t *testing.T, old, new *model.Snapshot) {
	t.Helper()
	from := model.NewSnapshotFrom(old, new.Config)
	if !reflect.DeepEqual(from.Services, new.Services) {
		t.Fatal("NewSnapshotFrom's services differ from NewSnapshot's")
	}
	for _, we := range new.Config.WorkloadEntries {
		if from.WorkloadAt(we.Spec.GetAddress()) != new.WorkloadAt(we.Spec.GetAddress()) {
			t.Fatalf("NewSnapshotFrom: WorkloadAt(%s) differs", we.Spec.GetAddress())
		}
	}
	ch, ok := model.EndpointDelta(old, from)
	if !ok {
		return
	}
	for _, svc := range from.Services {
		if !slices.Contains(ch.Hosts, svc.Hostname) && old.Service(svc.Hostname) != svc {
			t.Fatalf("NewSnapshotFrom rebuilt %s, which did not change", svc.Hostname)
		}
	}
}

// runEndpointProperty changes each service's first endpoint in each way
// and checks EndpointDelta and BuildEndpoints against Build.
func runEndpointProperty(t *testing.T, cfg *model.Config, proxies []*model.Proxy, services int) {
	old := model.NewSnapshot(cfg)
	checked := 0
	for i, svc := range old.Services {
		if services > 0 && i >= services {
			break
		}
		for _, m := range endpointMutations {
			newCfg := mutateEndpoint(cfg, svc, m)
			if newCfg == nil {
				continue
			}
			new := model.NewSnapshot(newCfg)
			checkSnapshotFrom(t, old, new)
			ch, ok := EndpointDelta(old, new)
			dns := svc.Resolution == networking.ServiceEntry_DNS || svc.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN
			if dns {
				if ok {
					t.Errorf("%s %s: EndpointDelta ok for a DNS service, whose clusters carry endpoints", svc.Hostname, m.name)
				}
				continue
			}
			if !ok {
				t.Errorf("%s %s: EndpointDelta not ok for an endpoint change", svc.Hostname, m.name)
				continue
			}
			if want := expectedHosts(old, svc); !slices.Equal(ch.Hosts, want) {
				t.Errorf("%s %s: hosts %v, want %v", svc.Hostname, m.name, ch.Hosts, want)
			}
			checkEndpointOnlyChange(t, old, new, ch, proxies)
			checked++
		}
	}
	t.Logf("%d endpoint changes checked", checked)
}

// TestEndpointDeltaMatchesBuildOnGoldenScenarios: in every golden
// scenario, changing one endpoint's address, labels, weight or locality is
// an endpoint-only change of exactly its hosts, and BuildEndpoints gives
// Build's load assignments while everything else Build gives is unchanged.
func TestEndpointDeltaMatchesBuildOnGoldenScenarios(t *testing.T) {
	cases, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if !c.IsDir() {
			continue
		}
		dir := filepath.Join("testdata", c.Name())
		t.Run(c.Name(), func(t *testing.T) {
			cfg, _, err := config.LoadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			runEndpointProperty(t, cfg, readProxies(t, filepath.Join(dir, "proxies.txt")), 0)
		})
	}
}

// syntheticConfig is writeSyntheticMesh's mesh, loaded.
func syntheticConfig(t testing.TB, services, namespaces int) *model.Config {
	t.Helper()
	dir := t.TempDir()
	writeSyntheticMesh(t, dir, services, namespaces)
	cfg, _, err := config.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// writeSyntheticMesh writes cpbench's mesh: services over namespaces, each
// a STATIC ServiceEntry selecting three WorkloadEntries, every tenth with a
// VirtualService and DestinationRule subsets.
func writeSyntheticMesh(t testing.TB, dir string, services, namespaces int) {
	t.Helper()
	ip := func(base, i int) string { return fmt.Sprintf("%d.%d.%d.%d", base, (i>>16)&255, (i>>8)&255, i&255) }
	perNS := make([]strings.Builder, namespaces)
	for i := range services {
		ns, host := fmt.Sprintf("ns-%d", i%namespaces), fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local", i, i%namespaces)
		b := &perNS[i%namespaces]
		fmt.Fprintf(b, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc-%d, namespace: %s}\nspec:\n  hosts: [%s]\n  addresses: [%s]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 8080, name: http, protocol: HTTP}]\n  workloadSelector: {labels: {app: svc-%d}}\n---\n",
			i, ns, host, ip(240, 1<<16+i), i)
		if i%10 == 0 {
			fmt.Fprintf(b, "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: svc-%d, namespace: %s}\nspec:\n  host: %s\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 5, interval: 10s}\n    loadBalancer: {localityLbSetting: {enabled: true}}\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n---\n",
				i, ns, host)
		}
		var eps strings.Builder
		for k := range 3 {
			fmt.Fprintf(&eps, "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: svc-%d-%d, namespace: %s}\nspec:\n  address: %s\n  locality: r%d/z%d\n  labels: {app: svc-%d, version: v%d}\n---\n",
				i, k, ns, ip(10, 128<<16+i*3+k), k%2, k, i, k%2+1)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("ep-svc-%d.yaml", i)), []byte(eps.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for k := range perNS {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("services-ns-%d.yaml", k)), []byte(perNS[k].String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func syntheticProxies(t testing.TB, namespaces int) []*model.Proxy {
	t.Helper()
	var out []*model.Proxy
	for k := range namespaces {
		for _, id := range []string{
			fmt.Sprintf("sidecar~10.200.0.%d~client.ns-%d~ns-%d.svc.cluster.local", k+1, k, k),
			// At a workload's address: inbound listeners, locality.
			fmt.Sprintf("sidecar~10.128.0.%d~svc-%d.ns-%d~ns-%d.svc.cluster.local", k*3, k, k, k),
		} {
			p, err := model.ParseProxy(id)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
	}
	gw, err := model.ParseProxy("router~10.201.0.1~gw.ns-0~ns-0.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, gw)
}

// TestEndpointDeltaMatchesBuildOnSyntheticMesh is the same property on a
// cpbench-like mesh with subsets and locality load balancing.
func TestEndpointDeltaMatchesBuildOnSyntheticMesh(t *testing.T) {
	cfg := syntheticConfig(t, 40, 4)
	runEndpointProperty(t, cfg, syntheticProxies(t, 4), 12)
}

// TestEndpointDeltaRefusesChangesBeyondLoadAssignments: anything that can
// change a listener, route or cluster makes EndpointDelta say no.
func TestEndpointDeltaRefusesChangesBeyondLoadAssignments(t *testing.T) {
	cfg, _, err := config.LoadDir(filepath.Join("testdata", "bookinfo-local"))
	if err != nil {
		t.Fatal(err)
	}
	old := model.NewSnapshot(cfg)
	firstWE := func(edit func(*model.WorkloadEntry)) *model.Config {
		out := *cfg
		out.WorkloadEntries = slices.Clone(cfg.WorkloadEntries)
		we := out.WorkloadEntries[0]
		c := &model.WorkloadEntry{Meta: we.Meta, Spec: proto.Clone(we.Spec).(*networking.WorkloadEntry)}
		edit(c)
		out.WorkloadEntries[0] = c
		return &out
	}
	cases := map[string]*model.Config{
		"service entry port": func() *model.Config {
			out := *cfg
			out.ServiceEntries = slices.Clone(cfg.ServiceEntries)
			se := out.ServiceEntries[0]
			c := &model.ServiceEntry{Meta: se.Meta, Spec: proto.Clone(se.Spec).(*networking.ServiceEntry)}
			c.Spec.Ports[0].Number++
			out.ServiceEntries[0] = c
			return &out
		}(),
		"destination rule": func() *model.Config {
			out := *cfg
			out.DestinationRules = nil
			return &out
		}(),
		"mesh config": func() *model.Config {
			out := *cfg
			out.Mesh = proto.Clone(cfg.Mesh).(*meshv1alpha1.MeshConfig)
			out.Mesh.TrustDomain = "other.example"
			return &out
		}(),
		// A new identity in the clusters' SANs.
		"service account": firstWE(func(we *model.WorkloadEntry) { we.Spec.ServiceAccount = "eds-other" }),
		// Local-mode clusters bind to loopback only while every endpoint is on it.
		"loopback to remote address": firstWE(func(we *model.WorkloadEntry) { we.Spec.Address = "10.1.2.3" }),
		// Drops out of every service: the SANs lose its identity.
		"selector no longer matches": firstWE(func(we *model.WorkloadEntry) { we.Spec.Labels = map[string]string{"other": "x"} }),
	}
	for name, c := range cases {
		if _, ok := EndpointDelta(old, model.NewSnapshot(c)); ok {
			t.Errorf("%s: EndpointDelta ok", name)
		}
	}
	if _, ok := EndpointDelta(old, old.View(old.Services, nil, nil)); ok {
		t.Error("a view: EndpointDelta ok")
	}
	scoped := model.NewSnapshot(cfg)
	SetAutoScope(scoped, map[string]*model.Sidecar{"default": {Meta: model.Meta{Kind: "Sidecar", Namespace: "default", Name: "auto"},
		Spec: &networking.Sidecar{Egress: []*networking.IstioEgressListener{{Hosts: []string{"./*"}}}}}})
	if _, ok := EndpointDelta(old, scoped); ok {
		t.Error("learned auto-scopes differ: EndpointDelta ok")
	}
	if ch, ok := EndpointDelta(old, model.NewSnapshot(cfg)); !ok || len(ch.Hosts) != 0 || len(ch.Addresses) != 0 {
		t.Errorf("same config: EndpointDelta = %+v, %v; want nothing changed, ok", ch, ok)
	}
}

// TestEndpointDeltaAfterDirLoaderReload: the file source's reload after
// one WorkloadEntry file changed gives a snapshot EndpointDelta compares
// by pointer, naming just that service; the timings of each step are
// logged (1000 services, 20 namespaces).
func TestEndpointDeltaAfterDirLoaderReload(t *testing.T) {
	dir := t.TempDir()
	writeSyntheticMesh(t, dir, 1000, 20)
	// Files as in a directory not written just now: the loader re-reads
	// files modified within its racy window (2 s) to compare content.
	past := time.Now().Add(-time.Minute)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Chtimes(filepath.Join(dir, e.Name()), past, past); err != nil {
			t.Fatal(err)
		}
	}
	loader := config.NewDirLoader(dir)
	cfg, _, err := loader.Load()
	if err != nil {
		t.Fatal(err)
	}
	old := model.NewSnapshot(cfg)
	file := filepath.Join(dir, "ep-svc-10.yaml")
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	moved := strings.Replace(string(data), "address: 10.128.0.30", "address: 10.99.0.1", 1)
	if moved == string(data) {
		t.Fatal("setup: address not found")
	}
	if err := os.WriteFile(file, []byte(moved), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cfg2, _, err := loader.Load()
	if err != nil {
		t.Fatal(err)
	}
	loaded := time.Now()
	new := model.NewSnapshotFrom(old, cfg2)
	snapped := time.Now()
	ch, ok := EndpointDelta(old, new)
	diffed := time.Now()
	EndpointDelta(old, new)
	again := time.Since(diffed)
	diffed = time.Now()
	if !ok || !slices.Equal(ch.Hosts, []string{"svc-10.ns-10.svc.cluster.local"}) ||
		!slices.Equal(ch.Addresses, []string{"10.128.0.30", "10.99.0.1"}) {
		t.Fatalf("EndpointDelta = %+v, %v; want svc-10 and the old and new address", ch, ok)
	}
	proxies := syntheticProxies(t, 20)
	for _, p := range proxies {
		if _, err := BuildEndpoints(new, p, ch.Hosts); err != nil {
			t.Fatal(err)
		}
	}
	built := time.Now()
	checkSnapshotFrom(t, old, new)
	t.Logf("reload %v, NewSnapshotFrom %v, EndpointDelta %v (again %v), BuildEndpoints for %d proxies %v",
		loaded.Sub(start), snapped.Sub(loaded), diffed.Sub(snapped)-again, again, len(proxies), built.Sub(diffed))
	checkEndpointOnlyChange(t, old, new, ch, proxies[:4])
}

// TestEndpointDeltaWithPods: a Pod (Kubernetes source) backs the inline
// endpoint at its address; a change of the Pod marks its address (the
// proxy there re-translates) and, where it reaches the endpoint (its
// metadata), the service.
func TestEndpointDeltaWithPods(t *testing.T) {
	se := &model.ServiceEntry{Meta: model.Meta{Kind: "ServiceEntry", Namespace: "default", Name: "web"}, Spec: &networking.ServiceEntry{
		Hosts: []string{"web.default.svc.cluster.local"}, Addresses: []string{"10.96.0.10"}, Resolution: networking.ServiceEntry_STATIC,
		Ports:     []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
		Endpoints: []*networking.WorkloadEntry{{Address: "10.1.0.5", Labels: map[string]string{"app": "web"}}},
	}}
	pod := func(name string) *model.WorkloadEntry {
		return &model.WorkloadEntry{Meta: model.Meta{Kind: "WorkloadEntry", Namespace: "default", Name: name},
			Spec: &networking.WorkloadEntry{Address: "10.1.0.5", Labels: map[string]string{"app": "web"}}}
	}
	cfg := &model.Config{ServiceEntries: []*model.ServiceEntry{se}, Pods: []*model.WorkloadEntry{pod("web-1")}}
	old := model.NewSnapshot(cfg)
	renamed := *cfg
	renamed.Pods = []*model.WorkloadEntry{pod("web-2")} // a new Pod at the address
	ch, ok := EndpointDelta(old, model.NewSnapshot(&renamed))
	if !ok || !slices.Equal(ch.Hosts, []string{"web.default.svc.cluster.local"}) || !slices.Equal(ch.Addresses, []string{"10.1.0.5"}) {
		t.Fatalf("EndpointDelta = %+v, %v; want web and 10.1.0.5", ch, ok)
	}
	p, err := model.ParseProxy("sidecar~10.200.0.1~client.default~default.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	checkEndpointOnlyChange(t, old, model.NewSnapshot(&renamed), ch, []*model.Proxy{p})
	checkSnapshotFrom(t, old, model.NewSnapshot(&renamed))
}

// TestEndpointDeltaRefusesAnyOtherKindChanging: in every golden scenario,
// dropping one resource of any kind other than the endpoint kinds, or
// changing a ServiceEntry's hosts, ports, addresses, resolution, location
// or exportTo, is not an endpoint-only change.
func TestEndpointDeltaRefusesAnyOtherKindChanging(t *testing.T) {
	endpointKinds := map[string]bool{"WorkloadEntries": true, "Pods": true}
	seEdits := map[string]func(*networking.ServiceEntry){
		"hosts":      func(s *networking.ServiceEntry) { s.Hosts = append(s.Hosts, "eds-extra.example.com") },
		"ports":      func(s *networking.ServiceEntry) { s.Ports = s.Ports[:0] },
		"addresses":  func(s *networking.ServiceEntry) { s.Addresses = append(s.Addresses, "240.9.9.9") },
		"resolution": func(s *networking.ServiceEntry) { s.Resolution = networking.ServiceEntry_NONE + s.Resolution%2 + 1 },
		"location":   func(s *networking.ServiceEntry) { s.Location = 1 - s.Location },
		"exportTo":   func(s *networking.ServiceEntry) { s.ExportTo = []string{"."} },
	}
	cases, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if !c.IsDir() {
			continue
		}
		cfg, _, err := config.LoadDir(filepath.Join("testdata", c.Name()))
		if err != nil {
			t.Fatal(err)
		}
		old := model.NewSnapshot(cfg)
		v := reflect.ValueOf(cfg).Elem()
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if endpointKinds[f.Name] || f.Type.Kind() != reflect.Slice || v.Field(i).Len() == 0 {
				continue
			}
			changed := *cfg
			cv := reflect.ValueOf(&changed).Elem().Field(i)
			cv.Set(cv.Slice(1, cv.Len()))
			if _, ok := EndpointDelta(old, model.NewSnapshot(&changed)); ok {
				t.Errorf("%s: dropping %s[0]: EndpointDelta ok", c.Name(), f.Name)
			}
		}
		if len(cfg.ServiceEntries) == 0 {
			continue
		}
		for name, edit := range seEdits {
			changed := *cfg
			changed.ServiceEntries = slices.Clone(cfg.ServiceEntries)
			se := cfg.ServiceEntries[0]
			c2 := &model.ServiceEntry{Meta: se.Meta, Spec: proto.Clone(se.Spec).(*networking.ServiceEntry)}
			edit(c2.Spec)
			changed.ServiceEntries[0] = c2
			if _, ok := EndpointDelta(old, model.NewSnapshot(&changed)); ok {
				t.Errorf("%s: ServiceEntry %s: EndpointDelta ok", c.Name(), name)
			}
		}
	}
}

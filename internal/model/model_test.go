package model

import (
	"slices"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

func TestParseProxyReadsIstioNodeIDs(t *testing.T) {
	for _, tc := range []struct {
		id      string
		want    Proxy
		wantErr string
	}{
		{id: "sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local",
			want: Proxy{Type: SidecarProxy, IP: "127.0.1.3", Name: "reviews-v1", Namespace: "default", DNSDomain: "default.svc.cluster.local"}},
		{id: "router~10.0.0.9~istio-ingressgateway-5d9.istio-system~istio-system.svc.cluster.local",
			want: Proxy{Type: Router, IP: "10.0.0.9", Name: "istio-ingressgateway-5d9", Namespace: "istio-system", DNSDomain: "istio-system.svc.cluster.local"}},
		{id: "sidecar~fd00::1~a.b~b.svc.cluster.local", want: Proxy{Type: SidecarProxy, IP: "fd00::1", Name: "a", Namespace: "b", DNSDomain: "b.svc.cluster.local"}},
		{id: "sidecar~127.0.0.1~a.b", wantErr: "want 4 fields"},
		{id: "ztunnel~127.0.0.1~a.b~b.svc", wantErr: `type "ztunnel"`},
		{id: "sidecar~not-an-ip~a.b~b.svc", wantErr: "ip:"},
		{id: "sidecar~127.0.0.1~nonamespace~b.svc", wantErr: "want name.namespace"},
	} {
		got, err := ParseProxy(tc.id)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseProxy(%q) error = %v, want it to mention %q", tc.id, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseProxy(%q): %v", tc.id, err)
			continue
		}
		tc.want.ID, tc.want.Interception = tc.id, InterceptRedirect
		if got.ID != tc.want.ID || got.Type != tc.want.Type || got.IP != tc.want.IP || got.Name != tc.want.Name ||
			got.Namespace != tc.want.Namespace || got.DNSDomain != tc.want.DNSDomain || got.Interception != tc.want.Interception {
			t.Errorf("ParseProxy(%q) = %+v, want %+v", tc.id, *got, tc.want)
		}
	}
}

func TestResolveHostExpandsShortNamesLikeIstio(t *testing.T) {
	for host, want := range map[string]string{
		"reviews":                       "reviews.ns1.svc.cluster.local",
		"reviews.ns2.svc.cluster.local": "reviews.ns2.svc.cluster.local",
		"reviews.ns2":                   "reviews.ns2", // dotted names are taken as written, as Istio
		"*.example.com":                 "*.example.com",
		"*":                             "*",
		"":                              "",
	} {
		if got := ResolveHost(host, "ns1"); got != want {
			t.Errorf("ResolveHost(%q, ns1) = %q, want %q", host, got, want)
		}
	}
}

func meta(kind, ns, name string) Meta { return Meta{Kind: kind, Namespace: ns, Name: name} }

func TestSnapshotSelectsWorkloadsInTheServiceEntryNamespaceOnly(t *testing.T) {
	we := func(ns, name, addr, version string, ports map[string]uint32) *WorkloadEntry {
		return &WorkloadEntry{Meta: meta("WorkloadEntry", ns, name), Spec: &networking.WorkloadEntry{
			Address: addr, Labels: map[string]string{"app": "reviews", "version": version}, Ports: ports}}
	}
	v1 := we("default", "reviews-v1", "127.0.1.3", "v1", nil)
	v2 := we("default", "reviews-v2", "127.0.1.4", "v2", map[string]uint32{"http": 9999})
	other := we("other", "reviews-x", "127.0.1.9", "v1", nil)
	snap := NewSnapshot(&Config{
		ServiceEntries: []*ServiceEntry{{Meta: meta("ServiceEntry", "default", "reviews"), Spec: &networking.ServiceEntry{
			Hosts:            []string{"reviews.default.svc.cluster.local"},
			Ports:            []*networking.ServicePort{{Number: 9080, Name: "http", Protocol: "http", TargetPort: 9081}},
			WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": "reviews"}},
		}}},
		WorkloadEntries: []*WorkloadEntry{v1, v2, other},
	})
	svc := snap.Service("reviews.default.svc.cluster.local")
	if svc == nil {
		t.Fatal("service not in the registry")
	}
	if svc.Ports[0].Protocol != "HTTP" || !svc.Ports[0].Protocol.IsHTTP() {
		t.Errorf("protocol %q: want upper-cased HTTP", svc.Ports[0].Protocol)
	}
	var addrs []string
	for _, ep := range svc.Endpoints {
		addrs = append(addrs, ep.Address)
	}
	if strings.Join(addrs, ",") != "127.0.1.3,127.0.1.4" {
		t.Errorf("endpoints %v: want only the default namespace's workloads", addrs)
	}
	// Endpoint port precedence: the workload's named port, then targetPort.
	if got := svc.Endpoints[1].PortFor(svc.Ports[0]); got != 9999 {
		t.Errorf("v2 port = %d, want its named port 9999", got)
	}
	if got := svc.Endpoints[0].PortFor(svc.Ports[0]); got != 9081 {
		t.Errorf("v1 port = %d, want the targetPort 9081", got)
	}
	if snap.WorkloadAt("127.0.1.4") != v2 {
		t.Error("WorkloadAt does not find the workload by address")
	}
	if got := snap.ServicesOf(other); len(got) != 0 {
		t.Errorf("a workload in another namespace serves %v", got)
	}
	if got := snap.ServicesOf(v1); len(got) != 1 || got[0] != svc {
		t.Errorf("ServicesOf(v1) = %v", got)
	}
	if snap.Config.Mesh.GetTrustDomain() != "cluster.local" {
		t.Error("a config without mesh.yaml must get Istio's default MeshConfig")
	}
}

func TestDestinationRuleLookupFollowsIstioNamespaceOrder(t *testing.T) {
	dr := func(ns string) *DestinationRule {
		return &DestinationRule{Meta: meta("DestinationRule", ns, "r"), Spec: &networking.DestinationRule{Host: "reviews.app.svc.cluster.local"}}
	}
	client, service, root := dr("client"), dr("app"), dr("istio-system")
	snap := NewSnapshot(&Config{
		Mesh: DefaultMesh(),
		ServiceEntries: []*ServiceEntry{{Meta: meta("ServiceEntry", "app", "reviews"),
			Spec: &networking.ServiceEntry{Hosts: []string{"reviews.app.svc.cluster.local"}}}},
		DestinationRules: []*DestinationRule{service, client, root},
	})
	const host = "reviews.app.svc.cluster.local"
	if got := snap.DestinationRule(host, "client"); got != client {
		t.Errorf("from namespace client: got %v, want the client namespace's rule", got.Key())
	}
	if got := snap.DestinationRule(host, "elsewhere"); got != service {
		t.Errorf("from namespace elsewhere: got %v, want the service namespace's rule", got.Key())
	}
	noService := NewSnapshot(&Config{Mesh: DefaultMesh(), DestinationRules: []*DestinationRule{root}})
	if got := noService.DestinationRule(host, "elsewhere"); got != root {
		t.Errorf("got %v, want the root namespace's rule", got)
	}
}

func TestSidecarForPrefersSelectorThenNamespaceThenRoot(t *testing.T) {
	sc := func(ns, name string, sel map[string]string) *Sidecar {
		s := &Sidecar{Meta: meta("Sidecar", ns, name), Spec: &networking.Sidecar{}}
		if sel != nil {
			s.Spec.WorkloadSelector = &networking.WorkloadSelector{Labels: sel}
		}
		return s
	}
	selected := sc("default", "reviews", map[string]string{"app": "reviews"})
	nsDefault := sc("default", "default", nil)
	rootDefault := sc("istio-system", "default", nil)
	snap := NewSnapshot(&Config{Mesh: DefaultMesh(), Sidecars: []*Sidecar{nsDefault, selected, rootDefault}})
	if got := snap.SidecarFor("default", map[string]string{"app": "reviews"}); got != selected {
		t.Errorf("got %s, want the selecting Sidecar", got.Key())
	}
	if got := snap.SidecarFor("default", map[string]string{"app": "ratings"}); got != nsDefault {
		t.Errorf("got %s, want the namespace default", got.Key())
	}
	if got := snap.SidecarFor("other", nil); got != rootDefault {
		t.Errorf("got %s, want the root namespace default", got.Key())
	}
}

// A ServiceEntry's workloadSelector selects the Pods of its namespace too,
// while they are Ready, as Istio's does; a Kubernetes Service (a registry
// ServiceEntry) gets its Pods from its inline endpoints only, so none
// appears twice. A readiness change is an endpoint-only change.
func TestServiceEntrySelectsReadyPodsOfItsNamespace(t *testing.T) {
	pod := func(ns, name, ip, ready string) *WorkloadEntry {
		m := meta("Pod", ns, name)
		m.Conditions = []Condition{{Type: ConditionReady, Status: ready}}
		m.Source = Source{File: RegistrySource + "Pod " + ns + "/" + name}
		return &WorkloadEntry{Meta: m, Spec: &networking.WorkloadEntry{Address: ip, Labels: map[string]string{"app": "db"}}}
	}
	selector := &networking.WorkloadSelector{Labels: map[string]string{"app": "db"}}
	config := func(ready string) *Config {
		return &Config{
			ServiceEntries: []*ServiceEntry{
				{Meta: meta("ServiceEntry", "default", "db"), Spec: &networking.ServiceEntry{
					Hosts: []string{"db.example.internal"}, Location: networking.ServiceEntry_MESH_INTERNAL,
					Ports:            []*networking.ServicePort{{Number: 5432, Name: "tcp", Protocol: "TCP", TargetPort: 15432}},
					WorkloadSelector: selector,
				}},
				{Meta: Meta{Kind: "ServiceEntry", Namespace: "default", Name: "db-svc", Source: Source{File: RegistrySource + "Service default/db-svc"}},
					Spec: &networking.ServiceEntry{Hosts: []string{"db-svc.default.svc.cluster.local"},
						Ports:            []*networking.ServicePort{{Number: 5432, Name: "tcp", Protocol: "TCP"}},
						Endpoints:        []*networking.WorkloadEntry{{Address: "10.0.0.1"}},
						WorkloadSelector: selector,
					}},
			},
			Pods: []*WorkloadEntry{pod("default", "db-0", "10.0.0.1", "True"), pod("default", "db-1", "10.0.0.2", ready), pod("other", "db-x", "10.0.9.9", "True")},
		}
	}
	addrs := func(s *Snapshot, host string) []string {
		var out []string
		for _, ep := range s.Service(host).Endpoints {
			out = append(out, ep.Address)
		}
		return out
	}
	notReady := NewSnapshot(config("False"))
	if got := addrs(notReady, "db.example.internal"); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Errorf("ServiceEntry endpoints %v, want the namespace's ready Pod 10.0.0.1", got)
	}
	if got := notReady.Service("db.example.internal").Endpoints[0].PortFor(notReady.Service("db.example.internal").Ports[0]); got != 15432 {
		t.Errorf("port %d, want the targetPort 15432", got)
	}
	if got := addrs(notReady, "db-svc.default.svc.cluster.local"); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Errorf("Kubernetes Service endpoints %v, want its inline endpoint only", got)
	}
	ready := config("True")
	for name, snap := range map[string]*Snapshot{"NewSnapshot": NewSnapshot(ready), "NewSnapshotFrom": NewSnapshotFrom(notReady, ready)} {
		if got := addrs(snap, "db.example.internal"); !slices.Equal(got, []string{"10.0.0.1", "10.0.0.2"}) {
			t.Errorf("%s: endpoints %v once db-1 is ready, want both Pods", name, got)
		}
	}
	ch, ok := EndpointDelta(notReady, NewSnapshot(ready))
	if !ok || !slices.Equal(ch.Hosts, []string{"db.example.internal"}) || !slices.Equal(ch.Addresses, []string{"10.0.0.2"}) {
		t.Errorf("EndpointDelta = %+v, %v; want db.example.internal at 10.0.0.2", ch, ok)
	}
}

package translate

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
)

// outboundHosts builds proxy's resources and returns the hosts of its
// outbound clusters (without subsets), sorted and deduplicated.
func outboundHosts(t *testing.T, snap *model.Snapshot, nodeID string) []string {
	t.Helper()
	var hosts []string
	for _, c := range buildLocal(t, snap, nodeID).Clusters {
		if parts := strings.Split(c.GetName(), "|"); parts[0] == "outbound" && !slices.Contains(hosts, parts[3]) {
			hosts = append(hosts, parts[3])
		}
	}
	slices.Sort(hosts)
	return hosts
}

// buildLocal builds the resources of nodeID as a local-mode proxy.
func buildLocal(t *testing.T, snap *model.Snapshot, nodeID string) *Resources {
	t.Helper()
	p, err := model.ParseProxy(nodeID)
	if err != nil {
		t.Fatal(err)
	}
	p.Interception = model.InterceptNone
	res, err := Build(snap, p)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func loadSnapshot(t *testing.T, dir string) *model.Snapshot {
	t.Helper()
	cfg, _, err := config.LoadDir(filepath.Join("testdata", dir))
	if err != nil {
		t.Fatal(err)
	}
	return model.NewSnapshot(cfg)
}

func TestExportToDecidesWhichNamespacesSeeAService(t *testing.T) {
	snap := loadSnapshot(t, "scoping-exportto")
	for _, tc := range []struct {
		node string
		want []string
	}{
		{"sidecar~10.0.0.1~client-a.a~a.svc.cluster.local", []string{"open.b.svc.cluster.local", "to-a.b.svc.cluster.local"}},
		{"sidecar~10.0.0.2~client-b.b~b.svc.cluster.local", []string{"open.b.svc.cluster.local", "private.b.svc.cluster.local"}},
		{"sidecar~10.0.0.5~client-z.z~z.svc.cluster.local", []string{"open.b.svc.cluster.local"}},
	} {
		if got := outboundHosts(t, snap, tc.node); !slices.Equal(got, tc.want) {
			t.Errorf("%s: clusters for %q, want %q", tc.node, got, tc.want)
		}
	}
}

func TestMeshDefaultExportToAppliesWhenAResourceSetsNone(t *testing.T) {
	cfg, _, err := config.LoadDir(filepath.Join("testdata", "scoping-exportto"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Mesh.DefaultServiceExportTo = []string{"."}
	snap := model.NewSnapshot(cfg)
	// open.b sets no exportTo: now private to b; to-a.b keeps its own [a].
	if got, want := outboundHosts(t, snap, "sidecar~10.0.0.1~client-a.a~a.svc.cluster.local"), []string{"to-a.b.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Errorf("namespace a: clusters for %q, want %q", got, want)
	}
}

func TestSidecarEgressImportsOnlyItsHostsAndWhatItsRoutesReach(t *testing.T) {
	snap := loadSnapshot(t, "scoping-sidecar")
	for _, tc := range []struct {
		node string
		want []string
	}{
		// a's default Sidecar: ./* and istio-system/*, plus svc.d its VirtualService routes to.
		{"sidecar~10.0.0.1~client-a.a~a.svc.cluster.local", []string{"svc.a.svc.cluster.local", "svc.d.svc.cluster.local", "telemetry.istio-system.svc.cluster.local"}},
		// The workload Sidecar wins over the namespace default.
		{"sidecar~10.0.0.9~special-a.a~a.svc.cluster.local", []string{"svc.c.svc.cluster.local"}},
		// The root namespace's default, with "." the proxy's namespace.
		{"sidecar~10.0.0.3~client-c.c~c.svc.cluster.local", []string{"svc.c.svc.cluster.local", "telemetry.istio-system.svc.cluster.local"}},
		// Gateways are not scoped by Sidecars.
		{"router~10.0.0.4~gw.c~c.svc.cluster.local", []string{"svc.a.svc.cluster.local", "svc.b.svc.cluster.local", "svc.c.svc.cluster.local", "svc.d.svc.cluster.local", "telemetry.istio-system.svc.cluster.local"}},
	} {
		if got := outboundHosts(t, snap, tc.node); !slices.Equal(got, tc.want) {
			t.Errorf("%s: clusters for %q, want %q", tc.node, got, tc.want)
		}
	}
}

// Egress listener ports, as Istio: a host imported on a port gets that
// port only, a service a VirtualService routes to gets the port its
// destination names, and imports of one host add up.
func TestSidecarEgressPortsImportOnlyThosePorts(t *testing.T) {
	snap := loadSnapshot(t, "scoping-sidecar-ports")
	var got []string
	for _, c := range buildLocal(t, snap, "sidecar~10.0.0.1~client-a.a~a.svc.cluster.local").Clusters {
		if strings.HasPrefix(c.GetName(), "outbound|") {
			got = append(got, c.GetName())
		}
	}
	slices.Sort(got)
	want := []string{
		"outbound|3306||multi.a.svc.cluster.local",
		"outbound|8081||other.b.svc.cluster.local",
		"outbound|8443||proxied.c.svc.cluster.local",
		"outbound|9080||multi.a.svc.cluster.local",
	}
	if !slices.Equal(got, want) {
		t.Errorf("outbound clusters %q, want %q", got, want)
	}
}

func TestProxiesInOneNamespaceShareOneView(t *testing.T) {
	snap := loadSnapshot(t, "scoping-sidecar")
	p1, _ := model.ParseProxy("sidecar~10.0.0.1~client-a.a~a.svc.cluster.local")
	p2, _ := model.ParseProxy("sidecar~10.0.0.7~other-a.a~a.svc.cluster.local")
	special, _ := model.ParseProxy("sidecar~10.0.0.9~special-a.a~a.svc.cluster.local")
	v1, v2 := newEnv(snap, p1).snap, newEnv(snap, p2).snap
	if v1 != v2 {
		t.Error("two proxies under the same Sidecar got different views; want one shared per snapshot")
	}
	if newEnv(snap, special).snap == v1 {
		t.Error("a proxy under a workload Sidecar shares the namespace default's view")
	}
	if v1.Full() != snap {
		t.Error("view does not lead back to its snapshot")
	}
}

package translate

import (
	"os"
	"path/filepath"
	"testing"

	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
)

// TestTCPRoutePrecedenceExactHostBeforeWildcard: with several VirtualServices naming a TCP
// service, the one naming it exactly routes first, whatever the names' order; a VirtualService
// bound only to a Gateway does not route sidecars, though it names the host exactly.
func TestTCPRoutePrecedenceExactHostBeforeWildcard(t *testing.T) {
	const yaml = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.org, other.example.org, gw-only.example.org]
  addresses: [240.240.0.30]
  location: MESH_EXTERNAL
  resolution: DNS
  ports:
  - {number: 5432, name: tcp, protocol: TCP}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-wildcard, namespace: default}
spec:
  hosts: ["*.example.org"]
  tcp:
  - route:
    - destination: {host: other.example.org}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b-exact, namespace: default}
spec:
  hosts: [db.example.org]
  tcp:
  - route:
    - destination: {host: db.example.org, subset: primary}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: c-gateway, namespace: default}
spec:
  hosts: [gw-only.example.org]
  gateways: [some-gateway]
  tcp:
  - route:
    - destination: {host: db.example.org, subset: gateway}
`
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := model.ParseProxy("sidecar~10.0.0.5~sleep.default~default.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Build(model.NewSnapshot(cfg), p)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"db.example.org":      "outbound|5432|primary|db.example.org",
		"other.example.org":   "outbound|5432||other.example.org",
		"gw-only.example.org": "outbound|5432||other.example.org", // the wildcard; c-gateway is not for sidecars
	}
	got := map[string]string{}
	for _, svc := range model.NewSnapshot(cfg).Services {
		vss := l4VirtualServices(cfg.VirtualServices, svc.Hostname, boundToMesh)
		env := newEnv(model.NewSnapshot(cfg), p)
		chains := env.l4Chains(svc, svc.Ports[0], "240.240.0.30", vss, []string{meshGateway})
		fc, err := env.l4FilterChain(chains[0], 5432)
		if err != nil {
			t.Fatal(err)
		}
		var tp tcpproxyv3.TcpProxy
		if err := fc.Filters[len(fc.Filters)-1].GetTypedConfig().UnmarshalTo(&tp); err != nil {
			t.Fatal(err)
		}
		got[svc.Hostname] = tp.GetCluster()
	}
	for h, c := range want {
		if got[h] != c {
			t.Errorf("%s: first chain to %q, want %q", h, got[h], c)
		}
	}
	// The listener itself goes to the first service on the VIP (db.example.org).
	for _, l := range res.Listeners {
		if l.GetName() == "240.240.0.30_5432" {
			var tp tcpproxyv3.TcpProxy
			fcs := l.GetFilterChains()
			if err := fcs[0].Filters[len(fcs[0].Filters)-1].GetTypedConfig().UnmarshalTo(&tp); err != nil {
				t.Fatal(err)
			}
			if tp.GetCluster() != want["db.example.org"] {
				t.Errorf("listener 240.240.0.30_5432 routes to %q, want %q", tp.GetCluster(), want["db.example.org"])
			}
			return
		}
	}
	t.Error("no listener 240.240.0.30_5432")
}

package translate

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/model"
)

// syntheticMesh is nsCount namespaces of perNS services, each one HTTP
// port with three endpoints; with sidecar set, every namespace has a
// default Sidecar importing ./* and istio-system/*.
func syntheticMesh(nsCount, perNS int, sidecar bool) *model.Snapshot {
	cfg := &model.Config{Mesh: model.DefaultMesh()}
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
		if sidecar {
			cfg.Sidecars = append(cfg.Sidecars, &model.Sidecar{
				Meta: model.Meta{Kind: "Sidecar", Namespace: ns, Name: "default"},
				Spec: &networking.Sidecar{Egress: []*networking.IstioEgressListener{{Hosts: []string{"./*", "istio-system/*"}}}},
			})
		}
	}
	return model.NewSnapshot(cfg)
}

func resourceBytes(res *Resources) (n int) {
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

// A namespace Sidecar cuts what each proxy receives to its namespace's
// share of the mesh. The figures are logged for docs/scoping.md
// (go test ./internal/translate -run TestNamespaceSidecarShrinks -v).
func TestNamespaceSidecarShrinksWhatAProxyReceives(t *testing.T) {
	const nsCount, perNS = 20, 10
	for _, mode := range []model.InterceptionMode{model.InterceptRedirect, model.InterceptNone} {
		proxy := &model.Proxy{ID: "sidecar~10.99.0.1~client.ns-00~ns-00.svc.cluster.local", Type: model.SidecarProxy,
			IP: "10.99.0.1", Name: "client", Namespace: "ns-00", Interception: mode}
		var sizes [2]int
		var clusters [2]int
		for i, sidecar := range []bool{false, true} {
			res, err := Build(syntheticMesh(nsCount, perNS, sidecar), proxy)
			if err != nil {
				t.Fatal(err)
			}
			sizes[i], clusters[i] = resourceBytes(res), len(res.Clusters)
			t.Logf("%s, %d services in %d namespaces, Sidecar %v: %d listeners, %d routes, %d clusters, %d endpoints, %d bytes",
				mode, nsCount*perNS, nsCount, sidecar, len(res.Listeners), len(res.Routes), len(res.Clusters), len(res.Endpoints), sizes[i])
		}
		if clusters[1] >= clusters[0] || sizes[1] >= sizes[0] {
			t.Errorf("%s: with the Sidecar %d clusters / %d bytes, without %d / %d: want fewer", mode, clusters[1], sizes[1], clusters[0], sizes[0])
		}
	}
}

// BenchmarkBuildScoped translates for one proxy of a 200-service mesh,
// with and without a namespace Sidecar (the view is cached per snapshot,
// so this is the per-proxy cost).
func BenchmarkBuildScoped(b *testing.B) {
	for _, sidecar := range []bool{false, true} {
		b.Run(fmt.Sprintf("sidecar=%v", sidecar), func(b *testing.B) {
			snap := syntheticMesh(20, 10, sidecar)
			proxy := &model.Proxy{ID: "sidecar~10.99.0.1~client.ns-00~ns-00.svc.cluster.local", Type: model.SidecarProxy,
				IP: "10.99.0.1", Name: "client", Namespace: "ns-00", Interception: model.InterceptRedirect}
			for b.Loop() {
				if _, err := Build(snap, proxy); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

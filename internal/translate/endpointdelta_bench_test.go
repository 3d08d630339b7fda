package translate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
)

// BenchmarkBuildEndpointsOneHost: the load assignments of one host for one
// proxy, in a 1000-service mesh.
func BenchmarkBuildEndpointsOneHost(b *testing.B) {
	cfg := syntheticConfig(b, 1000, 20)
	snap := model.NewSnapshot(cfg)
	p := syntheticProxies(b, 20)[0]
	hosts := []string{"svc-10.ns-10.svc.cluster.local"} // with subsets and locality
	if _, err := BuildEndpoints(snap, p, hosts); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildEndpoints(snap, p, hosts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildEndpointsOneHostNewSnapshot: the same on a snapshot no
// proxy was translated for yet, as after every endpoint change.
func BenchmarkBuildEndpointsOneHostNewSnapshot(b *testing.B) {
	cfg := syntheticConfig(b, 1000, 20)
	p := syntheticProxies(b, 20)[0]
	hosts := []string{"svc-10.ns-10.svc.cluster.local"}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		snap := model.NewSnapshot(cfg)
		b.StartTimer()
		if _, err := BuildEndpoints(snap, p, hosts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEndpointDelta1000Services: one WorkloadEntry's address changed
// in a 1000-service mesh; unchanged objects shared by pointer (the file
// source's DirLoader), or all new and compared by value (LoadDir twice).
func BenchmarkEndpointDelta1000Services(b *testing.B) {
	dir := b.TempDir()
	writeSyntheticMesh(b, dir, 1000, 20)
	cfg, _, err := config.LoadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	old := model.NewSnapshot(cfg)
	bench := func(b *testing.B, new *model.Snapshot) {
		if ch, ok := EndpointDelta(old, new); !ok || len(ch.Hosts) != 1 {
			b.Fatalf("EndpointDelta = %+v, %v", ch, ok)
		}
		b.ReportAllocs()
		for b.Loop() {
			EndpointDelta(old, new)
		}
	}
	b.Run("by pointer", func(b *testing.B) {
		bench(b, model.NewSnapshot(mutateEndpoint(cfg, old.Service("svc-10.ns-10.svc.cluster.local"), endpointMutations[0])))
	})
	b.Run("by value", func(b *testing.B) {
		file := filepath.Join(dir, "ep-svc-10.yaml")
		data, err := os.ReadFile(file)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(strings.Replace(string(data), "10.128.0.30", "10.99.0.1", 1)), 0o644); err != nil {
			b.Fatal(err)
		}
		cfg2, _, err := config.LoadDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		bench(b, model.NewSnapshot(cfg2))
	})
}

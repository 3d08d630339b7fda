package ui

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
	"github.com/trellis-mesh/trellis/internal/xds"
)

// Synthetic is a made-up mesh of a given size, deterministic for a seed:
// config, proxies and traffic, for measuring the console at scale and for
// tests. It is a ConfigSource, ProxySource, TrafficSource and an in-memory
// WeightWriter; Options wires all four into a Server.
type Synthetic struct {
	mu      sync.Mutex
	snap    *model.Snapshot
	traffic *Traffic
	proxies []xds.ProxyStatus
}

// SyntheticTopology builds a mesh of services ServiceEntries spread over
// namespaces of up to 25 services ("ns-0", "ns-1", ...), one workload per
// service (version v1) and a second one (v2) for every tenth service, whose
// VirtualService splits traffic 90/10. It has edges workload-to-workload
// edges with HTTP rates, error rates, p99s and mTLS modes drawn from seed;
// about one in twenty edges is TCP.
func SyntheticTopology(services, edges int, seed uint64) *Synthetic {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	cfg := &model.Config{Mesh: model.DefaultMesh()}
	type workload struct{ ns, name string }
	var workloads []workload
	for i := range services {
		ns := fmt.Sprintf("ns-%d", i/25)
		name := fmt.Sprintf("svc-%d", i)
		host := model.ResolveHost(name, ns)
		src := model.Source{File: "synthetic", Line: i + 1}
		cfg.ServiceEntries = append(cfg.ServiceEntries, &model.ServiceEntry{
			Meta: model.Meta{Kind: "ServiceEntry", Namespace: ns, Name: name, Source: src},
			Spec: &networking.ServiceEntry{
				Hosts:            []string{host},
				Location:         networking.ServiceEntry_MESH_INTERNAL,
				Resolution:       networking.ServiceEntry_STATIC,
				Ports:            []*networking.ServicePort{{Number: 9080, Name: "http", Protocol: "HTTP"}},
				WorkloadSelector: &networking.WorkloadSelector{Labels: map[string]string{"app": name}},
			},
		})
		versions := []string{"v1"}
		if i%10 == 0 {
			versions = append(versions, "v2")
		}
		var dests []*networking.HTTPRouteDestination
		var subsets []*networking.Subset
		for _, v := range versions {
			wl := name + "-" + v
			workloads = append(workloads, workload{ns, wl})
			n := len(workloads)
			cfg.WorkloadEntries = append(cfg.WorkloadEntries, &model.WorkloadEntry{
				Meta: model.Meta{Kind: "WorkloadEntry", Namespace: ns, Name: wl, Source: src},
				Spec: &networking.WorkloadEntry{
					Address:        fmt.Sprintf("10.%d.%d.%d", n>>16&255, n>>8&255, n&255),
					Labels:         map[string]string{"app": name, "version": v},
					ServiceAccount: name,
				},
			})
			subsets = append(subsets, &networking.Subset{Name: v, Labels: map[string]string{"version": v}})
			dests = append(dests, &networking.HTTPRouteDestination{Destination: &networking.Destination{Host: name, Subset: v}})
		}
		if len(dests) > 1 {
			dests[0].Weight, dests[1].Weight = 90, 10
			cfg.VirtualServices = append(cfg.VirtualServices, &model.VirtualService{
				Meta: model.Meta{Kind: "VirtualService", Namespace: ns, Name: name, Source: src},
				Spec: &networking.VirtualService{Hosts: []string{name}, Http: []*networking.HTTPRoute{{Route: dests}}},
			})
			cfg.DestinationRules = append(cfg.DestinationRules, &model.DestinationRule{
				Meta: model.Meta{Kind: "DestinationRule", Namespace: ns, Name: name, Source: src},
				Spec: &networking.DestinationRule{Host: name, Subsets: subsets},
			})
		}
	}
	sortConfig(cfg)

	now := time.Now()
	traffic := &Traffic{At: now, WindowSeconds: DefaultWindow.Seconds(), Edges: []Edge{}}
	seen := map[string]bool{}
	for attempts := 0; len(traffic.Edges) < edges && len(workloads) > 1 && attempts < 20*edges; attempts++ {
		a, b := workloads[rng.IntN(len(workloads))], workloads[rng.IntN(len(workloads))]
		id := workloadID(a.ns, a.name) + ">" + workloadID(b.ns, b.name)
		if a == b || seen[id] {
			continue
		}
		seen[id] = true
		e := Edge{ID: id, Source: workloadID(a.ns, a.name), Target: workloadID(b.ns, b.name), Protocol: "http", MTLS: MTLSMutual}
		e.RPS = round2(math.Exp(rng.Float64()*6 - 1)) // about 0.4 to 150 rps
		if rng.IntN(5) == 0 {
			e.ErrorRate = round2(rng.Float64() * 0.2)
		}
		e.P99Ms = round2(1 + rng.ExpFloat64()*20)
		switch rng.IntN(10) {
		case 0:
			e.MTLS = MTLSNone
		case 1:
			e.MTLS = MTLSMixed
		}
		if rng.IntN(20) == 0 {
			e.Protocol, e.ErrorRate, e.P99Ms = "tcp", 0, 0
			e.BytesPerSecond = round2(e.RPS * 1500)
		}
		traffic.Edges = append(traffic.Edges, e)
	}

	var proxies []xds.ProxyStatus
	for _, we := range cfg.WorkloadEntries {
		versions := map[string]string{}
		for _, t := range xdsTypes {
			versions[t.url] = "1"
		}
		proxies = append(proxies, xds.ProxyStatus{
			ID:          fmt.Sprintf("sidecar~%s~%s.%s~%s.%s", we.Spec.GetAddress(), we.Name, we.Namespace, we.Namespace, model.DomainSuffix),
			Streams:     1,
			ConnectedAt: now,
			Versions:    versions,
			Acked:       versions,
		})
	}
	slices.SortFunc(proxies, func(a, b xds.ProxyStatus) int { return cmp.Compare(a.ID, b.ID) })
	return &Synthetic{snap: model.NewSnapshot(cfg), traffic: traffic, proxies: proxies}
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// sortConfig sorts cfg's slices by namespace, then name, as loaders do.
func sortConfig(cfg *model.Config) {
	byNSName := func(a, b model.Meta) int {
		if c := cmp.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	}
	slices.SortFunc(cfg.ServiceEntries, func(a, b *model.ServiceEntry) int { return byNSName(a.Meta, b.Meta) })
	slices.SortFunc(cfg.WorkloadEntries, func(a, b *model.WorkloadEntry) int { return byNSName(a.Meta, b.Meta) })
	slices.SortFunc(cfg.VirtualServices, func(a, b *model.VirtualService) int { return byNSName(a.Meta, b.Meta) })
	slices.SortFunc(cfg.DestinationRules, func(a, b *model.DestinationRule) int { return byNSName(a.Meta, b.Meta) })
}

// Options returns Server options that show this mesh.
func (s *Synthetic) Options() Options {
	return Options{Config: s, Proxies: s, Traffic: s, Writer: s}
}

// Current implements ConfigSource.
func (s *Synthetic) Current() ConfigState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ConfigState{Snapshot: s.snap}
}

// Warnings implements ConfigSource; a synthetic mesh has none.
func (s *Synthetic) Warnings() []config.Warning { return nil }

// Proxies implements ProxySource: every workload's proxy, in sync.
func (s *Synthetic) Proxies() []xds.ProxyStatus { return s.proxies }

// Traffic implements TrafficSource.
func (s *Synthetic) Traffic() *Traffic { return s.traffic }

// Editable implements WeightWriter: every VirtualService is.
func (s *Synthetic) Editable(*model.VirtualService) bool { return true }

// SetWeights implements WeightWriter in memory, with Istio's rule that the
// weights of several destinations add up to 100.
func (s *Synthetic) SetWeights(_ context.Context, vs *model.VirtualService, http int, weights []int32) (*model.Config, error) {
	var sum int32
	for _, w := range weights {
		sum += w
	}
	if len(weights) > 1 && sum != 100 {
		return nil, &InvalidChange{Err: fmt.Errorf("%s: %s: spec.http[%d].route: total weight %d, want 100", vs.Source, vs.Key(), http, sum)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.snap.Config
	cfg := &old
	cfg.VirtualServices = slices.Clone(cfg.VirtualServices)
	for i, v := range cfg.VirtualServices {
		if v.Namespace != vs.Namespace || v.Name != vs.Name {
			continue
		}
		spec := proto.Clone(v.Spec).(*networking.VirtualService)
		if http >= len(spec.GetHttp()) || len(spec.Http[http].GetRoute()) != len(weights) {
			return nil, &InvalidChange{Err: errors.New("the route changed meanwhile")}
		}
		for j, w := range weights {
			spec.Http[http].Route[j].Weight = w
		}
		cfg.VirtualServices[i] = &model.VirtualService{Meta: v.Meta, Spec: spec}
		s.snap = model.NewSnapshot(cfg)
		return cfg, nil
	}
	return nil, fmt.Errorf("no %s", vs.Key())
}

package xds

import (
	"bytes"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/trellis-mesh/trellis/internal/model"
)

func stubResources(t *testing.T) *Resources {
	t.Helper()
	p, err := model.ParseProxy(productpageID)
	if err != nil {
		t.Fatal(err)
	}
	res, err := newStub().translate(meshSnapshot("127.0.1.3"), p)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// buildSnapshot builds res as a class snapshot from scratch.
func buildSnapshot(res *Resources) (*classSnap, map[string]string, error) {
	b, err := build(res, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	return b, b.versions, nil
}

func TestBuildSnapshotRejectsWhatTheCacheWouldServeWrongly(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Resources)
		want   string
	}{
		{"cluster with empty name", func(r *Resources) { r.Clusters[0].Name = "" }, "cluster[0]: empty name"},
		{"duplicate listener", func(r *Resources) { r.Listeners = append(r.Listeners, r.Listeners[0]) }, `listener "virtualOutbound": duplicate name`},
		{"nil route", func(r *Resources) { r.Routes = append(r.Routes, nil) }, "route configuration[1]: nil resource"},
		{"Validate() failure", func(r *Resources) { r.Clusters[1].ConnectTimeout = durationpb.New(-1) }, "ConnectTimeout"},
		{"several Validate() failures are all reported", func(r *Resources) {
			r.Listeners[0].FilterChains[0].Filters[0].Name = ""
			r.Listeners[0].ListenerFilters = []*listenerv3.ListenerFilter{{}}
		}, "Name"},
		{"EDS cluster without endpoints", func(r *Resources) { r.Endpoints = r.Endpoints[:1] }, "inconsistent snapshot"},
		{"endpoints for no cluster", func(r *Resources) {
			r.Endpoints = append(r.Endpoints, &endpointv3.ClusterLoadAssignment{ClusterName: "orphan"})
		}, "inconsistent snapshot"},
		{"route config no listener names", func(r *Resources) { r.Routes[0].Name = "8080" }, "inconsistent snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := stubResources(t)
			tc.mutate(res)
			_, _, err := buildSnapshot(res)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestVersionsAreContentHashesPerType(t *testing.T) {
	_, a, err := buildSnapshot(stubResources(t))
	if err != nil {
		t.Fatal(err)
	}
	// Same content in another order: same versions.
	res := stubResources(t)
	res.Clusters[0], res.Clusters[1] = res.Clusters[1], res.Clusters[0]
	_, b, err := buildSnapshot(res)
	if err != nil {
		t.Fatal(err)
	}
	for typ := range a {
		if a[typ] != b[typ] {
			t.Errorf("%s: version %s != %s for the same resources reordered", typ, a[typ], b[typ])
		}
	}
	// One cluster changed: only the cluster version moves.
	res.Clusters[0].LbPolicy = clusterv3.Cluster_RANDOM
	_, c, err := buildSnapshot(res)
	if err != nil {
		t.Fatal(err)
	}
	for typ := range a {
		if changed := a[typ] != c[typ]; changed != (typ == resourcev3.ClusterType) {
			t.Errorf("%s: version changed = %v", typ, changed)
		}
	}
}

func TestTranslatorPanicIsAnErrorNotACrash(t *testing.T) {
	srv := NewServer(Options{Logger: testLogger(t), Translate: func(*model.Snapshot, *model.Proxy) (*Resources, error) {
		panic("boom")
	}})
	p, _ := model.ParseProxy(productpageID)
	if _, err := srv.generate(meshSnapshot(), p); err == nil || !strings.Contains(err.Error(), "panic: boom") {
		t.Fatalf("err = %v", err)
	}
}

// The snapshot holds resources pre-encoded so that the cache does not marshal
// them again for every proxy; what a proxy receives must be the translated
// resources byte for byte, and decode back to them.
func TestSnapshotResourcesEncodeExactlyAsTranslated(t *testing.T) {
	res := stubResources(t)
	snap, _, err := buildSnapshot(res)
	if err != nil {
		t.Fatal(err)
	}
	for i, typ := range res.byType() {
		got := snap.types[i]
		if got.url != typ.url || len(got.items) != len(typ.items) {
			t.Fatalf("%s: %d resources of %s in the snapshot, want %d", typ.url, len(got.items), got.url, len(typ.items))
		}
		for _, want := range typ.items {
			name := cachev3.GetResourceName(want)
			pre, ok := got.index[name]
			if !ok {
				t.Fatalf("%s %q: not in the snapshot", typ.url, name)
			}
			wantBytes, err := cachev3.MarshalResource(want)
			if err != nil {
				t.Fatal(err)
			}
			gotBytes := pre.any.GetValue()
			if pre.any.GetTypeUrl() != typ.url || pre.delta.GetResource() != pre.any || pre.delta.GetVersion() != resourceVersion(wantBytes) {
				t.Errorf("%s %q: wire form has type %s, delta version %s", typ.url, name, pre.any.GetTypeUrl(), pre.delta.GetVersion())
			}
			if !bytes.Equal(gotBytes, wantBytes) {
				t.Errorf("%s %q: encodes differently from the translated resource", typ.url, name)
			}
			decoded := want.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(gotBytes, decoded); err != nil || !proto.Equal(decoded, want) {
				t.Errorf("%s %q: does not decode back to the translated resource (%v)", typ.url, name, err)
			}
		}
	}
}

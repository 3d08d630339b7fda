package xds

import (
	"runtime"
	"testing"
	"time"
	"weak"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// Two classes translated apart but sent the same clusters hold one copy of
// each encoding, and of each type's responses; what differs stays apart.
func TestClassesWithTheSameResourcesShareOneEncoding(t *testing.T) {
	a, err := build(stubResources(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := stubResources(t) // translated again: equal content, other objects
	res.Clusters[0].LbPolicy = clusterv3.Cluster_RANDOM
	b, err := build(res, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range numTypes {
		if shared := a.types[i] == b.types[i]; shared != (i != typeCDS) {
			t.Errorf("%s: type snapshot shared = %v", shortType(typeURLs[i]), shared)
		}
	}
	changed := res.Clusters[0].GetName()
	for _, r := range b.types[typeCDS].items {
		if shared := a.types[typeCDS].index[r.name] == r; shared != (r.name != changed) {
			t.Errorf("cluster %q: encoding shared = %v", r.name, shared)
		}
	}
	// Responses are built once for both classes.
	la, err := a.types[typeEDS].list(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lb, _ := b.types[typeEDS].list(nil, nil)
	if &la.body[0] != &lb.body[0] {
		t.Error("the two classes' EDS responses are two encodings")
	}
}

// A resource that no class holds any more is not kept alive by the table
// that lets classes share it.
func TestSharedEncodingsAreCollectedWhenNoClassHoldsThem(t *testing.T) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "only-in-" + t.Name()}
	r, err := encode(typeURLs[typeEDS], "cla", cla.ClusterName, cla, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := resourceKey{typeURLs[typeEDS], r.name, r.version}
	if sharedResources.load(key) != r {
		t.Fatal("a new encoding is not offered to other classes")
	}
	gone := weak.Make(r)
	r = nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		sharedResources.mu.Lock()
		_, held := sharedResources.m[key]
		sharedResources.mu.Unlock()
		if gone.Value() == nil && !held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("encoding still alive (%v) or still in the table (%v) after every holder let go", gone.Value() != nil, held)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

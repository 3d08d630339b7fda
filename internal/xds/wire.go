package xds

import (
	"reflect"
	"unique"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// wireIndex maps a snapshot's pre-encoded resources (by identity) to their
// wire form, built once with the snapshot and shared by every proxy of its
// class. The snapshot cache would otherwise marshal every resource into a
// fresh Any for every response: at 2000 proxies of 1.6 MB of config each,
// that was gigabytes of copies, kept alive while responses queued.
type wireIndex struct {
	anys  map[types.Resource]*anypb.Any
	delta map[types.Resource]*discoveryv3.Resource // name, version, the same Any
}

func newWireIndex() *wireIndex {
	return &wireIndex{anys: map[types.Resource]*anypb.Any{}, delta: map[types.Resource]*discoveryv3.Resource{}}
}

// add indexes pre, a resource of type url named name encoded as buf. Its
// delta version is what the cache's ConstructVersionMap would compute.
func (w *wireIndex) add(pre types.Resource, name, url string, buf []byte) {
	a := &anypb.Any{TypeUrl: url, Value: buf}
	w.anys[pre] = a
	// Interned like names (see preEncoded): an unchanged resource keeps the
	// very string its proxies were last sent, and the diff is a pointer check.
	version := unique.Make(cachev3.HashResource(buf)).Value()
	w.delta[pre] = &discoveryv3.Resource{Name: cachev3.GetResourceName(pre), Version: version, Resource: a}
}

// classSnapshot is a snapshot whose resources by type are built once:
// the cache asks for them (GetResources) for every watch it opens or
// answers, and the library's Snapshot builds a fresh map each time.
type classSnapshot struct {
	*cachev3.Snapshot
	byType map[string]map[string]types.Resource
}

func newClassSnapshot(s *cachev3.Snapshot) *classSnapshot {
	c := &classSnapshot{Snapshot: s, byType: map[string]map[string]types.Resource{}}
	for _, url := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		c.byType[url] = s.GetResources(url)
	}
	return c
}

// GetResources returns the type's resources; callers only read them.
func (c *classSnapshot) GetResources(typeURL string) map[string]types.Resource {
	if m, ok := c.byType[typeURL]; ok {
		return m
	}
	return c.Snapshot.GetResources(typeURL)
}

// wires holds, per node, the wire index of the snapshot last set and of
// the one before it, so that an answer the cache built from either just
// before a SetSnapshot still finds its resources.
type wires struct{ cur, prev *wireIndex }

func (w wires) lookup(r types.Resource) *anypb.Any {
	if w.cur != nil {
		if a := w.cur.anys[r]; a != nil {
			return a
		}
	}
	if w.prev != nil {
		return w.prev.anys[r]
	}
	return nil
}

func (w wires) lookupDelta(r types.Resource) *discoveryv3.Resource {
	if w.cur != nil {
		if d := w.cur.delta[r]; d != nil {
			return d
		}
	}
	if w.prev != nil {
		return w.prev.delta[r]
	}
	return nil
}

// setWire records idx as node's current wire index. Call before the
// snapshot it belongs to is set: setting it answers open watches at once.
func (c *throttledCache) setWire(node string, idx *wireIndex) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.wire[node]
	if w.cur != idx {
		w.prev, w.cur = w.cur, idx
	}
	c.wire[node] = w
}

func (c *throttledCache) wireOf(node string) wires {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wire[node]
}

// ClearSnapshot drops node's snapshot and its wire indexes.
func (c *throttledCache) ClearSnapshot(node string) {
	c.SnapshotCache.ClearSnapshot(node)
	c.mu.Lock()
	delete(c.wire, node)
	c.mu.Unlock()
}

// sotwWire turns the cache's answer into one whose resources are the
// shared Anys: only the response's list of pointers is this proxy's own.
// An answer holding anything the index does not know (TTLs, heartbeats, a
// snapshot set without an index) is returned as it is, to be marshalled
// by the library as before.
func sotwWire(w wires, r cachev3.Response) cachev3.Response {
	raw, ok := r.(*cachev3.RawResponse)
	if !ok || raw.Heartbeat {
		return r
	}
	res := raw.GetRawResources()
	anys := make([]*anypb.Any, len(res))
	for i, x := range res {
		a := w.lookup(x.Resource)
		if a == nil || x.TTL != nil || a.GetTypeUrl() != raw.GetRequest().GetTypeUrl() {
			return r
		}
		anys[i] = a
	}
	return &cachev3.PassthroughResponse{
		Request: raw.GetRequest(),
		DiscoveryResponse: &discoveryv3.DiscoveryResponse{
			VersionInfo: raw.GetResponseVersion(),
			Resources:   anys,
			TypeUrl:     raw.GetRequest().GetTypeUrl(),
		},
		ReturnedResources: raw.GetReturnedResources(),
	}
}

// deltaWire is sotwWire for delta answers: each resource is the class's
// shared discovery Resource, whose version is the one the cache diffs with.
func deltaWire(w wires, r cachev3.DeltaResponse) cachev3.DeltaResponse {
	raw, ok := r.(*cachev3.RawDeltaResponse)
	if !ok {
		return r
	}
	removed, ok := removedOf(raw)
	if !ok {
		return r
	}
	versions := raw.GetReturnedResources()
	res := raw.GetRawResources()
	out := make([]*discoveryv3.Resource, len(res))
	for i, x := range res {
		d := w.lookupDelta(x.Resource)
		if d == nil || x.TTL != nil || versions[d.GetName()] != d.GetVersion() || d.GetResource().GetTypeUrl() != raw.GetDeltaRequest().GetTypeUrl() {
			return r
		}
		out[i] = d
	}
	return &cachev3.DeltaPassthroughResponse{
		DeltaRequest:   raw.GetDeltaRequest(),
		NextVersionMap: versions,
		DeltaDiscoveryResponse: &discoveryv3.DeltaDiscoveryResponse{
			Resources:         out,
			RemovedResources:  removed,
			TypeUrl:           raw.GetDeltaRequest().GetTypeUrl(),
			SystemVersionInfo: raw.GetResponseVersion(),
		},
	}
}

// removedOf reads the names a delta answer removes. go-control-plane keeps
// them unexported and offers only the marshalling accessor, whose per-
// response copies and hashes are what this file avoids; reflection reads
// the field without touching the rest. ok is false if the field is not
// there (a library change), and the answer then goes out as it is.
func removedOf(raw *cachev3.RawDeltaResponse) (names []string, ok bool) {
	f := reflect.ValueOf(raw).Elem().FieldByName("removedResources")
	if !f.IsValid() || f.Kind() != reflect.Slice || f.Type().Elem().Kind() != reflect.String {
		return nil, false
	}
	if f.Len() == 0 {
		return nil, true
	}
	names = make([]string, f.Len())
	for i := range names {
		names[i] = f.Index(i).String()
	}
	return names, true
}

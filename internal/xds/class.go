package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"sync"
	"sync/atomic"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// typeURLs are the served types in ADS order (and metric index order): a
// proxy learns clusters and their endpoints before the listeners and
// routes that name them.
var typeURLs = [numTypes]string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType}

// resource is one resource of a class snapshot, encoded once and shared by
// every stream it is sent on: streams send these very Anys.
type resource struct {
	name    string // interned
	version string // interned hash of the encoding (what delta clients echo back)
	any     *anypb.Any
	delta   *discoveryv3.Resource // name, version and the same Any
}

// classSnap is what one class of identical proxies is served for one mesh
// snapshot. Immutable once built; every stream of the class points at it.
type classSnap struct {
	types    [numTypes]*typeSnap
	versions map[string]string // type URL → version; shared, never mutated
}

// typeSnap is one type's resources in a class snapshot. An unchanged type
// keeps its typeSnap across mesh snapshots, so "nothing to send" is a
// pointer comparison.
type typeSnap struct {
	url     string
	seq     uint64 // identifies it in other snapshots' caches without keeping it alive
	version string
	items   []*resource // by name
	index   map[string]*resource

	// Responses' shared parts, built on first use by any stream.
	mu    sync.Mutex
	lists map[listKey]*sotwList
	diffs map[listKey]*deltaDiff
}

// sotwList is what a state-of-the-world response of a typeSnap carries,
// and that response encoded but for its nonce (see rawResponse).
type sotwList struct {
	anys []*anypb.Any
	size int // the resources' encoded size
	body []byte
}

// listKey names a cached list: the resources of names (nil: all of them),
// restricted to those changed since the typeSnap numbered from (0: all).
type listKey struct {
	from  uint64
	names *nameSet
}

// deltaDiff is what a delta client that knew one typeSnap must be told to
// know another, and that response encoded but for its nonce.
type deltaDiff struct {
	changed []*discoveryv3.Resource
	removed []string
	size    int // the changed resources' encoded size
	body    []byte
}

// emptyTypeSnap is what a new delta client knows: nothing. Diffs from it
// are a type's whole subscription, shared by every new stream of a class.
var emptyTypeSnap = &typeSnap{seq: typeSnapSeq.Add(1)}

// maxCached bounds a typeSnap's response caches: past it, the cache starts
// over (subscriptions that differ per stream would otherwise grow it).
const maxCached = 64

var typeSnapSeq atomic.Uint64

// typeSnapOf returns the type snapshot of items, sorted by name: old if
// it has the same content, else one that another class holds with the
// same content (see internTypeSnap), else a new one.
func typeSnapOf(url string, items []*resource, old *typeSnap) *typeSnap {
	version := typeVersion(items)
	if old != nil && old.version == version {
		return old
	}
	if shared := sharedTypeSnaps.load(typeSnapKey{url, version}); shared != nil && sameItems(shared.items, items) {
		return shared
	}
	t := &typeSnap{url: url, seq: typeSnapSeq.Add(1), version: version, items: items, index: make(map[string]*resource, len(items))}
	for _, r := range items {
		t.index[r.name] = r
	}
	return internTypeSnap(t)
}

// typeVersion hashes the sorted (name, version) pairs: the same content
// gives the same version however it was built (in full or patched).
func typeVersion(items []*resource) string {
	h := sha256.New()
	var buf []byte
	for _, r := range items {
		buf = strconv.AppendInt(buf[:0], int64(len(r.name)), 10)
		buf = append(append(append(append(append(buf, ':'), r.name...), ':'), r.version...), ';')
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// list returns the resources a state-of-the-world response carries: those
// of names (nil: every one), and of those only the ones whose version
// differs from the typeSnap from when from is not nil. Shared by every
// stream that asks the same; callers must not modify it.
func (t *typeSnap) list(from *typeSnap, names *nameSet) (*sotwList, error) {
	key := listKey{names: names}
	if from != nil {
		key.from = from.seq
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if l, ok := t.lists[key]; ok {
		return l, nil
	}
	var out []*anypb.Any
	add := func(r *resource) {
		if r == nil {
			return
		}
		if from != nil {
			if old := from.index[r.name]; old != nil && old.version == r.version {
				return
			}
		}
		out = append(out, r.any)
	}
	if names == nil {
		out = make([]*anypb.Any, 0, len(t.items))
		for _, r := range t.items {
			add(r)
		}
	} else {
		for _, n := range names.names {
			add(t.index[n])
		}
	}
	l := &sotwList{anys: out, size: anysSize(out)}
	if len(out) > 0 {
		var err error
		l.body, err = gproto.Marshal(&discoveryv3.DiscoveryResponse{VersionInfo: t.version, Resources: out, TypeUrl: t.url})
		if err != nil {
			return nil, err
		}
	}
	if t.lists == nil || len(t.lists) >= maxCached {
		t.lists = map[listKey]*sotwList{}
	}
	t.lists[key] = l
	return l, nil
}

// diff returns what a delta client that knows from, restricted to names
// (nil: wildcard), must be told to know t. Computed once per (from, names)
// for every stream of the class.
func (t *typeSnap) diff(from *typeSnap, names *nameSet) (*deltaDiff, error) {
	key := listKey{from: from.seq, names: names}
	t.mu.Lock()
	defer t.mu.Unlock()
	if d, ok := t.diffs[key]; ok {
		return d, nil
	}
	d := &deltaDiff{}
	in := func(name string) bool { return names == nil || names.has(name) }
	for _, r := range t.items {
		if !in(r.name) {
			continue
		}
		if old := from.index[r.name]; old == nil || old.version != r.version {
			d.changed = append(d.changed, r.delta)
		}
	}
	for _, r := range from.items {
		if in(r.name) && t.index[r.name] == nil {
			d.removed = append(d.removed, r.name)
		}
	}
	resp := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: t.version, Resources: d.changed, RemovedResources: d.removed, TypeUrl: t.url}
	d.size = deltaSize(resp)
	var err error
	if d.body, err = gproto.Marshal(resp); err != nil {
		return nil, err
	}
	if t.diffs == nil || len(t.diffs) >= maxCached {
		t.diffs = map[listKey]*deltaDiff{}
	}
	t.diffs[key] = d
	return d, nil
}

// withType returns a copy of c with typ's snapshot replaced.
func (c *classSnap) withType(typ int, t *typeSnap) *classSnap {
	out := &classSnap{types: c.types, versions: make(map[string]string, numTypes)}
	out.types[typ] = t
	for i, ts := range out.types {
		out.versions[typeURLs[i]] = ts.version
	}
	return out
}

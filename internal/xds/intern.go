package xds

import (
	"bytes"
	"runtime"
	"sync"
	"weak"
)

// Classes of proxies are translated apart, but at 1000 services the proxies
// of twenty namespaces are sent the very same clusters, endpoints and
// routes: without sharing, each class held its own encoding of each one and
// its own response bodies, 80 MB of the control plane's heap. Resources and
// whole type snapshots are therefore interned across classes by content.
// The tables hold them weakly: what no class uses any more is collected.
var (
	sharedResources = newWeakTable[resourceKey, resource]()
	sharedTypeSnaps = newWeakTable[typeSnapKey, typeSnap]()
)

// resourceKey names an encoded resource by content: version is the hash of
// its encoding.
type resourceKey struct{ url, name, version string }

// typeSnapKey names a type snapshot by content: version hashes every
// resource's name and version.
type typeSnapKey struct{ url, version string }

// weakTable maps keys to values it does not keep alive.
type weakTable[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]weak.Pointer[V]
}

func newWeakTable[K comparable, V any]() *weakTable[K, V] {
	return &weakTable[K, V]{m: map[K]weak.Pointer[V]{}}
}

// load returns the live value under k, or nil.
func (t *weakTable[K, V]) load(k K) *V {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[k].Value()
}

// loadOrStore returns the live value under k if there is one, else stores
// and returns v.
func (t *weakTable[K, V]) loadOrStore(k K, v *V) *V {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.m[k].Value(); old != nil {
		return old
	}
	t.m[k] = weak.Make(v)
	runtime.AddCleanup(v, t.forget, k)
	return v
}

// forget drops k once its value is gone; a value stored under k since
// then stays.
func (t *weakTable[K, V]) forget(k K) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if wp, ok := t.m[k]; ok && wp.Value() == nil {
		delete(t.m, k)
	}
}

// sharedResource returns the interned resource with exactly this encoding,
// or nil. It was validated when it was first built.
func sharedResource(url, name, version string, buf []byte) *resource {
	r := sharedResources.load(resourceKey{url, name, version})
	if r == nil || !bytes.Equal(r.any.GetValue(), buf) {
		return nil
	}
	return r
}

// internResource returns r, or the resource with the same content that
// another class holds.
func internResource(url string, r *resource) *resource {
	shared := sharedResources.loadOrStore(resourceKey{url, r.name, r.version}, r)
	if shared != r && !bytes.Equal(shared.any.GetValue(), r.any.GetValue()) {
		return r // a hash collision: keep both apart
	}
	return shared
}

// internTypeSnap returns ts, or the type snapshot with the same resources
// that another class holds, and with it the responses already encoded for
// it.
func internTypeSnap(ts *typeSnap) *typeSnap {
	shared := sharedTypeSnaps.loadOrStore(typeSnapKey{ts.url, ts.version}, ts)
	if shared == ts || !sameItems(shared.items, ts.items) {
		return ts
	}
	return shared
}

func sameItems(a, b []*resource) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && (a[i].name != b[i].name || !bytes.Equal(a[i].any.GetValue(), b[i].any.GetValue())) {
			return false
		}
	}
	return true
}

package xds

import (
	"slices"
	"strings"
	"sync"
)

// nameSet is a subscription to named resources, interned: 2000 streams that
// ask for the same 1200 endpoint names share one copy of them, not 2000.
// It is immutable once interned; refs counts the streams holding it.
type nameSet struct {
	key   string   // the sorted names joined with "\x00"
	names []string // sorted, unique
	set   map[string]struct{}
	// from is the request's list it was interned from. Requests that carry
	// the same encoded list share one decoded slice (see unmarshalRequest),
	// so a client restating its subscription is recognised by pointer.
	from []string
	refs int // guarded by nameSets.mu
}

var nameSets = struct {
	mu sync.Mutex
	m  map[string]*nameSet
	// byFrom finds a set by the request list it was interned from, so
	// the streams of a class, whose requests share one decoded list, do
	// not each sort and join a thousand names to find it.
	byFrom map[*string]*nameSet
}{m: map[string]*nameSet{}, byFrom: map[*string]*nameSet{}}

// has reports whether name is in the set; a nil set holds nothing.
func (n *nameSet) has(name string) bool {
	if n == nil {
		return false
	}
	_, ok := n.set[name]
	return ok
}

// equals reports whether n holds exactly names (in any order, possibly
// repeated), without building a key: most requests restate the subscription.
func (n *nameSet) equals(names []string) bool {
	if n == nil {
		return len(names) == 0
	}
	if len(names) > 0 && len(names) == len(n.from) && &names[0] == &n.from[0] {
		return true
	}
	if len(names) < len(n.names) {
		return false
	}
	for _, x := range names {
		if _, ok := n.set[x]; !ok {
			return false
		}
	}
	// Every name is in n; with repeats allowed, n must not have more.
	if len(names) == len(n.names) {
		return true
	}
	return len(uniqueSorted(names)) == len(n.names)
}

func uniqueSorted(names []string) []string {
	s := slices.Clone(names)
	slices.Sort(s)
	return slices.Compact(s)
}

// internNames returns the shared set of names, taking a reference on it;
// nil for no names. Give it back with release.
func internNames(names []string) *nameSet {
	if len(names) == 0 {
		return nil
	}
	nameSets.mu.Lock()
	if n := nameSets.byFrom[&names[0]]; n != nil && len(n.from) == len(names) {
		n.refs++
		nameSets.mu.Unlock()
		return n
	}
	nameSets.mu.Unlock()
	sorted := uniqueSorted(names)
	key := strings.Join(sorted, "\x00")
	nameSets.mu.Lock()
	defer nameSets.mu.Unlock()
	n := nameSets.m[key]
	if n == nil {
		n = &nameSet{key: key, names: sorted, set: make(map[string]struct{}, len(sorted)), from: names}
		for _, x := range sorted {
			n.set[x] = struct{}{}
		}
		nameSets.m[key] = n
		nameSets.byFrom[&names[0]] = n
	}
	n.refs++
	return n
}

// release gives back a reference taken by internNames; nil is a no-op.
func (n *nameSet) release() {
	if n == nil {
		return
	}
	nameSets.mu.Lock()
	defer nameSets.mu.Unlock()
	n.refs--
	if n.refs == 0 && nameSets.m[n.key] == n {
		delete(nameSets.m, n.key)
		if nameSets.byFrom[&n.from[0]] == n {
			delete(nameSets.byFrom, &n.from[0])
		}
	}
}

package xds

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"unique"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/model"
)

// Resources is one proxy's complete set of Envoy resources, as translation
// produces them. Names must be unique per type.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
}

// TranslateFunc turns the mesh snapshot into one proxy's resources. It must
// not keep or mutate its arguments; the server may call it concurrently for
// different proxies.
type TranslateFunc func(*model.Snapshot, *model.Proxy) (*Resources, error)

// validator is what protoc-gen-validate generates on every Envoy message.
type validator interface{ ValidateAll() error }

// typed is one xDS type's resources, in the order the cache wants them.
type typed struct {
	url   resourcev3.Type
	items []types.Resource
}

func (r *Resources) byType() []typed {
	return []typed{
		{resourcev3.ClusterType, asResources(r.Clusters)},
		{resourcev3.EndpointType, asResources(r.Endpoints)},
		{resourcev3.ListenerType, asResources(r.Listeners)},
		{resourcev3.RouteType, asResources(r.Routes)},
	}
}

func asResources[T types.Resource](in []T) []types.Resource {
	out := make([]types.Resource, len(in))
	for i, r := range in {
		out[i] = r
	}
	return out
}

// build runs the checks every pushed snapshot must pass and returns it
// with a content-hash version per type, so a config change that leaves a
// type untouched does not re-push that type. Every resource is encoded once
// here; streams send the encodings. Resources (and whole types) whose
// encoding equals prev's are prev's, so unchanged config is not held twice
// and "unchanged" is a pointer comparison.
func build(res *Resources, prev *classSnap, cache *encodeCache) (*classSnap, error) {
	if res == nil {
		return nil, errors.New("translation returned no resources")
	}
	check := &cachev3.Snapshot{}
	out := &classSnap{versions: make(map[string]string, numTypes)}
	for i, t := range res.byType() {
		var old *typeSnap
		if prev != nil {
			old = prev.types[i]
		}
		ts, err := checkAndEncode(t, old, cache)
		if err != nil {
			return nil, err
		}
		check.Resources[cachev3.GetResponseType(t.url)] = cachev3.NewResources(ts.version, t.items)
		out.types[i] = ts
		out.versions[t.url] = ts.version
	}
	// Consistency reads references (EDS names in clusters, RDS names in
	// listeners) that only the translated messages expose.
	if err := check.Consistent(); err != nil {
		return nil, fmt.Errorf("inconsistent snapshot: %w", err)
	}
	return out, nil
}

// checkAndEncode validates every resource of one type, rejects duplicate or
// empty names (a client would keep only one), encodes each deterministically
// and returns them sorted by name, reusing old's where the bytes are equal.
func checkAndEncode(t typed, old *typeSnap, cache *encodeCache) (*typeSnap, error) {
	kind := shortType(t.url)
	seen := make(map[string]bool, len(t.items))
	items := make([]*resource, 0, len(t.items))
	for i, r := range t.items {
		if r == nil || !r.ProtoReflect().IsValid() { // a typed nil pointer is a non-nil interface
			return nil, fmt.Errorf("%s[%d]: nil resource", kind, i)
		}
		name := cachev3.GetResourceName(r)
		if name == "" {
			return nil, fmt.Errorf("%s[%d]: empty name", kind, i)
		}
		if seen[name] {
			return nil, fmt.Errorf("%s %q: duplicate name", kind, name)
		}
		seen[name] = true
		enc, err := cache.encode(t.url, kind, name, r, old)
		if err != nil {
			return nil, err
		}
		items = append(items, enc)
	}
	slices.SortFunc(items, func(a, b *resource) int { return strings.Compare(a.name, b.name) })
	return typeSnapOf(t.url, items, old), nil
}

// encodeCache holds, for one mesh snapshot, the encoding of each cluster
// and load assignment that translation returned. Translation shares those
// messages between the proxies of a snapshot (translate.serviceClusters):
// the twenty namespaces' classes of a mesh get the very same 1000 clusters,
// which need encoding and validating once, not twenty times. Keys are the
// messages themselves (pointers), which are never modified once returned.
type encodeCache struct{ m sync.Map } // types.Resource → *resource

type encodeCacheKey struct{}

func encodeCacheOf(mesh *model.Snapshot) *encodeCache {
	return mesh.Memo(encodeCacheKey{}, func() any { return &encodeCache{} }).(*encodeCache)
}

// cached reports whether resources of type url are worth remembering:
// only clusters and load assignments are shared between translations.
func cached(url string) bool { return url == resourcev3.ClusterType || url == resourcev3.EndpointType }

// encode is encode's result for r, remembered when r is a cluster or load
// assignment; a nil cache remembers nothing.
func (c *encodeCache) encode(url, kind, name string, r types.Resource, old *typeSnap) (*resource, error) {
	keep := c != nil && cached(url)
	if keep {
		if v, ok := c.m.Load(r); ok {
			return v.(*resource), nil
		}
	}
	enc, err := encode(url, kind, name, r, old)
	if err == nil && keep {
		c.m.Store(r, enc)
	}
	return enc, err
}

// encode validates and encodes one resource; old's copy when equal.
func encode(url, kind, name string, r types.Resource, old *typeSnap) (*resource, error) {
	buf, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("%s %q: marshal: %w", kind, name, err)
	}
	// The same bytes as the resource old holds: that one was validated and
	// hashed already, and most of a class's resources do not change.
	if old != nil {
		if o := old.index[name]; o != nil && bytes.Equal(o.any.GetValue(), buf) {
			return o, nil
		}
	}
	version := resourceVersion(buf)
	// The same bytes as another class holds: validated there already.
	if shared := sharedResource(url, name, version, buf); shared != nil {
		return shared, nil
	}
	if v, ok := r.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return nil, fmt.Errorf("%s %q: %w", kind, name, err)
		}
	}
	// Interned: an unchanged resource keeps the very strings its proxies
	// were last sent, and comparisons are pointer checks.
	version = unique.Make(version).Value()
	name = unique.Make(name).Value()
	a := &anypb.Any{TypeUrl: url, Value: buf}
	return internResource(url, &resource{name: name, version: version, any: a,
		delta: &discoveryv3.Resource{Name: name, Version: version, Resource: a}}), nil
}

// patchEndpoints returns old with only the given ClusterLoadAssignments
// replaced: an endpoint-only change, without translating anything else.
// Each must replace one old already holds (else the snapshot would stop
// being consistent): an error sends the class to a full translation.
func patchEndpoints(old *classSnap, clas []*endpointv3.ClusterLoadAssignment, cache *encodeCache) (*classSnap, error) {
	eds := old.types[typeEDS]
	items := slices.Clone(eds.items)
	kind := shortType(resourcev3.EndpointType)
	seen := make(map[string]bool, len(clas))
	changed := false
	for i, cla := range clas {
		if cla == nil {
			return nil, fmt.Errorf("%s[%d]: nil resource", kind, i)
		}
		name := cla.GetClusterName()
		if seen[name] {
			return nil, fmt.Errorf("%s %q: duplicate name", kind, name)
		}
		seen[name] = true
		at, found := slices.BinarySearchFunc(items, name, func(r *resource, n string) int { return strings.Compare(r.name, n) })
		if !found {
			return nil, fmt.Errorf("%s %q: not in the class's snapshot", kind, name)
		}
		r, err := cache.encode(resourcev3.EndpointType, kind, name, cla, eds)
		if err != nil {
			return nil, err
		}
		if r != items[at] {
			items[at], changed = r, true
		}
	}
	if !changed {
		return old, nil
	}
	return old.withType(typeEDS, typeSnapOf(resourcev3.EndpointType, items, nil)), nil
}

func shortType(url resourcev3.Type) string {
	switch url {
	case resourcev3.ClusterType:
		return "cluster"
	case resourcev3.EndpointType:
		return "cluster load assignment"
	case resourcev3.ListenerType:
		return "listener"
	case resourcev3.RouteType:
		return "route configuration"
	}
	return url
}

// generate returns proxy's own snapshot for mesh (a class of one).
func (s *Server) generate(mesh *model.Snapshot, proxy *model.Proxy) (*classSnap, error) {
	return s.generateOne(mesh, proxy, nil)
}

func (s *Server) generateOne(mesh *model.Snapshot, proxy *model.Proxy, prev *classSnap) (b *classSnap, err error) {
	s.translating <- struct{}{}
	defer func() { <-s.translating }()
	// A translator bug for one proxy must not take down the control plane
	// serving every other proxy.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("translate: panic: %v\n%s", r, debug.Stack())
		}
	}()
	res, err := s.translate(mesh, proxy)
	if err != nil {
		return nil, fmt.Errorf("translate: %w", err)
	}
	b, err = build(res, prev, encodeCacheOf(mesh))
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return b, nil
}

// translateEndpointsSafe is Options.TranslateEndpoints with a panic made
// an error, as for TranslateFunc.
func (s *Server) translateEndpointsSafe(mesh *model.Snapshot, proxy *model.Proxy, hosts []string) (out []*endpointv3.ClusterLoadAssignment, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("translate endpoints: panic: %v\n%s", r, debug.Stack())
		}
	}()
	return s.translateEndpoints(mesh, proxy, hosts)
}

// resourceVersion is a resource's version: 64 bits of the SHA-256 of its
// encoding, as hex. Delta sends it with every resource and clients echo it
// back; go-control-plane's whole 256-bit hash was 48 more bytes per
// resource, 6% of a delta proxy's first config at 1000 services.
func resourceVersion(buf []byte) string {
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:8])
}

package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"time"
	"unique"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

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

// buildSnapshot runs the checks every pushed snapshot must pass and returns
// it with a content-hash version per type, so a config change that leaves a
// type untouched does not re-push that type. The snapshot holds every
// resource already encoded (see preEncoded): the cache marshals a resource
// for every response to every proxy, which at thousands of proxies was most
// of the control plane's CPU.
func buildSnapshot(res *Resources) (*cachev3.Snapshot, map[string]string, error) {
	b, err := build(res)
	if err != nil {
		return nil, nil, err
	}
	return b.snap.Snapshot, b.versions, nil
}

// built is one translated, checked snapshot with what serving it needs.
type built struct {
	snap     *classSnapshot
	versions map[string]string // type URL → content-hash version
	wire     *wireIndex        // the snapshot's resources as shared Anys
}

func build(res *Resources) (*built, error) {
	if res == nil {
		return nil, errors.New("translation returned no resources")
	}
	check, snap := &cachev3.Snapshot{}, &cachev3.Snapshot{VersionMap: map[string]map[string]string{}}
	versions := make(map[string]string, 4)
	wire := newWireIndex()
	for _, t := range res.byType() {
		version, encoded, err := checkAndHash(t, wire)
		if err != nil {
			return nil, err
		}
		check.Resources[cachev3.GetResponseType(t.url)] = cachev3.NewResources(version, t.items)
		snap.Resources[cachev3.GetResponseType(t.url)] = cachev3.NewResources(version, encoded)
		versions[t.url] = version
		// The delta versions, as ConstructVersionMap would hash them, from
		// the encodings at hand: that would marshal every resource again.
		vm := make(map[string]string, len(encoded))
		for _, r := range encoded {
			vm[cachev3.GetResourceName(r)] = wire.delta[r].GetVersion()
		}
		snap.VersionMap[t.url] = vm
	}
	// Consistency reads references (EDS names in clusters, RDS names in
	// listeners) that the encoded form no longer exposes: check the originals.
	if err := check.Consistent(); err != nil {
		return nil, fmt.Errorf("inconsistent snapshot: %w", err)
	}
	return &built{snap: newClassSnapshot(snap), versions: versions, wire: wire}, nil
}

// checkAndHash validates every resource of one type, rejects duplicate or
// empty names (the cache would silently keep only one), and hashes the
// deterministic encoding of the whole set in name order. It returns the
// resources in their pre-encoded form, and adds each one's wire form to wire.
func checkAndHash(t typed, wire *wireIndex) (string, []types.Resource, error) {
	kind := shortType(t.url)
	named := make([]namedResource, 0, len(t.items))
	seen := make(map[string]bool, len(t.items))
	for i, r := range t.items {
		if r == nil || !r.ProtoReflect().IsValid() { // a typed nil pointer is a non-nil interface
			return "", nil, fmt.Errorf("%s[%d]: nil resource", kind, i)
		}
		name := cachev3.GetResourceName(r)
		if name == "" {
			return "", nil, fmt.Errorf("%s[%d]: empty name", kind, i)
		}
		if seen[name] {
			return "", nil, fmt.Errorf("%s %q: duplicate name", kind, name)
		}
		seen[name] = true
		if v, ok := r.(validator); ok {
			if err := v.ValidateAll(); err != nil {
				return "", nil, fmt.Errorf("%s %q: %w", kind, name, err)
			}
		}
		named = append(named, namedResource{name, r})
	}
	slices.SortFunc(named, func(a, b namedResource) int { return strings.Compare(a.name, b.name) })
	h := sha256.New()
	enc := proto.MarshalOptions{Deterministic: true}
	encoded := make([]types.Resource, 0, len(named))
	for _, n := range named {
		buf, err := enc.Marshal(n.res)
		if err != nil {
			return "", nil, fmt.Errorf("%s %q: marshal: %w", kind, n.name, err)
		}
		fmt.Fprintf(h, "%d:%s:%d:", len(n.name), n.name, len(buf))
		h.Write(buf)
		pre, err := preEncoded(n.res, n.name, buf)
		if err != nil {
			return "", nil, fmt.Errorf("%s %q: %w", kind, n.name, err)
		}
		encoded = append(encoded, pre)
		wire.add(pre, n.name, t.url, buf)
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), encoded, nil
}

// preEncoded returns a message of r's type that encodes to exactly buf,
// r's deterministic encoding, at the cost of a copy: only its name is set,
// and the rest of buf is kept as unknown fields, which encoding appends
// verbatim after the known ones. The four xDS types all have their name as
// field 1, which a deterministic encoding writes first, so name + rest is
// buf byte for byte. The cache needs nothing of a resource but its name and
// its encoding; the translated tree is then garbage, not held per proxy.
func preEncoded(r types.Resource, name string, buf []byte) (types.Resource, error) {
	num, typ, n := protowire.ConsumeTag(buf)
	if n < 0 || num != 1 || typ != protowire.BytesType {
		return nil, errors.New("encoding does not start with the name (field 1)")
	}
	v, m := protowire.ConsumeBytes(buf[n:])
	if m < 0 || string(v) != name {
		return nil, errors.New("encoding does not start with the name (field 1)")
	}
	rest := protoreflect.RawFields(buf[n+m:])
	// One string per distinct name across every snapshot, so that the
	// cache's per-proxy diffs (name-keyed maps of old and new) compare
	// pointers rather than bytes for names that did not change.
	name = unique.Make(name).Value()
	var out types.Resource
	switch r.(type) {
	case *clusterv3.Cluster:
		out = &clusterv3.Cluster{Name: name}
	case *endpointv3.ClusterLoadAssignment:
		out = &endpointv3.ClusterLoadAssignment{ClusterName: name}
	case *listenerv3.Listener:
		out = &listenerv3.Listener{Name: name}
	case *routev3.RouteConfiguration:
		out = &routev3.RouteConfiguration{Name: name}
	default:
		return r, nil
	}
	if len(rest) > 0 {
		out.ProtoReflect().SetUnknown(rest)
	}
	return out, nil
}

type namedResource struct {
	name string
	res  types.Resource
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

// reconcile brings one proxy's cache entry up to the latest mesh snapshot.
// Failures leave the previous entry in place: a proxy keeps running the last
// config that passed every check, and other proxies are unaffected.
func (s *Server) reconcile(ctx context.Context, st *proxyState) {
	s.reconcileChange(ctx, st, time.Time{})
}

// reconcileChange is reconcile for a config change made at changedAt: if
// the proxy's config changes, its convergence is timed from then until it
// has ACKed every type it is subscribed to. A zero changedAt (a proxy
// connecting) times nothing.
func (s *Server) reconcileChange(ctx context.Context, st *proxyState, changedAt time.Time) {
	start := time.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.forgotten {
		return
	}
	mesh := s.latest.Load()
	if mesh == nil {
		return // no config yet; the first Update reconciles every proxy
	}
	s.mu.Lock()
	proxy := st.proxy
	s.mu.Unlock()

	b, err := s.generate(mesh, proxy)
	var versions map[string]string
	if err == nil {
		versions = b.versions
	}
	// The change is pending before the cache may send it: SetSnapshot answers
	// open watches at once, and a response sent before pendingSince was set
	// would never count towards convergence.
	s.mu.Lock()
	changed := err == nil && !maps.Equal(st.versions, versions)
	prevSince, prevSent, prevVersions := st.pendingSince, st.sentSincePending, st.versions
	if changed {
		s.startPending(st, changedAt)
		st.versions = versions // what ACKs are compared with from now on
	}
	s.mu.Unlock()
	if err == nil {
		// The wire forms first: SetSnapshot answers open watches at once.
		s.cache.setWire(proxy.ID, b.wire)
		err = s.cache.SetSnapshot(ctx, proxy.ID, b.snap)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if changed {
			st.pendingSince, st.sentSincePending, st.versions = prevSince, prevSent, prevVersions
		}
		st.lastErr = err.Error()
		s.metrics.internalErrors.Inc()
		s.log.Error("xDS push rejected; proxy keeps its previous config", "proxy", proxy.ID, "error", err)
		return
	}
	st.lastErr = ""
	if changed {
		s.log.Debug("xDS snapshot set", "proxy", proxy.ID, "versions", versions)
		took := time.Since(start).Seconds()
		for url, v := range versions {
			if t := typeIndex(url); t >= 0 && prevVersions[url] != v {
				s.metrics.pushTime[t].Observe(took)
			}
		}
	}
	s.checkConverged(st, false)
}

// generate returns proxy's snapshot for mesh: the one shared by its class
// when a ShareKey is set and the class translated without error (an error
// names the proxy, so it is reported from the proxy's own translation).
func (s *Server) generate(mesh *model.Snapshot, proxy *model.Proxy) (*built, error) {
	if s.shareKey != nil {
		if key, ok := s.shareKey(mesh, proxy); ok {
			e := s.shared.get(mesh, s.latest.Load(), key, func() (*built, error) {
				return s.generateOne(mesh, proxy)
			})
			if e != nil && e.err == nil {
				return e.built, nil
			}
		}
	}
	return s.generateOne(mesh, proxy)
}

func (s *Server) generateOne(mesh *model.Snapshot, proxy *model.Proxy) (b *built, err error) {
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
	b, err = build(res)
	if err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return b, nil
}

package xds

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/trellis-mesh/trellis/internal/model"
)

// ShareKeyFunc names the class of proxies whose translation of mesh is
// identical, so that one translated, validated and hashed snapshot serves
// all of them: 2000 sidecars of one namespace then cost one translation and
// one copy of their resources, not 2000. Two proxies may get the same key
// only if the TranslateFunc gives them byte-identical resources; when in
// doubt a key must tell proxies apart. ok false means "do not share".
type ShareKeyFunc func(mesh *model.Snapshot, p *model.Proxy) (key string, ok bool)

// TranslateShareKey is the ShareKeyFunc for translate.Build. What a proxy's
// resources are computed from, and so what the key holds:
//
//   - node type, namespace, DNS domain and interception mode: every part of
//     translation reads them (Sidecar, DestinationRule, PeerAuthentication,
//     Telemetry and exportTo lookups are by namespace);
//   - the node's LABELS metadata, sorted (Sidecar/policy workload selectors);
//   - the IP when a WorkloadEntry or Pod sits at it (inbound listeners,
//     bind addresses, its labels) or in interception mode NONE (every
//     listener binds the proxy's own address);
//   - the workload name when no label names the canonical service (the
//     telemetry filters fall back to it).
//
// Gateways (router) are few and read more of the node; they are not shared.
// A sidecar that no WorkloadEntry describes, in REDIRECT mode, with an app
// label — the common case at scale — shares with its namespace's peers of
// the same labels.
func TranslateShareKey(mesh *model.Snapshot, p *model.Proxy) (string, bool) {
	if p.Type != model.SidecarProxy {
		return "", false
	}
	var b strings.Builder
	b.WriteString(string(p.Type))
	b.WriteByte('~')
	b.WriteString(p.Namespace)
	b.WriteByte('~')
	b.WriteString(p.DNSDomain)
	b.WriteByte('~')
	b.WriteString(string(p.Interception))
	b.WriteByte('~')
	if p.Interception == model.InterceptNone || mesh.WorkloadAt(p.IP) != nil {
		b.WriteString(p.IP)
	}
	b.WriteByte('~')
	if !namesService(p.Labels) {
		b.WriteString(p.Name)
	}
	for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
		// Length-prefixed so that no label value can forge another key.
		b.WriteString("~" + strconv.Itoa(len(k)) + ":" + k + "=" + strconv.Itoa(len(p.Labels[k])) + ":" + p.Labels[k])
	}
	return b.String(), true
}

// namesService reports whether labels name the canonical service, so the
// workload name does not reach the resources.
func namesService(labels map[string]string) bool {
	for _, k := range []string{"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"} {
		if labels[k] != "" {
			return true
		}
	}
	return false
}

// classes holds the class snapshots built for the latest mesh, by class
// key, so that a proxy connecting between pushes joins its class's
// snapshot. Only the latest mesh's entries are kept: a build against an
// older mesh is not cached.
type classes struct {
	mu      sync.Mutex
	seq     uint64 // mesh number the entries are for
	entries map[string]*classEntry
}

type classEntry struct {
	once sync.Once
	snap *classSnap
	err  error
}

// get returns key's class snapshot for mesh m, building it with build once
// however many callers ask at the same time.
func (c *classes) get(m, latest *mesh, key string, build func() (*classSnap, error)) (*classSnap, error) {
	e := c.entry(m, latest, key)
	if e == nil {
		return build()
	}
	e.once.Do(func() { e.snap, e.err = build() })
	return e.snap, e.err
}

// put records snap as key's class snapshot for m, unless one is there.
func (c *classes) put(m, latest *mesh, key string, snap *classSnap) {
	if e := c.entry(m, latest, key); e != nil {
		e.once.Do(func() { e.snap = snap })
	}
}

// entry is key's entry for m; nil when m is not the latest mesh.
func (c *classes) entry(m, latest *mesh, key string) *classEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seq != m.seq {
		if m != latest {
			return nil
		}
		c.seq, c.entries = m.seq, map[string]*classEntry{}
	}
	e := c.entries[key]
	if e == nil {
		e = &classEntry{}
		c.entries[key] = e
	}
	return e
}

// classKey is proxy's class under mesh: its ShareKey, or its own node ID
// (a class of one) when it is not shared. shared reports which.
func (s *Server) classKey(mesh *model.Snapshot, proxy *model.Proxy) (key string, shared bool) {
	if s.shareKey != nil {
		if k, ok := s.shareKey(mesh, proxy); ok {
			return "s\x00" + k, true
		}
	}
	return "p\x00" + proxy.ID, false
}

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

// shared holds the snapshots built for the latest mesh, by share key. Only
// the latest mesh's entries are kept: a reconcile against an older mesh
// (a stream that loaded it just before an Update) builds its own.
type shared struct {
	mu      sync.Mutex
	mesh    *model.Snapshot
	entries map[string]*sharedEntry
}

type sharedEntry struct {
	once  sync.Once
	built *built
	err   error
}

// get returns the entry for key under mesh, building it with build once
// however many proxies ask at the same time; nil when mesh is not latest.
func (c *shared) get(mesh, latest *model.Snapshot, key string, build func() (*built, error)) *sharedEntry {
	c.mu.Lock()
	if c.mesh != mesh {
		if mesh != latest {
			c.mu.Unlock()
			return nil
		}
		c.mesh, c.entries = mesh, map[string]*sharedEntry{}
	}
	e := c.entries[key]
	if e == nil {
		e = &sharedEntry{}
		c.entries[key] = e
	}
	c.mu.Unlock()
	e.once.Do(func() {
		e.built, e.err = build()
		if e.err == nil {
			// The cache builds a snapshot's per-resource versions (delta)
			// lazily and without a lock; build them now, before the
			// snapshot is shared between proxies' goroutines.
			e.err = e.built.snap.ConstructVersionMap()
		}
	})
	return e
}

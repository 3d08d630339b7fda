package istiometrics

import (
	"encoding/base64"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Unknown is the value of a label the proxy cannot know, as Istio writes it.
const Unknown = "unknown"

// Istio's node metadata keys (pilot/pkg/model.NodeMetadata) that say who a proxy is.
const (
	KeyName           = "NAME"
	KeyNamespace      = "NAMESPACE"
	KeyWorkloadName   = "WORKLOAD_NAME"
	KeyLabels         = "LABELS"
	KeyServiceAccount = "SERVICE_ACCOUNT"
	KeyClusterID      = "CLUSTER_ID"
	KeyMeshID         = "MESH_ID"
)

// Labels Istio reads from LABELS.
const (
	LabelApp               = "app"
	LabelVersion           = "version"
	LabelCanonicalName     = "service.istio.io/canonical-name"
	LabelCanonicalRevision = "service.istio.io/canonical-revision"
)

// The metadata exchange headers: the peer's node metadata as a base64 protobuf Struct, and its node
// ID. Canonical MIME keys, as http.Header holds them.
const (
	HeaderPeerMetadata   = "X-Envoy-Peer-Metadata"
	HeaderPeerMetadataID = "X-Envoy-Peer-Metadata-Id"
)

// Identity is one workload instance as Istio's standard labels describe it. Empty fields are
// unknown. An Identity is immutable once built; the filters compare them by pointer.
type Identity struct {
	Name, Namespace, Workload  string
	App, Version               string
	CanonicalService, Revision string
	ServiceAccount             string
	Cluster, Mesh              string
	// NodeID is the proxy's xDS node ID (the exchange's -Id header); empty for identities read from
	// endpoint metadata.
	NodeID string
}

// Principal is the SPIFFE identity mTLS would prove, "spiffe://cluster.local/ns/<ns>/sa/<sa>";
// empty when the service account or namespace is unknown.
func (id *Identity) Principal(trustDomain string) string {
	if id == nil || id.ServiceAccount == "" || id.Namespace == "" {
		return ""
	}
	return "spiffe://" + trustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// IdentityFromNode reads a proxy's identity from its node metadata, Istio's keys, and fills what
// is missing from the node ID ("sidecar~127.0.1.3~reviews-v1.default~default.svc.cluster.local":
// name reviews-v1, namespace default).
func IdentityFromNode(nodeID string, md *structpb.Struct) *Identity {
	id := identityFromStruct(md)
	id.NodeID = nodeID
	if id.Name == "" || id.Namespace == "" {
		parts := strings.Split(nodeID, "~")
		if len(parts) == 4 {
			name, ns, _ := strings.Cut(parts[2], ".")
			if id.Name == "" {
				id.Name = name
			}
			if id.Namespace == "" {
				id.Namespace = ns
			}
		}
	}
	id.fillDefaults()
	return id
}

func identityFromStruct(md *structpb.Struct) *Identity {
	f := md.GetFields()
	str := func(k string) string { return f[k].GetStringValue() }
	id := &Identity{
		Name: str(KeyName), Namespace: str(KeyNamespace), Workload: str(KeyWorkloadName),
		ServiceAccount: str(KeyServiceAccount), Cluster: str(KeyClusterID), Mesh: str(KeyMeshID),
	}
	labels := f[KeyLabels].GetStructValue().GetFields()
	lbl := func(k string) string { return labels[k].GetStringValue() }
	id.App, id.Version = lbl(LabelApp), lbl(LabelVersion)
	id.CanonicalService, id.Revision = lbl(LabelCanonicalName), lbl(LabelCanonicalRevision)
	return id
}

// fillDefaults applies Istio's fallbacks: the workload is the pod name when not given, the
// canonical service is the app label (else the workload), the canonical revision the version label
// (else "latest").
func (id *Identity) fillDefaults() {
	if id.Workload == "" {
		id.Workload = id.Name
	}
	if id.CanonicalService == "" {
		id.CanonicalService = id.App
		if id.CanonicalService == "" {
			id.CanonicalService = id.Workload
		}
	}
	if id.Revision == "" {
		id.Revision = id.Version
		if id.Revision == "" {
			id.Revision = "latest"
		}
	}
}

// IdentityFromWorkloadMetadata parses Istio's istio.workload endpoint metadata,
// "name;namespace;canonical-service;canonical-revision;cluster". Istio's stats take the app and
// version of such a destination from its canonical service and revision. ok is false when the
// string does not have that form.
func IdentityFromWorkloadMetadata(s string) (id *Identity, ok bool) {
	parts := strings.Split(s, ";")
	if len(parts) != 5 {
		return nil, false
	}
	id = &Identity{Workload: parts[0], Namespace: parts[1], CanonicalService: parts[2], Revision: parts[3], Cluster: parts[4]}
	id.App, id.Version = id.CanonicalService, id.Revision
	if id.Revision == "latest" {
		id.Version = ""
	}
	return id, true
}

// ExchangeValue is the x-envoy-peer-metadata value a proxy with identity id sends: Istio's identity
// keys as a protobuf Struct, base64. Other node metadata stays home (INTERCEPTION_MODE and the like
// mean nothing to a peer).
func ExchangeValue(id *Identity) string {
	fields := map[string]*structpb.Value{}
	put := func(k, v string) {
		if v != "" {
			fields[k] = structpb.NewStringValue(v)
		}
	}
	put(KeyName, id.Name)
	put(KeyNamespace, id.Namespace)
	put(KeyWorkloadName, id.Workload)
	put(KeyServiceAccount, id.ServiceAccount)
	put(KeyClusterID, id.Cluster)
	put(KeyMeshID, id.Mesh)
	labels := map[string]*structpb.Value{}
	for k, v := range map[string]string{LabelApp: id.App, LabelVersion: id.Version,
		LabelCanonicalName: id.CanonicalService, LabelCanonicalRevision: id.Revision} {
		if v != "" {
			labels[k] = structpb.NewStringValue(v)
		}
	}
	fields[KeyLabels] = structpb.NewStructValue(&structpb.Struct{Fields: labels})
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&structpb.Struct{Fields: fields})
	if err != nil {
		return "" // a Struct of strings always marshals
	}
	return base64.StdEncoding.EncodeToString(b)
}

// ParseExchangeValue decodes an x-envoy-peer-metadata value.
func ParseExchangeValue(v string) (*Identity, bool) {
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, false
	}
	var s structpb.Struct
	if err := proto.Unmarshal(b, &s); err != nil {
		return nil, false
	}
	id := identityFromStruct(&s)
	id.fillDefaults()
	return id, true
}

// DefaultPeerCacheSize is Istio's max_peer_cache_size default.
const DefaultPeerCacheSize = 500

// PeerCache remembers decoded peers by their header value (or workload metadata string), so that
// a peer is decoded once, not per request. When full it starts afresh, which bounds it against
// peers that send a new value every time.
type PeerCache struct {
	max int
	mu  sync.RWMutex
	m   map[string]*Identity
}

// NewPeerCache returns a cache of up to max peers (DefaultPeerCacheSize when max <= 0).
func NewPeerCache(max int) *PeerCache {
	if max <= 0 {
		max = DefaultPeerCacheSize
	}
	return &PeerCache{max: max, m: make(map[string]*Identity)}
}

// Get returns the identity cached for key, or the one parse makes of it (nil when it cannot).
func (c *PeerCache) Get(key string, parse func(string) (*Identity, bool)) *Identity {
	c.mu.RLock()
	id, ok := c.m[key]
	c.mu.RUnlock()
	if ok {
		return id
	}
	id, ok = parse(key)
	if !ok {
		id = nil
	}
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[strings.Clone(key)] = id // the key may alias a pooled buffer
	c.mu.Unlock()
	return id
}

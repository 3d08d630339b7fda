package xds

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/model"
)

// proxyState is what the server knows about one node ID, guarded by
// Server.mu.
type proxyState struct {
	forgotten bool // dropped from the server, never push again

	proxy *model.Proxy
	// cur is the proxy's class snapshot (shared with its class), built for
	// mesh number meshSeq under class key classKey.
	cur      *classSnap
	meshSeq  uint64
	classKey string
	members  map[*stream]struct{} // open streams, notified of a new cur
	// hooks are OnConnect/OnDisconnect calls queued for runHooks.
	hooks       []func()
	hookRunning bool

	streams     int
	connectedAt time.Time
	forget      *time.Timer
	versions    map[string]string // type URL → version in the cache
	sent        map[string]string // type URL → version last sent to the proxy
	acked       map[string]string // type URL → version the proxy last ACKed
	lastNACK    *NACK
	lastErr     string

	nodeInfo   nodeInfo
	delta      bool  // the proxy's latest stream is a delta stream
	subscribed uint8 // bit typeIndex set once the proxy has requested that type
	// pendingSince is when the oldest config change the proxy has not yet
	// fully ACKed was made; zero when it has converged.
	pendingSince time.Time
	// sentSincePending: a response went out after pendingSince was set.
	sentSincePending bool
}

// NACK is a proxy's rejection of a response.
type NACK struct {
	TypeURL string
	Version string // version rejected; "" if the nonce was not recognised
	Nonce   string
	Message string
	At      time.Time
}

// ProxyStatus is a connected (or recently disconnected) proxy's sync state.
type ProxyStatus struct {
	ID          string
	Streams     int // open streams; 0 while waiting to be forgotten
	ConnectedAt time.Time
	// IstioVersion is the proxy's ISTIO_VERSION node metadata, else its
	// user agent version; ClusterID its CLUSTER_ID metadata ("" if none).
	IstioVersion string
	ClusterID    string
	// Versions is type URL → version of the config the server holds for
	// the proxy; Sent what was last sent on its stream; Acked what the
	// proxy last accepted. SyncStatus compares Sent and Acked.
	Versions map[string]string
	Sent     map[string]string
	Acked    map[string]string
	LastNACK *NACK
	// LastError is why the latest reconcile failed (translation or
	// validation); "" once one succeeds.
	LastError string
}

// Proxies returns the status of every proxy the server tracks, sorted by ID.
func (s *Server) Proxies() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(s.proxies))
	for id, st := range s.proxies {
		ps := ProxyStatus{
			ID:           id,
			Streams:      st.streams,
			ConnectedAt:  st.connectedAt,
			IstioVersion: st.nodeInfo.istioVersion,
			ClusterID:    st.nodeInfo.clusterID,
			Versions:     maps.Clone(st.versions),
			Sent:         maps.Clone(st.sent),
			Acked:        maps.Clone(st.acked),
			LastError:    st.lastErr,
		}
		if st.lastNACK != nil {
			n := *st.lastNACK
			ps.LastNACK = &n
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b ProxyStatus) int { return strings.Compare(a.ID, b.ID) })
	return out
}

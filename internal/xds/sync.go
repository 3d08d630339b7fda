package xds

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Sync states of one xDS type of one proxy, as istioctl proxy-status prints
// them.
const (
	Synced  = "SYNCED"   // the proxy ACKed the last version sent
	NotSent = "NOT SENT" // nothing of this type was sent (not subscribed, or nothing to send yet)
	Stale   = "STALE"    // a version was sent and not (yet) ACKed: in flight, or NACKed
)

// SyncStatus compares the version last sent of a type with the version the
// proxy last ACKed, as istioctl does.
func SyncStatus(sent, acked string) string {
	switch {
	case sent == "":
		return NotSent
	case sent == acked:
		return Synced
	}
	return Stale
}

// Istio node metadata keys read for status and metrics only.
const (
	metaIstioVersion = "ISTIO_VERSION"
	metaClusterID    = "CLUSTER_ID"
)

// nodeInfo is what a proxy says about itself that only status shows.
type nodeInfo struct {
	istioVersion string
	clusterID    string
}

func nodeInfoOf(node *corev3.Node) nodeInfo {
	md := node.GetMetadata().GetFields()
	info := nodeInfo{
		istioVersion: md[metaIstioVersion].GetStringValue(),
		clusterID:    md[metaClusterID].GetStringValue(),
	}
	if info.istioVersion == "" {
		// trellis-proxy and Envoy both say their version here.
		info.istioVersion = node.GetUserAgentVersion()
	}
	return info
}

// anysSize is the encoded size of a response's resources, what
// pilot_xds_config_size_bytes measures; it reads lengths only.
func anysSize(anys []*anypb.Any) int {
	n := 0
	for _, a := range anys {
		n += len(a.GetValue())
	}
	return n
}

func deltaSize(r *discoveryv3.DeltaDiscoveryResponse) int {
	n := 0
	for _, res := range r.GetResources() {
		n += len(res.GetResource().GetValue())
	}
	return n
}

// checkConverged records pilot_proxy_convergence_time once a proxy with a
// pending config change has caught up. Call with s.mu held; onACK says the
// call follows an ACK.
//
// A state-of-the-world proxy has caught up when it has ACKed the current
// version of every type it subscribes to: the server re-sends a subscribed
// type whenever its version changes. A delta proxy is sent a type only when
// a resource it subscribes to changed, so "current version" cannot be
// required of it; it has caught up when it has ACKed everything sent to it
// since the change, checked on its ACKs only.
func (s *Server) checkConverged(st *proxyState, onACK bool) {
	if st.pendingSince.IsZero() || (st.delta && (!onACK || !st.sentSincePending)) {
		return
	}
	for url, version := range st.versions {
		t := typeIndex(url)
		if t < 0 || st.subscribed&(1<<t) == 0 {
			continue
		}
		if st.delta {
			if st.sent[url] != st.acked[url] {
				return
			}
		} else if st.acked[url] != version {
			return
		}
	}
	s.metrics.convergence.Observe(time.Since(st.pendingSince).Seconds())
	st.pendingSince, st.sentSincePending = time.Time{}, false
}

// startPending notes a config change made at changedAt that altered a
// proxy's config. Call with s.mu held. The oldest unconverged change is
// kept, so a proxy that falls behind shows it; but a delta proxy with
// nothing outstanding was not sent the earlier change at all, so that one
// is replaced.
func (s *Server) startPending(st *proxyState, changedAt time.Time) {
	if changedAt.IsZero() {
		return
	}
	if st.pendingSince.IsZero() || (st.delta && !outstanding(st)) {
		st.pendingSince, st.sentSincePending = changedAt, false
	}
}

// outstanding reports whether a response sent to the proxy awaits its ACK.
func outstanding(st *proxyState) bool {
	for url, v := range st.sent {
		if st.acked[url] != v {
			return true
		}
	}
	return false
}

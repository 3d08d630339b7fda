package xds

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// openStream registers a stream on its first request, rejecting nodes
// whose ID Trellis cannot route for, and brings its proxy's config up to
// date so that the first request is answered at once.
func (s *Server) openStream(str *stream, node *corev3.Node) (*proxyState, error) {
	proxy, err := proxyFromNode(node)
	if err != nil {
		s.log.Warn("rejected xDS stream", "node", node.GetId(), "error", err)
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	info := nodeInfoOf(node)
	str.nodeID, str.version = proxy.ID, info.istioVersion

	s.mu.Lock()
	s.streams[str.key] = str
	s.metrics.proxyConnected(str.version)
	st, ok := s.proxies[proxy.ID]
	if !ok {
		st = &proxyState{connectedAt: time.Now(), members: map[*stream]struct{}{}}
		s.proxies[proxy.ID] = st
	}
	st.nodeInfo, st.delta = info, str.key.delta
	if st.forget != nil {
		st.forget.Stop()
		st.forget = nil
	}
	st.proxy = proxy // a reconnect may bring new labels
	st.streams++
	st.members[str] = struct{}{}
	if s.onConnect != nil {
		st.hooks = append(st.hooks, func() { s.onConnect(node) })
	}
	s.mu.Unlock()
	s.runHooks(st)
	s.log.Info("proxy connected", "proxy", proxy.ID, "delta", str.key.delta, "interception", proxy.Interception)
	s.reconcile(st)
	return st, nil
}

// runHooks calls st's queued OnConnect/OnDisconnect hooks in order, outside
// the server lock and never two at once for one node.
func (s *Server) runHooks(st *proxyState) {
	s.mu.Lock()
	if st.hookRunning {
		s.mu.Unlock()
		return // the running caller drains what was queued
	}
	st.hookRunning = true
	for len(st.hooks) > 0 {
		h := st.hooks[0]
		st.hooks = st.hooks[1:]
		s.mu.Unlock()
		h()
		s.mu.Lock()
	}
	st.hookRunning = false
	s.mu.Unlock()
}

// reportHealth hands a proxy's health report to OnHealth, queued behind
// its connect hook so that the receiver knows the proxy by then.
func (s *Server) reportHealth(st *proxyState, nodeID string, failure *rejection) {
	if s.onHealth == nil {
		return
	}
	healthy, message := failure == nil, ""
	if failure != nil {
		message = failure.message
	}
	s.mu.Lock()
	st.hooks = append(st.hooks, func() { s.onHealth(nodeID, healthy, message) })
	s.mu.Unlock()
	s.runHooks(st)
}

// rejection is what a NACK carries: the proxy's error detail.
type rejection struct {
	code    int32
	message string
}

func nackOf(req *discoveryv3.DiscoveryRequest) *rejection { return rejectionOf(req.GetErrorDetail()) }
func nackOfDelta(req *discoveryv3.DeltaDiscoveryRequest) *rejection {
	return rejectionOf(req.GetErrorDetail())
}

// rejectionOf returns a request's rejection, or nil for a request that
// does not reject anything.
func rejectionOf(detail *rpcstatus.Status) *rejection {
	if detail == nil {
		return nil
	}
	return &rejection{code: detail.GetCode(), message: detail.GetMessage()}
}

// subscribe notes that the proxy asked for type t.
func (s *Server) subscribe(st *proxyState, t int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.subscribed |= 1 << t
}

// recordReply records the ACK or NACK of the response of type t that
// carried version and nonce.
func (s *Server) recordReply(str *stream, t int, version, nonce string, nack *rejection) {
	url := typeURLs[t]
	s.mu.Lock()
	defer s.mu.Unlock()
	st := str.st
	if nack == nil {
		if st.acked == nil {
			st.acked = map[string]string{}
		}
		st.acked[url] = version
		s.checkConverged(st, true)
		return
	}
	st.lastNACK = &NACK{TypeURL: url, Version: version, Nonce: nonce, Message: nack.message, At: time.Now()}
	s.metrics.rejected(t, str.nodeID, nack.code)
	s.log.Warn("proxy rejected config (NACK)", "proxy", str.nodeID, "type", url, "version", version, "error", nack.message)
}

func (s *Server) recordSent(str *stream, t int, version string, size int) {
	s.metrics.sent(t, size)
	s.memory.add(size)
	url := typeURLs[t]
	s.mu.Lock()
	defer s.mu.Unlock()
	st := str.st
	if st.sent == nil {
		st.sent = map[string]string{}
	}
	st.sent[url] = version
	// Only a response carrying the pending config counts: this is recorded
	// after the send, by when a newer config may have become pending.
	if !st.pendingSince.IsZero() && version == st.versions[url] {
		st.sentSincePending = true
	}
}

// recordInStep records that the proxy holds version of type t without a
// response: nothing it subscribes to changed (see pushSotw).
func (s *Server) recordInStep(str *stream, t int, version string) {
	url := typeURLs[t]
	s.mu.Lock()
	defer s.mu.Unlock()
	st := str.st
	if st.sent == nil {
		st.sent = map[string]string{}
	}
	if st.acked == nil {
		st.acked = map[string]string{}
	}
	st.sent[url], st.acked[url] = version, version
	s.checkConverged(st, true)
}

// closeStream forgets a stream and, once a proxy has none left, schedules
// dropping its state.
func (s *Server) closeStream(str *stream) {
	s.mu.Lock()
	delete(s.streams, str.key)
	s.metrics.proxyDisconnected(str.version)
	st := str.st
	st.streams--
	delete(st.members, str)
	s.log.Info("proxy stream closed", "proxy", str.nodeID, "delta", str.key.delta, "streams_left", st.streams)
	if st.streams == 0 {
		if st.forget == nil {
			id := str.nodeID
			st.forget = time.AfterFunc(s.forgetAfter, func() { s.forget(id, st) })
		}
		if s.onDisconnect != nil {
			id := str.nodeID
			st.hooks = append(st.hooks, func() { s.onDisconnect(id) })
		}
	}
	s.mu.Unlock()
	s.runHooks(st)
}

// forget drops a disconnected proxy's state, unless it reconnected.
func (s *Server) forget(id string, st *proxyState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.streams > 0 || s.proxies[id] != st {
		return
	}
	delete(s.proxies, id)
	st.forgotten = true
	st.forget = nil
	st.cur = nil
	s.log.Debug("forgot disconnected proxy", "proxy", id)
}

func (s *Server) stopForgetTimers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.proxies {
		if st.forget != nil {
			st.forget.Stop()
			st.forget = nil
		}
	}
}

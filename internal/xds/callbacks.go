package xds

import (
	"context"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// streamKey identifies a stream: the SotW and delta servers number their
// streams independently.
type streamKey struct {
	delta bool
	id    int64
}

type streamState struct {
	nodeID  string
	version string // the proxy's version, the pilot_xds label it is counted under
	// sent maps type URL → the last response on this stream, so an ACK or
	// NACK (which names only a nonce) can be tied to the version it is about.
	sent map[string]sentResponse
}

type sentResponse struct{ nonce, version string }

// callbacks hooks the server into go-control-plane's stream lifecycle. The
// library calls them synchronously on each stream's goroutine.
type callbacks struct {
	s   *Server
	ctx context.Context // Serve's: ends pushes made from a stream when serving stops
}

var _ serverv3.Callbacks = callbacks{}

func (c callbacks) OnStreamOpen(context.Context, int64, string) error      { return nil }
func (c callbacks) OnDeltaStreamOpen(context.Context, int64, string) error { return nil }
func (c callbacks) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "REST xDS is not served; use ADS")
}
func (c callbacks) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

func (c callbacks) OnStreamClosed(id int64, _ *corev3.Node) {
	c.s.closeStream(streamKey{false, id})
}

func (c callbacks) OnDeltaStreamClosed(id int64, _ *corev3.Node) {
	c.s.closeStream(streamKey{true, id})
}

func (c callbacks) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	if req.GetResponseNonce() != "" { // an ACK or NACK: that response is no longer in flight
		c.s.ackedInFlight(streamKey{false, id}, req.GetNode().GetId(), req.GetTypeUrl())
	}
	return c.s.onRequest(c.ctx, streamKey{false, id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), nackOf(req.GetErrorDetail()))
}

func (c callbacks) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	if req.GetResponseNonce() != "" {
		c.s.ackedInFlight(streamKey{true, id}, req.GetNode().GetId(), req.GetTypeUrl())
	}
	// Only the first delta request must carry the node; the library fills
	// it in for later ones after this callback, so it may be nil here.
	return c.s.onRequest(c.ctx, streamKey{true, id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), nackOf(req.GetErrorDetail()))
}

func (c callbacks) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	c.s.recordSent(streamKey{false, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo(), sotwSize(resp))
}

func (c callbacks) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	c.s.recordSent(streamKey{true, id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo(), deltaSize(resp))
}

// onRequest registers a stream on its first request (rejecting nodes whose
// ID Trellis cannot route for) and records ACKs and NACKs after that.
func (s *Server) onRequest(ctx context.Context, key streamKey, node *corev3.Node, typeURL, nonce string, nack *rejection) error {
	s.mu.Lock()
	ss, known := s.streams[key]
	if known {
		if node.GetId() != "" && node.GetId() != ss.nodeID {
			s.mu.Unlock()
			s.log.Warn("rejected xDS stream: node ID changed mid-stream", "proxy", ss.nodeID, "new_id", node.GetId())
			return status.Errorf(codes.InvalidArgument, "node ID changed on the stream from %q to %q", ss.nodeID, node.GetId())
		}
		s.recordReply(ss, typeURL, nonce, nack)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()

	proxy, err := proxyFromNode(node)
	if err != nil {
		s.log.Warn("rejected xDS stream", "node", node.GetId(), "error", err)
		return status.Errorf(codes.InvalidArgument, "%v", err)
	}

	info := nodeInfoOf(node)
	s.mu.Lock()
	ss = &streamState{nodeID: proxy.ID, version: info.istioVersion, sent: map[string]sentResponse{}}
	s.streams[key] = ss
	s.metrics.proxyConnected(ss.version)
	st, ok := s.proxies[proxy.ID]
	if !ok {
		st = &proxyState{connectedAt: time.Now()}
		s.proxies[proxy.ID] = st
	}
	st.nodeInfo, st.delta = info, key.delta
	if st.forget != nil {
		st.forget.Stop()
		st.forget = nil
	}
	st.proxy = proxy // a reconnect may bring new labels
	st.streams++
	first := st.streams == 1
	s.recordReply(ss, typeURL, nonce, nack)
	s.mu.Unlock()
	s.log.Info("proxy connected", "proxy", proxy.ID, "delta", key.delta, "interception", proxy.Interception)
	if first && s.onConnect != nil {
		s.onConnect(node)
	}

	// Reconcile before the library opens the watch for this request, so a
	// new proxy gets its config on its very first request.
	s.reconcile(ctx, st)
	return nil
}

// rejection is what a NACK carries: the proxy's error detail.
type rejection struct {
	code    int32
	message string
}

// nackOf returns a request's rejection, or nil for a request that does not
// reject anything.
func nackOf(detail *rpcstatus.Status) *rejection {
	if detail == nil {
		return nil
	}
	return &rejection{code: detail.GetCode(), message: detail.GetMessage()}
}

// recordReply notes a subscription to typeURL, and an ACK or NACK of an
// earlier response. Call with s.mu held.
func (s *Server) recordReply(ss *streamState, typeURL, nonce string, nack *rejection) {
	st := s.proxies[ss.nodeID]
	if st == nil {
		return
	}
	if t := typeIndex(typeURL); t >= 0 {
		st.subscribed |= 1 << t
	}
	if nonce == "" {
		return // a subscription, not a reply to a response
	}
	var version string
	if sent, ok := ss.sent[typeURL]; ok && sent.nonce == nonce {
		version = sent.version
	}
	if nack == nil {
		if version != "" {
			if st.acked == nil {
				st.acked = map[string]string{}
			}
			st.acked[typeURL] = version
			s.checkConverged(st, true)
		}
		return
	}
	st.lastNACK = &NACK{TypeURL: typeURL, Version: version, Nonce: nonce, Message: nack.message, At: time.Now()}
	s.metrics.rejected(typeIndex(typeURL), ss.nodeID, nack.code)
	s.log.Warn("proxy rejected config (NACK)", "proxy", ss.nodeID, "type", typeURL, "version", version, "error", nack.message)
}

func (s *Server) recordSent(key streamKey, typeURL, nonce, version string, size int) {
	s.metrics.sent(typeIndex(typeURL), size)
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.streams[key]
	if !ok {
		return
	}
	ss.sent[typeURL] = sentResponse{nonce: nonce, version: version}
	if st := s.proxies[ss.nodeID]; st != nil {
		if st.sent == nil {
			st.sent = map[string]string{}
		}
		st.sent[typeURL] = version
		st.sentSincePending = !st.pendingSince.IsZero()
	}
}

// closeStream forgets a stream and, once a proxy has none left, schedules
// dropping its snapshot.
func (s *Server) closeStream(key streamKey) {
	if id, last := s.dropStream(key); last && s.onDisconnect != nil {
		s.onDisconnect(id)
	}
}

// dropStream is closeStream under s.mu; last says the node has no stream
// left.
func (s *Server) dropStream(key streamKey) (id string, last bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.streams[key]
	if !ok {
		return "", false // rejected before it was registered
	}
	delete(s.streams, key)
	s.metrics.proxyDisconnected(ss.version)
	st := s.proxies[ss.nodeID]
	if st == nil {
		return "", false
	}
	st.streams--
	s.log.Info("proxy stream closed", "proxy", ss.nodeID, "delta", key.delta, "streams_left", st.streams)
	if st.streams == 0 && st.forget == nil {
		id := ss.nodeID
		st.forget = time.AfterFunc(s.forgetAfter, func() { s.forget(id, st) })
	}
	return ss.nodeID, st.streams == 0
}

// forget drops a disconnected proxy's snapshot, unless it reconnected.
func (s *Server) forget(id string, st *proxyState) {
	st.mu.Lock() // wait out a reconcile in flight so it cannot re-add the snapshot
	defer st.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.streams > 0 || s.proxies[id] != st {
		return
	}
	delete(s.proxies, id)
	st.forgotten = true
	st.forget = nil
	s.cache.ClearSnapshot(id)
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

// ackedInFlight returns the push throttle's slot of a response the proxy
// has answered. The node is taken from the stream when the request does not
// carry it: delta requests after the first need not, and the library fills
// it in only after the callback.
func (s *Server) ackedInFlight(key streamKey, nodeID, typeURL string) {
	if nodeID == "" {
		s.mu.Lock()
		if ss := s.streams[key]; ss != nil {
			nodeID = ss.nodeID
		}
		s.mu.Unlock()
	}
	s.cache.release(throttleKey{nodeID, typeURL})
}

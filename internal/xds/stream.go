package xds

import (
	"context"
	"errors"
	"io"
	"maps"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// streamKey identifies a stream.
type streamKey struct {
	delta bool
	id    int64
}

// stream is one ADS stream. One goroutine owns it: it reads requests (from
// a receiving goroutine) and push notifications, and sends. It holds no
// copy of any resource: per type, pointers to the class's shared type
// snapshots and an interned subscription.
type stream struct {
	s      *Server
	key    streamKey
	ctx    context.Context
	notify chan struct{} // capacity 1: pushes coalesce into one of the latest

	// Set on the first request.
	nodeID  string
	version string // the proxy's version, the pilot_xds label it is counted under
	st      *proxyState

	nonce uint64
	types [numTypes]typeState

	// send writes a response: a *DiscoveryResponse or
	// *DeltaDiscoveryResponse, or a *rawResponse (see codec).
	send func(any) error
}

// typeState is one type's state on a stream.
type typeState struct {
	subscribed bool
	wildcard   bool
	names      *nameSet // explicit subscription (interned); nil with wildcard
	nonce      string   // of the last response sent
	version    string   // of the last response sent

	// State of the world.
	pending bool      // a request awaits its response (SotW answers only those)
	sent    *typeSnap // what the last response was computed from
	full    bool      // next response carries every subscribed resource
	force   bool      // answer even if nothing changed (a fresh request)

	// Delta: the client knows known (restricted to its subscription)
	// except for exc, name → the version it has ("": none). A stream in
	// step with its class has exc nil.
	known *typeSnap
	exc   map[string]string
	first bool // the first request is not answered yet
}

// adsService serves ADS on gRPC; the per-type REST and streaming services
// are not registered, so a fetch is answered Unimplemented.
type adsService struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	s   *Server
	ctx context.Context // Serve's: ends every stream on shutdown
}

func (a adsService) StreamAggregatedResources(gs discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	str := a.s.newStream(gs.Context(), false)
	str.send = gs.SendMsg
	return runStream(a.ctx, str, gs.Recv, (*discoveryv3.DiscoveryRequest).GetTypeUrl, (*discoveryv3.DiscoveryRequest).GetResponseNonce, str.onSotwRequest)
}

func (a adsService) DeltaAggregatedResources(gs discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	str := a.s.newStream(gs.Context(), true)
	str.send = gs.SendMsg
	return runStream(a.ctx, str, gs.Recv, (*discoveryv3.DeltaDiscoveryRequest).GetTypeUrl, (*discoveryv3.DeltaDiscoveryRequest).GetResponseNonce, str.onDeltaRequest)
}

func (s *Server) newStream(ctx context.Context, delta bool) *stream {
	return &stream{s: s, ctx: ctx, key: streamKey{delta, s.streamIDs.Add(1)}, notify: make(chan struct{}, 1)}
}

// runStream is a stream's life: requests and pushes in, responses out,
// until the client goes, a request is refused, or serving stops.
func runStream[R any](serving context.Context, str *stream, recv func() (R, error), typeURL, nonce func(R) string, handle func(R) error) error {
	defer str.close()
	reqs := make(chan R, 4)
	errc := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	// The receiver ends when the stream does: gRPC fails Recv once the
	// handler has returned.
	go func() {
		for {
			req, err := recv()
			if err != nil {
				errc <- err
				return
			}
			// An ACK or NACK: that response is no longer in flight. Released
			// here, not on the stream's goroutine, which may itself be
			// waiting for a slot.
			if nonce(req) != "" {
				if t := typeIndex(typeURL(req)); t >= 0 {
					str.s.throttle.release(slotKey{str.key, t})
				}
			}
			select {
			case reqs <- req:
			case <-done:
				return
			}
		}
	}()
	for {
		select {
		case <-serving.Done():
			return status.Error(codes.Unavailable, "xDS server shutting down")
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case req := <-reqs:
			if err := handle(req); err != nil {
				return err
			}
		case <-str.notify:
		}
		if err := str.flush(); err != nil {
			return err
		}
	}
}

// open registers the stream under node, on its first request.
func (str *stream) open(node *corev3.Node) error {
	st, err := str.s.openStream(str, node)
	if err != nil {
		return err
	}
	str.st = st
	return nil
}

// checkNode refuses a request that names another node than the first.
func (str *stream) checkNode(node *corev3.Node) error {
	if str.st == nil {
		return str.open(node)
	}
	if id := node.GetId(); id != "" && id != str.nodeID {
		str.s.log.Warn("rejected xDS stream: node ID changed mid-stream", "proxy", str.nodeID, "new_id", id)
		return status.Errorf(codes.InvalidArgument, "node ID changed on the stream from %q to %q", str.nodeID, id)
	}
	return nil
}

func (str *stream) close() {
	for i := range str.types {
		str.types[i].names.release()
		str.types[i].names = nil
	}
	str.s.throttle.releaseStream(str.key)
	if str.st != nil {
		str.s.closeStream(str)
	}
}

// flush sends, in ADS order, every type whose response is due. Types go
// back to back, without waiting for ACKs in between, as istiod does.
func (str *stream) flush() error {
	if str.st == nil {
		return nil
	}
	snap := str.s.current(str.st)
	if snap == nil {
		return nil
	}
	for t := range numTypes {
		var err error
		if str.key.delta {
			err = str.pushDelta(t, snap.types[t])
		} else {
			err = str.pushSotw(t, snap.types[t])
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (str *stream) nextNonce() string {
	str.nonce++
	return strconv.FormatUint(str.nonce, 10)
}

// acquire takes t's throttle slot for a response of size bytes; an error
// if the stream ended waiting.
func (str *stream) acquire(t, size int) error {
	if !str.s.throttle.acquire(str.ctx, slotKey{str.key, t}, size) {
		return str.ctx.Err()
	}
	return nil
}

func (str *stream) onSotwRequest(req *discoveryv3.DiscoveryRequest) error {
	if err := str.checkNode(req.GetNode()); err != nil {
		return err
	}
	if req.GetTypeUrl() == HealthInfoType {
		str.s.reportHealth(str.st, str.nodeID, rejectionOf(req.GetErrorDetail()))
		return nil
	}
	t := typeIndex(req.GetTypeUrl())
	if t < 0 {
		return nil // not served: never answered, as for a resource that does not exist
	}
	ts := &str.types[t]
	if n := req.GetResponseNonce(); n != "" {
		if n != ts.nonce {
			return nil // stale: a later response is on its way, which the client will answer
		}
		nack := nackOf(req)
		str.s.recordReply(str, t, ts.version, n, nack)
		if nack != nil {
			ts.full = true // the client kept its older config: send it everything again
		}
	} else {
		ts.force = true
	}
	if !ts.subscribed {
		ts.subscribed = true
		str.s.subscribe(str.st, t)
	}
	names := req.GetResourceNames()
	wildcard := len(names) == 0 || (len(names) == 1 && names[0] == "*")
	if wildcard != ts.wildcard || (!wildcard && !ts.names.equals(names)) {
		ts.names.release()
		ts.names = nil
		if !wildcard {
			ts.names = internNames(names)
		}
		ts.wildcard, ts.full = wildcard, true
	}
	ts.pending = true
	return nil
}

// pushSotw answers t's pending request if cur differs from what was sent.
// Listeners and clusters go whole; endpoints and routes, to a client that
// has the previous snapshot of its subscription, only what changed (the
// client keeps what a response leaves out, as Envoy does for EDS and RDS).
func (str *stream) pushSotw(t int, cur *typeSnap) error {
	ts := &str.types[t]
	if !ts.pending || cur == nil || (ts.sent == cur && !ts.force && !ts.full) {
		return nil
	}
	var list *sotwList
	var err error
	switch {
	case ts.wildcard:
		list, err = cur.list(nil, nil)
	case !ts.full && !ts.force && ts.sent != nil && (t == typeEDS || t == typeRDS):
		list, err = cur.list(ts.sent, ts.names)
		if err == nil && len(list.anys) == 0 {
			// Nothing the client asked for changed: it is already in step.
			ts.sent, ts.version = cur, cur.version
			str.s.recordInStep(str, t, cur.version)
			return nil
		}
	default:
		list, err = cur.list(nil, ts.names)
	}
	if err != nil {
		return status.Errorf(codes.Internal, "encode %s response: %v", shortType(cur.url), err)
	}
	size := list.size
	if err := str.acquire(t, size); err != nil {
		return err
	}
	nonce := str.nextNonce()
	var resp any = &rawResponse{body: list.body, nonce: nonce}
	if list.body == nil { // no resources: nothing was encoded
		resp = &discoveryv3.DiscoveryResponse{VersionInfo: cur.version, TypeUrl: cur.url, Nonce: nonce}
	}
	if err := str.send(resp); err != nil {
		return err
	}
	str.s.throttle.sent(slotKey{str.key, t})
	ts.sent, ts.nonce, ts.version = cur, nonce, cur.version
	ts.pending, ts.full, ts.force = false, false, false
	str.s.recordSent(str, t, cur.version, size)
	return nil
}

func (str *stream) onDeltaRequest(req *discoveryv3.DeltaDiscoveryRequest) error {
	if err := str.checkNode(req.GetNode()); err != nil {
		return err
	}
	if req.GetTypeUrl() == HealthInfoType {
		str.s.reportHealth(str.st, str.nodeID, rejectionOf(req.GetErrorDetail()))
		return nil
	}
	t := typeIndex(req.GetTypeUrl())
	if t < 0 {
		return nil
	}
	ts := &str.types[t]
	if n := req.GetResponseNonce(); n != "" && n == ts.nonce {
		str.s.recordReply(str, t, ts.version, n, nackOfDelta(req))
	}
	subscribe := req.GetResourceNamesSubscribe()
	if !ts.subscribed {
		ts.subscribed, ts.first = true, true
		str.s.subscribe(str.st, t)
		// Listeners and clusters are wildcard unless the client names some;
		// endpoints and routes are always asked for by name.
		ts.wildcard = (t == typeCDS || t == typeLDS) && (len(subscribe) == 0 || slices.Contains(subscribe, "*"))
		if irv := req.GetInitialResourceVersions(); len(irv) > 0 {
			ts.exc = maps.Clone(irv)
		}
	}
	var add, drop []string
	for _, n := range subscribe {
		switch {
		case n == "*":
			if !ts.wildcard {
				// What the client has is what it knew by name; everything
				// else is new to it.
				ts.exc = str.knownVersions(ts)
				ts.known, ts.wildcard = nil, true
				ts.names.release()
				ts.names = nil
			}
		case !ts.wildcard && !ts.names.has(n):
			add = append(add, n)
		}
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		switch {
		case n == "*":
			ts.wildcard = false
		case ts.names.has(n):
			drop = append(drop, n)
		}
		delete(ts.exc, n)
	}
	if len(add) > 0 || len(drop) > 0 {
		names := slices.DeleteFunc(slices.Clone(namesOf(ts.names)), func(n string) bool { return slices.Contains(drop, n) })
		// Exactly the request's list: intern that very slice, which the
		// class's other streams share (see unmarshalRequest).
		asRequested := len(names) == 0 && len(add) == len(subscribe)
		// A client that has nothing is sent the class's diff from nothing
		// (below): no need to note, name by name, that it has none.
		knowsNothing := ts.known == nil && hasNone(ts.exc)
		if ts.exc == nil && !knowsNothing {
			ts.exc = map[string]string{}
		}
		for _, n := range add {
			if !asRequested {
				names = append(names, n)
			}
			if _, ok := ts.exc[n]; !ok && !knowsNothing {
				ts.exc[n] = "" // the client has none: send it
			}
		}
		if asRequested {
			names = subscribe
		}
		ts.names.release()
		ts.names = internNames(names)
	}
	if ts.known == nil && hasNone(ts.exc) {
		// The client has nothing of its subscription (a new stream asking
		// for endpoints by name): that is the class's shared diff from
		// nothing, not a response built for this stream alone.
		ts.exc = nil
	}
	return nil
}

func namesOf(n *nameSet) []string {
	if n == nil {
		return nil
	}
	return n.names
}

// knownVersions is what the client holds of its explicit subscription.
func (str *stream) knownVersions(ts *typeState) map[string]string {
	out := map[string]string{}
	for _, n := range namesOf(ts.names) {
		out[n] = ts.clientVersion(n)
	}
	return out
}

// clientVersion is the version the client holds of name ("": none).
func (ts *typeState) clientVersion(name string) string {
	if v, ok := ts.exc[name]; ok {
		return v
	}
	if ts.known != nil {
		if r := ts.known.index[name]; r != nil {
			return r.version
		}
	}
	return ""
}

// pushDelta tells the client what changed in its subscription since what
// it knows. A stream in step with its class moves from one class snapshot
// to the next with a diff computed once for the whole class.
func (str *stream) pushDelta(t int, cur *typeSnap) error {
	ts := &str.types[t]
	if !ts.subscribed || cur == nil || (ts.known == cur && ts.exc == nil && !ts.first) {
		return nil
	}
	var d *deltaDiff
	var err error
	names := ts.names
	if ts.wildcard {
		names = nil
	}
	switch {
	case !ts.wildcard && ts.names == nil:
		d = &deltaDiff{} // subscribed to nothing (yet)
	case ts.exc == nil && ts.known != nil:
		d, err = cur.diff(ts.known, names)
	case ts.exc == nil:
		// A new client: its whole subscription, as every new client of the
		// class with that subscription is sent.
		d, err = cur.diff(emptyTypeSnap, names)
	default:
		d = &deltaDiff{}
		d.changed, d.removed = ts.compare(cur)
	}
	if err != nil {
		return status.Errorf(codes.Internal, "encode %s response: %v", shortType(cur.url), err)
	}
	if len(d.changed) == 0 && len(d.removed) == 0 && !ts.first {
		ts.known, ts.exc = cur, nil
		return nil
	}
	size := d.size
	var resp any
	if d.body != nil {
		resp = &rawResponse{body: d.body}
	} else {
		r := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: cur.version, Resources: d.changed, RemovedResources: d.removed, TypeUrl: cur.url}
		size, resp = deltaSize(r), r
	}
	if err := str.acquire(t, size); err != nil {
		return err
	}
	nonce := str.nextNonce()
	switch r := resp.(type) {
	case *rawResponse:
		r.nonce = nonce
	case *discoveryv3.DeltaDiscoveryResponse:
		r.Nonce = nonce
	}
	if err := str.send(resp); err != nil {
		return err
	}
	str.s.throttle.sent(slotKey{str.key, t})
	ts.known, ts.exc, ts.first = cur, nil, false
	ts.nonce, ts.version = nonce, cur.version
	str.s.recordSent(str, t, cur.version, size)
	return nil
}

// compare is the diff for a client whose state is not one of the class's
// snapshots (a reconnect with initial_resource_versions, a subscription
// change): name by name over its subscription.
func (ts *typeState) compare(cur *typeSnap) (changed []*discoveryv3.Resource, removed []string) {
	if !ts.wildcard {
		for _, n := range ts.names.names {
			r, v := cur.index[n], ts.clientVersion(n)
			switch {
			case r != nil && r.version != v:
				changed = append(changed, r.delta)
			case r == nil && v != "":
				removed = append(removed, n)
			}
		}
		return changed, removed
	}
	for _, r := range cur.items {
		if r.version != ts.clientVersion(r.name) {
			changed = append(changed, r.delta)
		}
	}
	gone := func(n string) {
		if cur.index[n] == nil && ts.clientVersion(n) != "" && !slices.Contains(removed, n) {
			removed = append(removed, n)
		}
	}
	if ts.known != nil {
		for _, r := range ts.known.items {
			gone(r.name)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(ts.exc)) {
		gone(n)
	}
	return changed, removed
}

// hasNone reports whether a client's versions by name say it has none of
// the resources (every version empty).
func hasNone(versions map[string]string) bool {
	for _, v := range versions {
		if v != "" {
			return false
		}
	}
	return true
}

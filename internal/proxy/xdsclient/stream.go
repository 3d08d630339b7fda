package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// stream is the state of one ADS stream. All its methods run on the goroutine that called runStream,
// which is the only sender on the stream.
type stream struct {
	c        *Client
	ads      discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	nodeSent bool

	nonces    map[string]string   // latest response nonce per type
	sent      map[string][]string // names in the latest request per type
	requested map[string]bool     // a request for the type went out on this stream
	held      map[string]heldResponse

	healthSent *healthState // the health report this stream last carried
}

// heldResponse is a resend of an already-rejected version, waiting before it is tried again.
type heldResponse struct {
	resp *discoveryv3.DiscoveryResponse
	due  time.Time
}

// runStream opens one ADS stream and serves it until it fails or ctx is done. gotResponse tells Run
// whether the stream got far enough to reset the reconnect backoff.
func (c *Client) runStream(ctx context.Context, conn *grpc.ClientConn) (gotResponse bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		return false, fmt.Errorf("opening ADS stream: %w", err)
	}
	responses := make(chan *discoveryv3.DiscoveryResponse)
	recvErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			resp, err := ads.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case responses <- resp:
			case <-sctx.Done():
				return
			}
		}
	}()

	s := &stream{
		c:         c,
		ads:       ads,
		nonces:    make(map[string]string, len(requestOrder)),
		sent:      make(map[string][]string, len(requestOrder)),
		requested: make(map[string]bool, len(requestOrder)),
		held:      make(map[string]heldResponse),
	}
	// A stale kick would only cause an idle look at the subscriptions; drop it so the first requests
	// below are the whole story.
	select {
	case <-c.kick:
	default:
	}
	for _, t := range requestOrder {
		// An empty first request for EDS/RDS would be a legacy wildcard subscription: skip it.
		if isWildcard(t) || len(c.subscribed(t)) > 0 {
			if err := s.sendRequest(s.request(t, "")); err != nil {
				return false, s.streamError(ctx, err, responses, recvErr)
			}
		}
	}
	// Istio's agent, too, resends its latest health report once a new stream's first requests are
	// out: the control plane learns the node from the first message, and a reconnect (or another
	// replica) must not wait for the next transition to know the application's state.
	if err := s.sendHealth(); err != nil {
		return false, s.streamError(ctx, err, responses, recvErr)
	}
	c.setConnected()
	c.log.Info("ADS stream open")

	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		if due, ok := s.nextRetry(); ok {
			retry.Reset(time.Until(due))
		} else {
			retry.Stop()
		}
		var err error
		select {
		case <-ctx.Done():
			return gotResponse, ctx.Err()
		case err := <-recvErr:
			return gotResponse, recvError(err)
		case resp := <-responses:
			gotResponse = true
			err = s.onResponse(resp)
		case <-c.kick:
			if err = s.sendSubscriptions(); err == nil {
				err = s.sendHealth()
			}
		case now := <-retry.C:
			err = s.retryHeld(now)
		}
		if err != nil {
			return gotResponse, s.streamError(ctx, err, responses, recvErr)
		}
	}
}

func recvError(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("control plane closed the ADS stream")
	}
	return fmt.Errorf("ADS stream: %w", err)
}

// streamError turns a failed Send into the stream's real status: gRPC reports a broken stream to
// Send as a bare io.EOF and leaves the reason to Recv.
func (s *stream) streamError(ctx context.Context, err error, responses <-chan *discoveryv3.DiscoveryResponse, recvErr <-chan error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		select {
		case e := <-recvErr:
			return recvError(e)
		case <-responses: // unblock the receiver so it can report the status
		case <-ctx.Done():
			return err
		}
	}
}

// request builds a request for typeURL with the current subscription and last ACKed version.
func (s *stream) request(typeURL, nonce string) *discoveryv3.DiscoveryRequest {
	var names []string
	if !isWildcard(typeURL) {
		names = s.c.subscribed(typeURL)
	}
	return &discoveryv3.DiscoveryRequest{
		VersionInfo:   s.c.ackedVersion(typeURL),
		ResourceNames: names,
		TypeUrl:       typeURL,
		ResponseNonce: nonce,
	}
}

func (s *stream) sendRequest(req *discoveryv3.DiscoveryRequest) error {
	t := req.GetTypeUrl()
	if !s.nodeSent {
		req.Node = s.c.cfg.Node
	}
	if err := s.ads.Send(req); err != nil {
		return fmt.Errorf("sending %s request: %w", shortType(t), err)
	}
	s.nodeSent = true
	s.requested[t] = true
	s.sent[t] = req.GetResourceNames()
	if !isWildcard(t) {
		s.c.prune(t, req.GetResourceNames())
	}
	s.c.log.Debug("sent xDS request", "type", shortType(t), "version", req.GetVersionInfo(),
		"nonce", req.GetResponseNonce(), "names", req.GetResourceNames(), "nack", req.GetErrorDetail() != nil)
	return nil
}

// sendSubscriptions sends a request for each by-name type whose subscription changed on this stream.
// It carries the type's latest nonce: servers (go-control-plane among them) drop requests with a
// stale one, which is safe because the ACK of the newer response repeats the current names.
func (s *stream) sendSubscriptions() error {
	for _, t := range requestOrder {
		if isWildcard(t) {
			continue
		}
		names := s.c.subscribed(t)
		if slices.Equal(names, s.sent[t]) || (len(names) == 0 && !s.requested[t]) {
			continue
		}
		if err := s.sendRequest(s.request(t, s.nonces[t])); err != nil {
			return err
		}
	}
	return nil
}

// sendHealth sends the application's health (Istio's HealthInformation request) when it differs
// from what this stream last carried. It never goes first on a stream: the node travels on the
// first message only, and the control plane must know the proxy before it reads a report.
func (s *stream) sendHealth() error {
	h := s.c.currentHealth()
	if h == nil || !s.nodeSent || (s.healthSent != nil && *s.healthSent == *h) {
		return nil
	}
	req := &discoveryv3.DiscoveryRequest{TypeUrl: HealthInfoType}
	if !h.healthy {
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.Internal), Message: h.message}
	}
	if err := s.ads.Send(req); err != nil {
		return fmt.Errorf("sending health report: %w", err)
	}
	s.healthSent = h
	s.c.log.Debug("sent health report", "healthy", h.healthy, "message", h.message)
	return nil
}

func (s *stream) onResponse(resp *discoveryv3.DiscoveryResponse) error {
	t := resp.GetTypeUrl()
	if !knownType(t) || !s.requested[t] {
		s.c.log.Warn("ignoring xDS response for a type this client did not request", "type", t)
		return nil
	}
	s.nonces[t] = resp.GetNonce()
	tc := s.c.caches[t]
	if tc.nackStreak > 0 && resp.GetVersionInfo() == tc.nackVersion {
		delay := s.c.nackRetryDelay(tc.nackStreak)
		s.held[t] = heldResponse{resp: resp, due: time.Now().Add(delay)}
		s.c.log.Debug("control plane resent a rejected version, retrying it later", "type", shortType(t),
			"version", resp.GetVersionInfo(), "retry_in", delay)
		return nil
	}
	delete(s.held, t)
	return s.apply(resp)
}

// apply hands a response to the Watcher, ACKs or NACKs it, then sends any subscription change the
// Watcher made meanwhile, so that, say, the EDS names of new clusters follow the CDS ACK.
func (s *stream) apply(resp *discoveryv3.DiscoveryResponse) error {
	t, version, nonce := resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce()
	tc := s.c.caches[t]
	var req *discoveryv3.DiscoveryRequest
	if err := s.c.accept(t, version, resp.GetResources()); err != nil {
		msg := err.Error()
		if version == tc.nackVersion {
			tc.nackStreak++
		} else {
			tc.nackVersion, tc.nackStreak = version, 1
		}
		s.c.recordNACK(t, version, nonce, msg)
		req = s.request(t, nonce)
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: msg}
		s.c.log.Warn("rejected xDS update, keeping the previous config", "type", shortType(t),
			"version", version, "kept_version", req.GetVersionInfo(), "error", msg)
	} else {
		tc.nackVersion, tc.nackStreak = "", 0
		s.c.recordACK(t, version)
		req = s.request(t, nonce)
	}
	if err := s.sendRequest(req); err != nil {
		return err
	}
	return s.sendSubscriptions()
}

func (s *stream) nextRetry() (time.Time, bool) {
	var first time.Time
	for _, h := range s.held {
		if first.IsZero() || h.due.Before(first) {
			first = h.due
		}
	}
	return first, !first.IsZero()
}

func (s *stream) retryHeld(now time.Time) error {
	for _, t := range requestOrder {
		h, ok := s.held[t]
		if !ok || now.Before(h.due) {
			continue
		}
		delete(s.held, t)
		if err := s.apply(h.resp); err != nil {
			return err
		}
	}
	return nil
}

// accept decodes a response, merges it into what the type already holds and gives the Watcher the
// result. The cache changes only if the Watcher accepts.
func (c *Client) accept(typeURL, version string, anys []*anypb.Any) error {
	got, err := decode(typeURL, anys)
	if err != nil {
		return err
	}
	tc := c.caches[typeURL]
	next := got
	if !isWildcard(typeURL) {
		// EDS/RDS responses may carry only some subscribed resources; absent ones are unchanged.
		names := c.subscribed(typeURL)
		next = make(map[string]proto.Message, len(names))
		for name, m := range tc.resources {
			if isSubscribed(names, name) {
				next[name] = m
			}
		}
		ignored := 0
		for name, m := range got {
			if isSubscribed(names, name) {
				next[name] = m
			} else {
				ignored++
			}
		}
		if ignored > 0 {
			c.log.Debug("ignoring resources that are not subscribed", "type", shortType(typeURL), "count", ignored)
		}
	}
	if tc.delivered && sameResources(tc.resources, next) {
		c.log.Debug("xDS update changes nothing", "type", shortType(typeURL), "version", version)
		return nil
	}
	if err := c.cfg.Watcher.OnResources(typeURL, sortedResources(next)); err != nil {
		return err
	}
	tc.resources, tc.delivered = next, true
	c.log.Info("applied xDS update", "type", shortType(typeURL), "version", version, "resources", len(next))
	return nil
}

// prune forgets resources of a by-name type that are no longer subscribed.
func (c *Client) prune(typeURL string, names []string) {
	tc := c.caches[typeURL]
	for name := range tc.resources {
		if !isSubscribed(names, name) {
			delete(tc.resources, name)
		}
	}
}

// isSubscribed looks name up in a normalized (sorted) subscription.
func isSubscribed(names []string, name string) bool {
	_, ok := slices.BinarySearch(names, name)
	return ok
}

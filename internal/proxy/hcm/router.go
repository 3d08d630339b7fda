package hcm

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/h1"
	"github.com/trellis-mesh/trellis/internal/proxy/hashpolicy"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// failure is why a try got no response.
type failure int

const (
	failReset failure = iota
	failConnect
	failRefusedStream
	failProtocol // the upstream's answer was not HTTP
	failPerTryTimeout
	failTimeout        // the route timeout: never retried
	failDownstreamGone // nobody left to answer
	failOverflow       // a circuit breaker (max_connections, max_pending_requests) refused it
)

// forward sends the request to cl, retrying as the route's retry policy allows, and streams the
// response back.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, s *stream, rt *route.Route, wc *route.WeightedCluster, cl *upstream.Cluster, reqMut, respMut [4]*route.HeaderMutation) {
	a := &rt.Action
	policy := a.Retry
	path, hostHeader := h.prepare(r, s, rt, wc, reqMut)
	hdr := r.Header
	timeout, perTry := h.timeouts(hdr, s.grpc, a)
	ctx := r.Context()
	h2 := r.ProtoMajor == 2
	// deadline is the route timeout when h1.Transport enforces it on the upstream socket: the
	// common case (one try, no per-try timeout, no upgrade) then needs no timer context.
	var deadline time.Time
	h1tr, _ := cl.Transport(h2).(*h1.Transport)
	if timeout > 0 {
		if h1tr != nil && perTry == 0 && (policy == nil || policy.NumRetries == 0) && s.upgrade == "" {
			deadline = time.Now().Add(timeout)
		} else {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		if !h.cfg.SuppressEnvoyHeaders {
			hdr["X-Envoy-Expected-Rq-Timeout-Ms"] = h.timeoutValue(timeout.Milliseconds())
		}
	}
	if s.body != nil && r.ProtoMajor == 1 {
		// Let the upstream answer before it has read the whole body, as Envoy does.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	retriesLeft := 0
	if policy != nil {
		retriesLeft = policy.NumRetries
		if s.body != nil && retriesLeft > 0 {
			s.body.Record(bufferLimit(a))
		}
	}
	// The route's hash_policy, for RING_HASH and MAGLEV clusters; computed once, so every try of a
	// request hashes the same.
	hashed := a.HashPolicy.Hash(r)
	if s.upgrade != "" {
		h.forwardUpgrade(w, r, s, cl, hdr, path, hostHeader, ctx, hashed)
		return
	}
	retrySlots := 0
	defer func() {
		for range retrySlots {
			cl.ReleaseRetry()
		}
	}()
	var tried []*upstream.Host // only kept when the policy avoids previous hosts
	for attempt := 1; ; attempt++ {
		host := h.pickHost(r, cl, policy, tried, hashed)
		if host == nil {
			cl.Stats.NoneHealthy.Inc()
			h.localReply(w, r, s, http.StatusServiceUnavailable, bodyNoHealthy, detailsNoHealthy, streaminfo.NoHealthyUpstream)
			return
		}
		if policy != nil && policy.AvoidPreviousHosts {
			tried = append(tried, host)
		}
		s.info.UpstreamHost = host.Address
		s.info.UpstreamWorkload = host.IstioWorkload()
		s.info.Attempts = attempt
		if attempt > 1 {
			hdr = hdr.Clone() // the abandoned try's transport may still be reading the old map
		}
		if a.IncludeAttemptCount {
			hdr.Set("X-Envoy-Attempt-Count", itoa(int64(attempt)))
		}
		var body io.ReadCloser
		if s.body != nil {
			body = s.body
			if s.body.recording() {
				body = s.body.Attempt()
			}
		}
		tryCtx, cancelTry := ctx, context.CancelFunc(nil)
		if perTry > 0 {
			tryCtx, cancelTry = context.WithTimeout(ctx, perTry)
		}
		out := newUpstreamRequest(tryCtx, r, hdr, path, hostHeader, host, body)
		// Circuit breaker max_requests, held until the response body is done; on overflow the
		// request fails here without reaching the upstream (503, flag UO).
		if !cl.TryRequest() {
			if cancelTry != nil {
				cancelTry()
			}
			h.overflow(w, r, s, cl)
			return
		}
		host.Begin()
		cl.Stats.RqTotal.Inc()
		cl.Stats.RqActive.Inc()
		upstreamStart := time.Now()
		tr := cl.Transport(h2)
		if _, ok := tr.(*h1.Transport); !ok && r.ProtoMajor == 1 {
			// net/http's transport may still read the header map after RoundTrip returns (an
			// abandoned HTTP/2 stream): the h1 server must not reuse it for the next request.
			s.keepHeader = true
		}
		var resp *http.Response
		var err error
		if !deadline.IsZero() {
			resp, err = h1tr.RoundTripDeadline(out, deadline)
		} else {
			resp, err = tr.RoundTrip(out)
		}
		if err != nil {
			host.End(true)
			cl.Stats.RqActive.Dec()
			cl.ReleaseRequest()
			why := classify(err, r.Context(), ctx, tryCtx)
			if why != failDownstreamGone && !deadline.IsZero() && !time.Now().Before(deadline) {
				why = failTimeout // the route timeout, enforced by the transport
			}
			if why != failOverflow && why != failDownstreamGone {
				// Outlier detection hears of local-origin failures (not overflows or client aborts).
				cl.ReportLocalFailure(host, why == failTimeout || why == failPerTryTimeout)
			}
			if cancelTry != nil {
				cancelTry()
			}
			if why != failDownstreamGone && why != failTimeout && policy != nil && retriableFailure(policy.On, why) {
				if retriesLeft > 0 && s.body.replayable() && acquireRetry(cl, &retrySlots) {
					retriesLeft--
					h.clusterRetryStats(cl).retry.Inc()
					if h.backoff(ctx, policy, attempt) {
						continue
					}
					why = classify(ctx.Err(), r.Context(), ctx, ctx)
				} else if retriesLeft == 0 {
					s.info.SetFlag(streaminfo.UpstreamRetryLimitExceeded)
					h.clusterRetryStats(cl).limitExceeded.Inc()
				}
			}
			h.upstreamFailure(w, r, s, cl, why, err)
			return
		}
		cl.ReportResponse(host, resp.StatusCode) // outlier detection
		if policy != nil && retriableResponse(policy, resp) {
			if retriesLeft > 0 && s.body.replayable() && acquireRetry(cl, &retrySlots) {
				retriesLeft--
				discard(resp)
				host.End(resp.StatusCode >= 500)
				cl.Stats.RqActive.Dec()
				cl.ReleaseRequest()
				cl.Stats.RecordStatus(resp.StatusCode)
				if cancelTry != nil {
					cancelTry()
				}
				h.clusterRetryStats(cl).retry.Inc()
				if h.backoff(ctx, policy, attempt) {
					continue
				}
				h.upstreamFailure(w, r, s, cl, classify(ctx.Err(), r.Context(), ctx, ctx), ctx.Err())
				return
			}
			if retriesLeft == 0 {
				s.info.SetFlag(streaminfo.UpstreamRetryLimitExceeded)
				h.clusterRetryStats(cl).limitExceeded.Inc()
			}
		} else if attempt > 1 {
			h.clusterRetryStats(cl).success.Inc()
		}
		s.info.UpstreamServiceTime = time.Since(upstreamStart)
		if hashed.SetCookie != "" {
			resp.Header.Add("Set-Cookie", hashed.SetCookie) // hash_policy cookie with a ttl
		}
		h.respond(w, r, s, resp, rt, respMut, cl, host, cancelTry)
		return
	}
}

// respond streams the chosen try's response downstream and releases the try, also when
// writeResponse aborts the downstream stream by panicking.
func (h *Handler) respond(w http.ResponseWriter, r *http.Request, s *stream, resp *http.Response, rt *route.Route, respMut [4]*route.HeaderMutation, cl *upstream.Cluster, host *upstream.Host, cancelTry context.CancelFunc) {
	defer func() {
		resp.Body.Close()
		host.End(resp.StatusCode >= 500)
		cl.Stats.RqActive.Dec()
		cl.ReleaseRequest()
		if cancelTry != nil {
			cancelTry()
		}
	}()
	cl.Stats.RecordStatus(resp.StatusCode)
	h.writeResponse(w, r, s, resp, rt, respMut)
}

// replayable reports whether another try can send the request body again; a request without one
// always can.
func (b *replayBody) replayable() bool { return b == nil || b.Replayable() }

func bufferLimit(a *route.Action) int64 {
	if a.BufferLimit > 0 {
		return a.BufferLimit
	}
	return route.DefaultBufferLimit
}

// acquireRetry asks the cluster's circuit breaker (max_retries) for one more retry. A granted slot
// is held until the request ends; slots counts them for the caller to release. When refused, the
// cluster has counted upstream_rq_retry_overflow and the request ends with its last try's result.
func acquireRetry(cl *upstream.Cluster, slots *int) bool {
	if !cl.TryRetry() {
		return false
	}
	*slots++
	return true
}

// pickHost picks the host for a try; with the previous_hosts predicate it re-picks up to
// HostSelectionMaxAttempts times to find one not tried yet, and settles for the last pick.
func (h *Handler) pickHost(r *http.Request, cl *upstream.Cluster, policy *route.RetryPolicy, tried []*upstream.Host, hashed hashpolicy.Result) *upstream.Host {
	if cl.IsOriginalDst() {
		return cl.OriginalDst(r.Header.Get("X-Envoy-Original-Dst-Host"), localAddr(r))
	}
	if hashed.OK {
		return cl.PickHash(hashed.Hash) // RING_HASH and MAGLEV follow the request hash
	}
	host := cl.Pick()
	if len(tried) == 0 || host == nil {
		return host
	}
	for range policy.HostSelectionMaxAttempts {
		if !containsHost(tried, host) {
			break
		}
		host = cl.Pick()
	}
	return host
}

func containsHost(hs []*upstream.Host, h *upstream.Host) bool {
	for _, x := range hs {
		if x == h {
			return true
		}
	}
	return false
}

// backoff waits Envoy's fully jittered exponential back-off before retry number n (1-based): a
// random time below min(base*(2^n-1), max). It reports false when ctx ended first.
func (h *Handler) backoff(ctx context.Context, p *route.RetryPolicy, n int) bool {
	base, maxI := p.BaseInterval, p.MaxInterval
	if base <= 0 {
		return ctx.Err() == nil
	}
	ceiling := maxI
	if n < 30 {
		if c := base * time.Duration((1<<n)-1); c > 0 && c < maxI {
			ceiling = c
		}
	}
	d := time.Duration(rand.Int64N(int64(ceiling) + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// classify says why a try failed. down is the downstream request's context, route the route
// timeout's, try the per-try timeout's.
func classify(err error, down, routeCtx, try context.Context) failure {
	switch {
	case down.Err() != nil:
		return failDownstreamGone
	case routeCtx.Err() != nil:
		return failTimeout
	case try.Err() != nil:
		return failPerTryTimeout
	case upstream.IsOverflow(err):
		return failOverflow
	case upstream.IsConnectFailure(err):
		return failConnect
	case err != nil && strings.Contains(err.Error(), "REFUSED_STREAM"):
		return failRefusedStream
	case errors.As(err, new(*h1.ProtocolError)):
		return failProtocol
	case err != nil && strings.Contains(err.Error(), "malformed HTTP"):
		return failProtocol // net/http's words for a response it could not parse (HTTP/2 upstreams)
	}
	return failReset
}

// retriableFailure follows Envoy's RetryStateImpl::wouldRetryFromReset: 5xx, gateway-error and reset
// cover every failure to get a response; connect-failure and refused-stream only theirs.
func retriableFailure(on route.RetryOn, why failure) bool {
	if on&(route.Retry5xx|route.RetryGatewayError|route.RetryReset) != 0 {
		return true
	}
	switch why {
	case failConnect:
		return on&route.RetryConnectFailure != 0
	case failRefusedStream:
		return on&route.RetryRefusedStream != 0
	}
	return false
}

// retriableResponse follows Envoy's RetryStateImpl::wouldRetryFromHeaders.
func retriableResponse(p *route.RetryPolicy, resp *http.Response) bool {
	on, code := p.On, resp.StatusCode
	switch {
	case on&route.Retry5xx != 0 && code >= 500:
		return true
	case on&route.RetryGatewayError != 0 && code >= 502 && code <= 504:
		return true
	case on&route.RetryRetriable4xx != 0 && code == http.StatusConflict:
		return true
	case on&route.RetryEnvoyRateLimited != 0 && len(resp.Header["X-Envoy-Ratelimited"]) > 0:
		return true
	case on&route.RetryRetriableStatusCodes != 0:
		for _, c := range p.RetriableStatusCodes {
			if c == code {
				return true
			}
		}
	}
	const grpcOn = route.RetryGRPCCancelled | route.RetryGRPCDeadlineExceeded | route.RetryGRPCInternal | route.RetryGRPCResourceExhausted | route.RetryGRPCUnavailable
	if on&grpcOn == 0 {
		return false
	}
	gs := resp.Header["Grpc-Status"] // trailers-only responses carry it in the headers
	if len(gs) == 0 {
		return false
	}
	switch gs[0] {
	case "1":
		return on&route.RetryGRPCCancelled != 0
	case "4":
		return on&route.RetryGRPCDeadlineExceeded != 0
	case "8":
		return on&route.RetryGRPCResourceExhausted != 0
	case "13":
		return on&route.RetryGRPCInternal != 0
	case "14":
		return on&route.RetryGRPCUnavailable != 0
	}
	return false
}

// discard drops a response that is being retried, reading a little of it so the connection can be
// reused.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

// timeouts returns the route timeout and the per-try timeout for a request, consuming the
// x-envoy-upstream-rq-timeout-ms and x-envoy-upstream-rq-per-try-timeout-ms headers.
//
// Envoy honours those headers from every downstream it does not treat as external; trellis-proxy
// has no notion of external yet, so it honours them always (as a sidecar, its downstream is the
// application it fronts) and never forwards them.
func (h *Handler) timeouts(hdr http.Header, grpc bool, a *route.Action) (timeout, perTry time.Duration) {
	timeout = a.Timeout
	if a.UseGRPCTimeout && grpc {
		if v := hdr["Grpc-Timeout"]; len(v) > 0 {
			if t, ok := parseGRPCTimeout(v[0]); ok {
				if a.GRPCTimeoutMax > 0 && t > a.GRPCTimeoutMax {
					t = a.GRPCTimeoutMax
				}
				if a.GRPCTimeoutOffset > 0 && t > a.GRPCTimeoutOffset {
					t -= a.GRPCTimeoutOffset
				}
				timeout = t
			}
		}
	}
	if v := hdr["X-Envoy-Upstream-Rq-Timeout-Ms"]; len(v) > 0 {
		if ms, err := strconv.ParseUint(v[0], 10, 32); err == nil {
			timeout = time.Duration(ms) * time.Millisecond
		}
		delete(hdr, "X-Envoy-Upstream-Rq-Timeout-Ms")
	}
	if a.Retry != nil {
		perTry = a.Retry.PerTryTimeout
	}
	if v := hdr["X-Envoy-Upstream-Rq-Per-Try-Timeout-Ms"]; len(v) > 0 {
		if ms, err := strconv.ParseUint(v[0], 10, 32); err == nil {
			perTry = time.Duration(ms) * time.Millisecond
		}
		delete(hdr, "X-Envoy-Upstream-Rq-Per-Try-Timeout-Ms")
	}
	if timeout > 0 && perTry >= timeout {
		perTry = 0 // Envoy ignores a per-try timeout that is not shorter than the route's
	}
	return timeout, perTry
}

// parseGRPCTimeout reads a grpc-timeout value: up to 8 digits and a unit (H, M, S, m, u, n).
func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(math.MaxInt64/unit) {
		return time.Duration(math.MaxInt64), true // "99999999H" outlasts any time.Duration
	}
	return time.Duration(n) * unit, true
}

// upstreamFailure answers a request no try got a response for.
func (h *Handler) upstreamFailure(w http.ResponseWriter, r *http.Request, s *stream, cl *upstream.Cluster, why failure, err error) {
	switch why {
	case failDownstreamGone:
		// The client went away; there is no one to answer.
		s.info.SetFlag(streaminfo.DownstreamConnectionTermination)
		s.info.ResponseCodeDetails = detailsDownstreamGone
	case failTimeout, failPerTryTimeout:
		cl.Stats.RqTimeout.Inc()
		cl.Stats.RecordStatus(http.StatusGatewayTimeout)
		details := detailsTimeout
		if why == failPerTryTimeout {
			details = detailsPerTryTimeout
		}
		h.localReply(w, r, s, http.StatusGatewayTimeout, bodyUpstreamTimed, details, streaminfo.UpstreamRequestTimeout)
	case failOverflow:
		h.overflow(w, r, s, cl)
	case failConnect:
		cl.Stats.RecordStatus(http.StatusServiceUnavailable)
		h.localReply(w, r, s, http.StatusServiceUnavailable, bodyConnectFail, detailsConnectFail, streaminfo.UpstreamConnectionFailure)
	case failProtocol:
		cl.Stats.RecordStatus(http.StatusServiceUnavailable)
		h.localReply(w, r, s, http.StatusServiceUnavailable, bodyProtocolError, detailsProtocolError, streaminfo.UpstreamProtocolError)
	default:
		h.log.Debug("upstream request failed", "cluster", cl.Name(), "error", err)
		cl.Stats.RecordStatus(http.StatusServiceUnavailable)
		h.localReply(w, r, s, http.StatusServiceUnavailable, bodyReset, detailsReset, streaminfo.UpstreamConnectionTermination)
	}
}

// retryStats are Envoy's cluster.<name>.upstream_rq_retry* counters.
type retryStats struct {
	retry, success, limitExceeded, overflow *stats.Counter
}

// clusterRetryStats returns cl's retry counters, registering them on its first retry so that the hot
// path never builds a stat name.
func (h *Handler) clusterRetryStats(cl *upstream.Cluster) *retryStats {
	if v, ok := h.retryStats.Load(cl); ok {
		return v.(*retryStats)
	}
	name := cl.Config().StatName
	if name == "" {
		name = cl.Name()
	}
	p := "cluster." + name + "."
	rs := &retryStats{
		retry:         h.store.Counter(p + "upstream_rq_retry"),
		success:       h.store.Counter(p + "upstream_rq_retry_success"),
		limitExceeded: h.store.Counter(p + "upstream_rq_retry_limit_exceeded"),
		overflow:      h.store.Counter(p + "upstream_rq_retry_overflow"),
	}
	v, _ := h.retryStats.LoadOrStore(cl, rs)
	return v.(*retryStats)
}

func localAddr(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && a != nil {
		return a.String()
	}
	return ""
}

// overflow answers a request a circuit breaker refused, as Envoy does: 503, x-envoy-overloaded,
// flag UO, and no upstream contacted.
func (h *Handler) overflow(w http.ResponseWriter, r *http.Request, s *stream, cl *upstream.Cluster) {
	if !h.cfg.SuppressEnvoyHeaders {
		w.Header().Set("X-Envoy-Overloaded", "true")
	}
	cl.Stats.RecordStatus(http.StatusServiceUnavailable)
	h.localReply(w, r, s, http.StatusServiceUnavailable, bodyOverflow, detailsOverflow, streaminfo.UpstreamOverflow)
}

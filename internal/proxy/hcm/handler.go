package hcm

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/hashpolicy"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// Snapshot is the routing state shared by every listener: RDS route tables by name and clusters by
// name. Its maps are never modified after it is published.
type Snapshot struct {
	Routes   map[string]*route.Table
	Clusters map[string]*upstream.Cluster
}

// Stats are the connection manager's Envoy-named counters (http.<stat_prefix>.*).
type Stats struct {
	RqTotal                                   *stats.Counter
	RqClass                                   stats.StatusClasses
	RqHTTP1, RqHTTP2                          *stats.Counter
	CxTotal                                   *stats.Counter
	RqActive                                  *stats.Gauge
	NoRoute, NoCluster, RouterRqTotal, Resets *stats.Counter
}

func newStats(s *stats.Store, prefix string) Stats {
	p := "http." + prefix + "."
	return Stats{
		RqTotal:       s.Counter(p + "downstream_rq_total"),
		RqClass:       s.StatusClasses(p + "downstream_rq_"),
		RqHTTP1:       s.Counter(p + "downstream_rq_http1_total"),
		RqHTTP2:       s.Counter(p + "downstream_rq_http2_total"),
		CxTotal:       s.Counter(p + "downstream_cx_total"),
		RqActive:      s.Gauge(p + "downstream_rq_active"),
		NoRoute:       s.Counter(p + "no_route"),
		NoCluster:     s.Counter(p + "no_cluster"),
		RouterRqTotal: s.Counter(p + "rq_total"),
		Resets:        s.Counter(p + "rq_reset_after_downstream_response_started"),
	}
}

// Handler serves one listener's HTTP connection manager.
type Handler struct {
	cfg   *xdsconfig.HTTPConnectionManager
	snap  *atomic.Pointer[Snapshot]
	stats Stats
	log   *slog.Logger
}

// New returns the handler for a connection manager config. snap is where the proxy publishes its
// current routes and clusters; store receives the http.<stat_prefix>.* stats.
func New(cfg *xdsconfig.HTTPConnectionManager, snap *atomic.Pointer[Snapshot], store *stats.Store, log *slog.Logger) *Handler {
	return &Handler{cfg: cfg, snap: snap, stats: newStats(store, cfg.StatPrefix), log: log}
}

// Config returns the handler's connection manager config.
func (h *Handler) Config() *xdsconfig.HTTPConnectionManager { return h.cfg }

// ConnState counts downstream connections; the listener's server calls it.
func (h *Handler) ConnState(_ net.Conn, s http.ConnState) {
	if s == http.StateNew {
		h.stats.CxTotal.Inc()
	}
}

// Local reply bodies, Envoy's wording.
const (
	bodyNoRoute       = "route not found"
	bodyNoCluster     = "cluster not found"
	bodyNoHealthy     = "no healthy upstream"
	bodyConnectFail   = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	bodyReset         = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
	bodyUpstreamTimed = "upstream request timeout"
	bodyOverflow      = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
)

// ServeHTTP routes and forwards one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.stats.RqTotal.Inc()
	h.stats.RqActive.Inc()
	defer h.stats.RqActive.Dec()
	if r.ProtoMajor == 2 {
		h.stats.RqHTTP2.Inc()
	} else {
		h.stats.RqHTTP1.Inc()
	}
	snap := h.snap.Load()

	authority := h.authority(r.Host)
	ex := exchange{r: r, path: requestPath(r), authority: authority}
	table := h.cfg.Routes
	if table == nil && snap != nil {
		table = snap.Routes[h.cfg.RDSName]
	}
	var vh *route.VirtualHost
	var rt *route.Route
	if table != nil {
		vh, rt = table.Select(&route.Request{Authority: authority, Path: ex.path, Headers: &ex})
	}
	if rt == nil {
		h.stats.NoRoute.Inc()
		h.localReply(w, r, http.StatusNotFound, bodyNoRoute)
		return
	}
	h.stats.RouterRqTotal.Inc()
	clusterName, wc := rt.Action.Pick(rand.Uint64())
	var cl *upstream.Cluster
	if snap != nil {
		cl = snap.Clusters[clusterName]
	}
	if cl == nil {
		h.stats.NoCluster.Inc()
		code := rt.Action.ClusterNotFoundCode
		if code == 0 {
			code = http.StatusServiceUnavailable
		}
		h.localReply(w, r, code, bodyNoCluster)
		return
	}
	var host *upstream.Host
	var hashed hashpolicy.Result // upstream: the route's hash_policy result
	if cl.IsOriginalDst() {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		localAddr := ""
		if local != nil {
			localAddr = local.String()
		}
		host = cl.OriginalDst(r.Header.Get("X-Envoy-Original-Dst-Host"), localAddr)
	} else if hashed = rt.Action.HashPolicy.Hash(r); hashed.OK {
		host = cl.PickHash(hashed.Hash) // upstream: RING_HASH / MAGLEV follow the request hash
	} else {
		host = cl.Pick()
	}
	if host == nil {
		cl.Stats.NoneHealthy.Inc()
		h.localReply(w, r, http.StatusServiceUnavailable, bodyNoHealthy)
		return
	}

	reqMut, respMut := table.Mutations(vh, rt, wc)
	out := h.upstreamRequest(r, &ex, rt, wc, reqMut, host)
	ctx := r.Context()
	if t := rt.Action.Timeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
		if !h.cfg.SuppressEnvoyHeaders {
			out.Header.Set("X-Envoy-Expected-Rq-Timeout-Ms", itoa(t.Milliseconds()))
		}
	}
	out = out.WithContext(ctx)
	if out.Body != nil && r.ProtoMajor == 1 {
		// Let the upstream answer before it has read the whole body, as Envoy does.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}

	// upstream: circuit breaker max_requests, held until the response body is done; on overflow
	// the request fails here, never reaching the upstream (503, response flag UO).
	if !cl.TryRequest() {
		h.overflow(w, r, cl)
		return
	}
	defer cl.ReleaseRequest()

	// The host counts the request as active until the response body is done, for least-request.
	host.Begin()
	failed := true
	defer func() { host.End(failed) }()
	cl.Stats.RqTotal.Inc()
	cl.Stats.RqActive.Inc()
	defer cl.Stats.RqActive.Dec()
	upstreamStart := time.Now()
	resp, err := cl.Transport(r.ProtoMajor == 2).RoundTrip(out)
	if err != nil {
		// upstream: outlier detection hears of local-origin failures (not overflows or client aborts).
		if !upstream.IsOverflow(err) && r.Context().Err() == nil {
			cl.ReportLocalFailure(host, errors.Is(ctx.Err(), context.DeadlineExceeded))
		}
		h.upstreamFailure(ctx, w, r, cl, err)
		return
	}
	defer resp.Body.Close()
	cl.ReportResponse(host, resp.StatusCode) // upstream: outlier detection
	if hashed.SetCookie != "" {
		resp.Header.Add("Set-Cookie", hashed.SetCookie) // upstream: hash_policy cookie with a ttl
	}
	failed = resp.StatusCode >= 500
	cl.Stats.RecordStatus(resp.StatusCode)
	h.writeResponse(w, r, resp, respMut, upstreamStart)
}

// authority applies strip_any_host_port / strip_matching_host_port to the Host header.
func (h *Handler) authority(host string) string {
	if !h.cfg.StripAnyPort && h.cfg.StripPortIfMatches == 0 {
		return host
	}
	hostOnly, port, err := net.SplitHostPort(host)
	if err != nil {
		return host
	}
	if h.cfg.StripAnyPort || port == itoa(int64(h.cfg.StripPortIfMatches)) {
		if strings.IndexByte(hostOnly, ':') >= 0 {
			return "[" + hostOnly + "]"
		}
		return hostOnly
	}
	return host
}

func (h *Handler) upstreamFailure(ctx context.Context, w http.ResponseWriter, r *http.Request, cl *upstream.Cluster, err error) {
	switch {
	case r.Context().Err() != nil:
		// The client went away; there is no one to answer.
		return
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		cl.Stats.RqTimeout.Inc()
		cl.Stats.RecordStatus(http.StatusGatewayTimeout)
		h.localReply(w, r, http.StatusGatewayTimeout, bodyUpstreamTimed)
	case upstream.IsOverflow(err): // upstream: max_connections / max_pending_requests
		h.overflow(w, r, cl)
	case upstream.IsConnectFailure(err):
		cl.Stats.RecordStatus(http.StatusServiceUnavailable)
		h.localReply(w, r, http.StatusServiceUnavailable, bodyConnectFail)
	default:
		h.log.Debug("upstream request failed", "cluster", cl.Name(), "error", err)
		cl.Stats.RecordStatus(http.StatusServiceUnavailable)
		h.localReply(w, r, http.StatusServiceUnavailable, bodyReset)
	}
}

// overflow answers a request a circuit breaker refused, as Envoy does: 503, x-envoy-overloaded,
// response flag UO (streaminfo.UpstreamOverflow). Owned by upstream; merge by hand.
func (h *Handler) overflow(w http.ResponseWriter, r *http.Request, cl *upstream.Cluster) {
	if !h.cfg.SuppressEnvoyHeaders {
		w.Header().Set("X-Envoy-Overloaded", "true")
	}
	cl.Stats.RecordStatus(http.StatusServiceUnavailable)
	h.localReply(w, r, http.StatusServiceUnavailable, bodyOverflow)
}

// localReply answers the request itself, the way Envoy's local replies look.
func (h *Handler) localReply(w http.ResponseWriter, r *http.Request, code int, body string) {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/plain")
	hdr.Set("Content-Length", itoa(int64(len(body))))
	if h.cfg.ServerHeader != xdsconfig.ServerHeaderPassThrough {
		hdr.Set("Server", h.cfg.ServerName)
	}
	if h.cfg.AlwaysSetRequestIDInResponse {
		if id := r.Header.Get("X-Request-Id"); id != "" {
			hdr.Set("X-Request-Id", id)
		}
	}
	w.WriteHeader(code)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(body))
	}
	h.stats.RqClass.Record(code)
}

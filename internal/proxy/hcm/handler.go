package hcm

import (
	"crypto/tls"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/tracing"
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
	RqCompleted, RqRedirect, RqDirectResponse *stats.Counter
}

func newStats(s *stats.Store, prefix string) Stats {
	p := "http." + prefix + "."
	return Stats{
		RqTotal:          s.Counter(p + "downstream_rq_total"),
		RqClass:          s.StatusClasses(p + "downstream_rq_"),
		RqHTTP1:          s.Counter(p + "downstream_rq_http1_total"),
		RqHTTP2:          s.Counter(p + "downstream_rq_http2_total"),
		CxTotal:          s.Counter(p + "downstream_cx_total"),
		RqActive:         s.Gauge(p + "downstream_rq_active"),
		NoRoute:          s.Counter(p + "no_route"),
		NoCluster:        s.Counter(p + "no_cluster"),
		RouterRqTotal:    s.Counter(p + "rq_total"),
		Resets:           s.Counter(p + "rq_reset_after_downstream_response_started"),
		RqCompleted:      s.Counter(p + "downstream_rq_completed"),
		RqRedirect:       s.Counter(p + "rq_redirect"),
		RqDirectResponse: s.Counter(p + "rq_direct_response"),
	}
}

// Handler serves one listener's HTTP connection manager.
type Handler struct {
	cfg   *xdsconfig.HTTPConnectionManager
	snap  *atomic.Pointer[Snapshot]
	stats Stats
	store *stats.Store
	log   *slog.Logger
	// chain is the HTTP filters before the router, in order; empty costs nothing per request.
	chain       []chainEntry
	completers  bool // some filter in chain is a filters.Completer
	respFilters bool // some filter in chain is a filters.ResponseFilter
	mirrors     *mirrorer
	// retryStats caches each cluster's retry counters (by *upstream.Cluster), made on first retry.
	retryStats sync.Map
	// serverValue is the server header's value; lastTimeout the last x-envoy-expected-rq-timeout-ms
	// value sent (routes mostly share one timeout): shared, so they cost no allocation per request.
	serverValue []string
	lastTimeout atomic.Pointer[timeoutValue]
	// tracer is the connection manager's tracing (tracing.go); nil traces nothing.
	tracer *tracing.Tracer
	// envOpts add proxy-wide things to the filters' Env (WithFilterEnv).
	envOpts []filters.EnvOption
	// localCert is the certificate the listener presents (WithLocalCertificate); lastLocal caches
	// its URI SAN for XFCC's By.
	localCert func() *tls.Certificate
	lastLocal atomic.Pointer[localURI]
}

type timeoutValue struct {
	ms int64
	v  []string
}

// timeoutValue returns the x-envoy-expected-rq-timeout-ms value for ms.
func (h *Handler) timeoutValue(ms int64) []string {
	if t := h.lastTimeout.Load(); t != nil && t.ms == ms {
		return t.v
	}
	t := &timeoutValue{ms: ms, v: []string{itoa(ms)}}
	h.lastTimeout.Store(t)
	return t.v
}

type chainEntry struct {
	name      string
	filter    filters.Filter
	completer filters.Completer // the filter, when it wants the final record
	observer  bool              // the completer wants every request's record (filters.Observer)
	response  filters.ResponseFilter
	disabled  bool
}

// New returns the handler for a connection manager config. snap is where the proxy publishes its
// current routes and clusters; store receives the http.<stat_prefix>.* stats.
func New(cfg *xdsconfig.HTTPConnectionManager, snap *atomic.Pointer[Snapshot], store *stats.Store, log *slog.Logger, opts ...Option) *Handler {
	h := &Handler{cfg: cfg, snap: snap, stats: newStats(store, cfg.StatPrefix), store: store, log: log, serverValue: []string{cfg.ServerName}}
	for _, o := range opts {
		o(h)
	}
	env := filters.Env{Stats: store, StatPrefix: cfg.StatPrefix, Inbound: cfg.Inbound,
		UseRemoteAddress: cfg.UseRemoteAddress, XFFNumTrustedHops: cfg.XFFNumTrustedHops}
	for _, o := range h.envOpts {
		o(&env)
	}
	for _, spec := range cfg.HTTPFilters {
		f := spec.Config.Build(env)
		c, _ := f.(filters.Completer)
		_, obs := f.(filters.Observer)
		rf, _ := f.(filters.ResponseFilter)
		h.chain = append(h.chain, chainEntry{name: spec.Name, filter: f, completer: c, observer: obs, response: rf, disabled: spec.Disabled})
		h.completers = h.completers || c != nil
		h.respFilters = h.respFilters || rf != nil
	}
	h.mirrors = newMirrorer(log)
	return h
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
	bodyProtocolError = "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
	bodyOverflow      = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
)

// Envoy's %RESPONSE_CODE_DETAILS% for the replies the connection manager and router send.
const (
	detailsRouteNotFound     = "route_not_found"
	detailsClusterNotFound   = "cluster_not_found"
	detailsNoHealthy         = "no_healthy_upstream"
	detailsConnectFail       = "upstream_reset_before_response_started{connection_failure}"
	detailsReset             = "upstream_reset_before_response_started{connection_termination}"
	detailsProtocolError     = "upstream_reset_before_response_started{protocol_error}"
	detailsTimeout           = "response_timeout"
	detailsPerTryTimeout     = "upstream_per_try_timeout"
	detailsViaUpstream       = "via_upstream"
	detailsDirectResponse    = "direct_response"
	detailsDownstreamGone    = "downstream_remote_disconnect"
	detailsUpgradeFailed     = "upgrade_failed"
	detailsPathNormalization = "path_normalization_failed"
	detailsOverflow          = "upstream_reset_before_response_started{overflow}"
)

// ServeHTTP routes and forwards one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := getStream()
	defer h.finish(s)
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
	s.ex = exchange{r: r, path: requestPath(r), authority: authority}
	pathOK := true
	if h.pathNeedsWork(s.ex.path) {
		s.ex.path, pathOK = normalizePath(s.ex.path, h.cfg)
	}
	if h.cfg.GenerateRequestID && len(r.Header["X-Request-Id"]) == 0 {
		// Before routing, so local replies and access logs carry it too, as in Envoy.
		r.Header["X-Request-Id"] = []string{newRequestID()}
	}
	if h.tracer != nil {
		h.tracer.Start(&s.span, r.Header)
	}
	h.begin(s, r)
	if !pathOK {
		h.localReply(w, r, s, http.StatusBadRequest, "Bad Request", detailsPathNormalization, 0)
		return
	}
	table := h.cfg.Routes
	if table == nil && snap != nil {
		table = snap.Routes[h.cfg.RDSName]
	}
	var vh *route.VirtualHost
	var rt *route.Route
	if table != nil {
		vh, rt = table.Select(&route.Request{Authority: authority, Path: s.ex.path, Headers: &s.ex})
	}
	if rt == nil {
		h.stats.NoRoute.Inc()
		h.localReply(w, r, s, http.StatusNotFound, bodyNoRoute, detailsRouteNotFound, streaminfo.NoRouteFound)
		return
	}
	s.info.RouteName = rt.Name
	a := &rt.Action
	if !h.checkUpgrade(w, r, s, a) {
		return
	}
	var clusterName string
	var wc *route.WeightedCluster
	if a.Redirect == nil && a.Direct == nil {
		clusterName, wc = a.Pick(rand.Uint64())
		s.info.UpstreamCluster = clusterName
	}
	if len(h.chain) > 0 && h.runFilters(w, r, s, table, vh, rt, wc, clusterName) == filters.Stop {
		return
	}
	switch {
	case a.Redirect != nil:
		h.stats.RqRedirect.Inc()
		h.redirect(w, r, s, rt)
		return
	case a.Direct != nil:
		h.stats.RqDirectResponse.Inc()
		h.directResponse(w, r, s, a.Direct)
		return
	}
	h.stats.RouterRqTotal.Inc()
	var cl *upstream.Cluster
	if snap != nil {
		cl = snap.Clusters[clusterName]
	}
	if cl == nil {
		h.stats.NoCluster.Inc()
		code := a.ClusterNotFoundCode
		if code == 0 {
			code = http.StatusServiceUnavailable
		}
		h.localReply(w, r, s, code, bodyNoCluster, detailsClusterNotFound, streaminfo.NoClusterFound)
		return
	}
	var shadows []shadow
	if len(a.Mirrors) > 0 {
		shadows = h.pickMirrors(s, rt, snap)
	}
	reqMut, respMut := table.Mutations(vh, rt, wc)
	h.forward(w, r, s, rt, wc, cl, reqMut, respMut)
	if len(shadows) > 0 {
		path, _ := rt.RewritePath(s.ex.path)
		h.sendMirrors(r, s, path, shadows)
	}
}

// runFilters runs the HTTP filter chain; on Stop it has sent the filter's local reply.
func (h *Handler) runFilters(w http.ResponseWriter, r *http.Request, s *stream, table *route.Table, vh *route.VirtualHost, rt *route.Route, wc *route.WeightedCluster, cluster string) filters.Status {
	x := &s.x
	x.Method, x.Path, x.Authority, x.Headers, x.Lookup = r.Method, s.ex.path, s.ex.authority, r.Header, &s.ex
	x.GRPC = s.grpc
	x.Table, x.VirtualHost, x.Route, x.Cluster, x.Info, x.TLS = table, vh, rt, cluster, &s.info, r.TLS
	if s.body != nil {
		x.Body = s.body
	}
	ctx := r.Context()
	for i := range h.chain {
		e := &h.chain[i]
		cfg, disabled, toggled := table.PerFilter(e.name, vh, rt, wc)
		if (toggled && disabled) || (!toggled && e.disabled) {
			continue
		}
		if i < 64 {
			s.ran |= 1 << i
		}
		if e.filter.OnRequest(ctx, x, cfg) == filters.Stop {
			if ctx.Err() != nil {
				s.info.SetFlag(streaminfo.DownstreamConnectionTermination)
				s.info.ResponseCodeDetails = detailsDownstreamGone
				return filters.Stop
			}
			rep := x.Reply()
			h.sendLocalReply(w, r, s, rep.Status, rep.Body, rep.Details, rep.GRPCStatus, rep.HasGRPCStatus)
			return filters.Stop
		}
	}
	return filters.Continue
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

package filters

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"

	"github.com/trellis-mesh/trellis/internal/proxy/istiometrics"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// Filter is one running HTTP filter of a connection manager's chain.
//
// OnRequest runs once per request, after the route is chosen and before the router forwards it.
// perRoute is the filter's most specific typed_per_filter_config for the request (weighted cluster,
// route, virtual host, route configuration), nil when there is none. It may change the request
// headers, add response headers (x.AddResponseHeader), block (a delay, a call to an authorization
// service) as long as it gives up when ctx ends, and answer the request itself with
// x.SendLocalReply, returning Stop. It must be safe for concurrent use and must not keep x.
type Filter interface {
	OnRequest(ctx context.Context, x *Exchange, perRoute any) Status
}

// Completer is implemented by filters that also want a request's final record once it is done
// (a stats filter); only filters that ran on the request are called. The record is valid during the
// call only.
type Completer interface {
	OnComplete(info *streaminfo.Info)
}

// Observer is a Completer that is given every request's record, also of requests that ended
// before the filter chain ran (no route, a bad path) or on routes that disable the filter: Envoy
// runs its filters before routing, so a stats filter there sees every stream.
type Observer interface {
	Completer
	ObservesEveryRequest()
}

// ResponseFilter is implemented by filters that look at the upstream response's headers before
// they go downstream (the metadata exchange reads and strips its headers there). Only filters that
// ran on the request are called; h may be changed.
type ResponseFilter interface {
	OnUpstreamResponse(info *streaminfo.Info, h http.Header)
}

// Status says whether the chain goes on.
type Status int

const (
	// Continue passes the request to the next filter, then the router.
	Continue Status = iota
	// Stop ends the request with the local reply the filter set.
	Stop
)

// Exchange is one request as filters see it. The connection manager owns it and reuses it for
// later requests once this one is done.
type Exchange struct {
	// Method, Path (origin form, query included) and Authority are the request's as routed.
	Method, Path, Authority string
	// Headers are the request headers; changes reach the upstream. Canonical MIME keys.
	Headers http.Header
	// Lookup reads the request headers the way route matching does, pseudo-headers (":path")
	// included.
	Lookup route.HeaderGetter
	// GRPC is set when the request's content-type is application/grpc*: local replies go out as
	// trailers-only gRPC responses.
	GRPC bool
	// Table, VirtualHost and Route are what routing chose; Cluster is the cluster picked for it ("" for
	// redirects and direct responses).
	Table       *route.Table
	VirtualHost *route.VirtualHost
	Route       *route.Route
	Cluster     string
	// Info is the request's record: filters set response flags on it. Its downstream addresses
	// are there too.
	Info *streaminfo.Info
	// TLS is the downstream connection's TLS state (peer certificates for RBAC); nil in plaintext.
	TLS *tls.ConnectionState

	responseHeaders http.Header
	reply           LocalReply
}

// LocalReply is an answer a filter gives instead of the upstream.
type LocalReply struct {
	Status int
	Body   string
	// Details is Envoy's %RESPONSE_CODE_DETAILS% for it, e.g. "fault_filter_abort".
	Details string
	// GRPCStatus, when HasGRPCStatus, is the grpc-status sent to a gRPC client instead of the one
	// mapped from Status.
	GRPCStatus    int
	HasGRPCStatus bool
}

// SendLocalReply records the local reply that ends the request, sets flag on its record, and
// returns Stop for the filter to return.
func (x *Exchange) SendLocalReply(reply LocalReply, flag streaminfo.Flags) Status {
	x.reply = reply
	if x.Info != nil {
		x.Info.SetFlag(flag)
	}
	return Stop
}

// Reply is the local reply a filter sent.
func (x *Exchange) Reply() LocalReply { return x.reply }

// AddResponseHeader adds a header to the response that ends the request, upstream or local.
func (x *Exchange) AddResponseHeader(key, value string) {
	if x.responseHeaders == nil {
		x.responseHeaders = make(http.Header)
	}
	x.responseHeaders.Add(key, value)
}

// ResponseHeaders are the headers filters added; nil or empty when none.
func (x *Exchange) ResponseHeaders() http.Header { return x.responseHeaders }

// Reset clears x for the next request, keeping its response header map to reuse.
func (x *Exchange) Reset() {
	h := x.responseHeaders
	clear(h)
	*x = Exchange{responseHeaders: h}
}

// Env is what a filter gets when a connection manager builds it.
type Env struct {
	// Stats is the proxy's store; StatPrefix the connection manager's ("http.<StatPrefix>." is
	// where Envoy puts most filter stats).
	Stats      *stats.Store
	StatPrefix string
	// Inbound is the listener's traffic_direction INBOUND (a sidecar's inbound side).
	Inbound bool
	// Telemetry is the proxy's Istio telemetry (identity and metrics); nil when it has none.
	Telemetry *istiometrics.Telemetry
	// Clusters finds a running cluster by name, for filters that call out through one (a JWKS
	// fetch, an authorization service); nil or a nil result when there is none.
	Clusters func(name string) *upstream.Cluster
}

// EnvOption adds proxy-wide things to the Env that filters are built with.
type EnvOption func(*Env)

// WithTelemetry gives filters the proxy's Istio telemetry.
func WithTelemetry(t *istiometrics.Telemetry) EnvOption {
	return func(e *Env) { e.Telemetry = t }
}

// Config is a filter's parsed, immutable typed_config. Build makes the running filter for one
// connection manager (its stats, its state such as token buckets).
type Config interface {
	Build(env Env) Filter
}

// Spec is one entry of a connection manager's http_filters, parsed.
type Spec struct {
	// Name is the http_filters entry's name: typed_per_filter_config entries are looked up by it.
	Name   string
	Config Config
	// Disabled filters run only on routes whose typed_per_filter_config enables them with an
	// envoy.config.route.v3.FilterConfig{disabled: false}.
	Disabled bool
}

// ErrUnsupported marks config a filter does not implement; the conversion layer reports it as its
// own ErrUnsupported.
var ErrUnsupported = errors.New("not supported by trellis-proxy")

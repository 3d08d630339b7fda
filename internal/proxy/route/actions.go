package route

import (
	"regexp"
	"strings"
	"time"
)

// Redirect is a route's redirect action (Envoy's RedirectAction): the request is answered with a
// 3xx and a Location built from the request and these replacements.
type Redirect struct {
	// Scheme replaces the scheme ("https" for https_redirect); empty keeps the request's.
	Scheme string
	// Host replaces the host (and the port, if it has one); empty keeps the request's.
	Host string
	// Port, when non-zero, replaces the port.
	Port uint32
	// Path replaces the path; a '?' in it replaces the query too (Envoy's path_redirect).
	Path    string
	HasPath bool
	// PrefixRewrite replaces the matched prefix (prefix and path matches only).
	PrefixRewrite    string
	HasPrefixRewrite bool
	// RegexRewrite rewrites the path (query excluded), replacing every match.
	RegexRewrite      *regexp.Regexp
	RegexSubstitution string
	// StripQuery drops the query string.
	StripQuery bool
	// Code is 301, 302, 303, 307 or 308.
	Code int
}

// DirectResponse is a route's direct_response action: a fixed status and body.
type DirectResponse struct {
	Status int
	Body   string
}

// RetryOn is the set of conditions that make a request retriable (Envoy's retry_on).
type RetryOn uint32

// The retry_on conditions trellis-proxy implements, named as in Envoy's x-envoy-retry-on.
const (
	Retry5xx RetryOn = 1 << iota
	RetryGatewayError
	RetryConnectFailure
	RetryReset
	RetryRetriableStatusCodes
	RetryRefusedStream
	RetryRetriable4xx
	RetryEnvoyRateLimited
	// gRPC conditions read grpc-status from a trailers-only response (Envoy's x-envoy-retry-grpc-on).
	RetryGRPCCancelled
	RetryGRPCDeadlineExceeded
	RetryGRPCInternal
	RetryGRPCResourceExhausted
	RetryGRPCUnavailable
)

var retryOnNames = map[string]RetryOn{
	"5xx": Retry5xx, "gateway-error": RetryGatewayError, "connect-failure": RetryConnectFailure,
	"reset": RetryReset, "retriable-status-codes": RetryRetriableStatusCodes,
	"refused-stream": RetryRefusedStream, "retriable-4xx": RetryRetriable4xx,
	"envoy-ratelimited": RetryEnvoyRateLimited, "cancelled": RetryGRPCCancelled,
	"deadline-exceeded": RetryGRPCDeadlineExceeded, "internal": RetryGRPCInternal,
	"resource-exhausted": RetryGRPCResourceExhausted, "unavailable": RetryGRPCUnavailable,
}

// ParseRetryOn parses Envoy's comma-separated retry_on; unknown is the first token it does not know.
func ParseRetryOn(s string) (on RetryOn, unknown string) {
	for tok := range strings.SplitSeq(s, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		bit, ok := retryOnNames[tok]
		if !ok {
			return 0, tok
		}
		on |= bit
	}
	return on, ""
}

// Retry defaults, Envoy's.
const (
	DefaultRetryBaseInterval = 25 * time.Millisecond
	DefaultBufferLimit       = 1 << 20
)

// RetryPolicy is Envoy's route.v3.RetryPolicy, defaults applied.
type RetryPolicy struct {
	On         RetryOn
	NumRetries int
	// PerTryTimeout bounds each try; 0 leaves only the route timeout.
	PerTryTimeout time.Duration
	// BaseInterval and MaxInterval drive Envoy's fully jittered exponential back-off: before retry n
	// the proxy waits a random time in [0, min(base*2^n, max)).
	BaseInterval, MaxInterval time.Duration
	RetriableStatusCodes      []int
	// AvoidPreviousHosts is the previous_hosts retry host predicate: each retry re-picks up to
	// HostSelectionMaxAttempts times to find a host not tried yet.
	AvoidPreviousHosts       bool
	HostSelectionMaxAttempts int
}

// Mirror is one request_mirror_policies entry.
type Mirror struct {
	Cluster string
	// PerMillion is the share of requests mirrored, in millionths (runtime_fraction's default).
	PerMillion uint32
	// KeepHost is disable_shadow_host_suffix_append: the authority is sent unchanged instead of
	// with Envoy's "-shadow" suffix.
	KeepHost bool
}

// FilterConfig is one typed_per_filter_config entry: route-level config for the HTTP filter of that
// name in the connection manager's chain.
type FilterConfig struct {
	// Config is the filter's parsed per-route config (its package says what type); nil when the
	// entry only enables or disables the filter.
	Config any
	// Toggles is set for an envoy.config.route.v3.FilterConfig entry, whose Disabled then decides
	// whether the filter runs on requests this level covers.
	Toggles  bool
	Disabled bool
}

// FilterConfigs are a level's typed_per_filter_config entries, by filter name. Built once, never
// modified.
type FilterConfigs map[string]FilterConfig

// PerFilter finds the route-level config for the filter named name for a request routed by rt via vh
// and, for a weighted split, wc: the most specific level that has one wins (weighted cluster, route,
// virtual host, then the table), as in Envoy. toggled is false when no level enables or disables the
// filter, and disabled then means nothing.
func (t *Table) PerFilter(name string, vh *VirtualHost, rt *Route, wc *WeightedCluster) (config any, disabled, toggled bool) {
	levels := [4]FilterConfigs{nil, rt.FilterConfigs, vh.FilterConfigs, t.FilterConfigs}
	if wc != nil {
		levels[0] = wc.FilterConfigs
	}
	haveConfig := false
	for _, l := range levels {
		if len(l) == 0 {
			continue
		}
		fc, ok := l[name]
		if !ok {
			continue
		}
		if !haveConfig && fc.Config != nil {
			config, haveConfig = fc.Config, true
		}
		if !toggled && fc.Toggles {
			disabled, toggled = fc.Disabled, true
		}
		if haveConfig && toggled {
			break
		}
	}
	return config, disabled, toggled
}

// RedirectLocation builds the Location of a redirect for a request with the given scheme, authority
// and path (query included), following Envoy's RouteEntryImplBase::newUri: a new port replaces the
// old one; a new scheme drops a port that was the old scheme's default.
func (r *Route) RedirectLocation(scheme, authority, path string) string {
	rd := r.Action.Redirect
	newScheme := scheme
	if rd.Scheme != "" {
		newScheme = rd.Scheme
	}
	host := authority
	if rd.Host != "" {
		host = rd.Host
	}
	switch {
	case rd.Port != 0:
		host = stripPort(host) + ":" + uitoa(uint64(rd.Port))
	case newScheme != scheme:
		if h := stripPort(host); h != host {
			port := host[len(h)+1:]
			if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
				host = h
			}
		}
	}
	p, query := path, ""
	if i := strings.IndexByte(path, '?'); i >= 0 {
		p, query = path[:i], path[i:]
	}
	if i := strings.IndexByte(p, '#'); i >= 0 {
		p = p[:i]
	}
	switch {
	case rd.HasPath:
		p = rd.Path
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p, query = p[:i], p[i:]
		}
	case rd.HasPrefixRewrite:
		n := min(r.Match.matchedPrefixLen(), len(p))
		p = rd.PrefixRewrite + p[n:]
	case rd.RegexRewrite != nil:
		p = rd.RegexRewrite.ReplaceAllString(p, rd.RegexSubstitution)
	}
	if rd.StripQuery {
		query = ""
	}
	return newScheme + "://" + host + p + query
}

func uitoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return string(b[i:])
}

// UpstreamHost returns the Host header to send upstream for a request this route matched, given
// its authority, path and headers: host_rewrite_literal, host_rewrite_header (when the header is
// there) or host_rewrite_path_regex, else the authority.
func (r *Route) UpstreamHost(authority, path string, headers HeaderGetter) string {
	a := &r.Action
	switch {
	case a.HostRewrite != "":
		return a.HostRewrite
	case a.HostRewriteHeader != "":
		if v, ok := headers.Get(a.HostRewriteHeader); ok && v != "" {
			return v
		}
	case a.HostRewritePathRegex != nil:
		return a.HostRewritePathRegex.ReplaceAllString(stripQuery(path), a.HostRewritePathSubstitution)
	}
	return authority
}

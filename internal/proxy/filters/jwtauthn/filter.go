package jwtauthn

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
)

// filterStats are Envoy's http.<stat_prefix>.jwt_authn.<filter stat_prefix>* counters.
type filterStats struct {
	allowed, denied, corsBypassed     *stats.Counter
	jwksFetchSuccess, jwksFetchFailed *stats.Counter
	jwtCacheHit, jwtCacheMiss         *stats.Counter
}

// Build makes the running filter for one connection manager.
func (c *Config) Build(env filters.Env) filters.Filter {
	p := "http." + env.StatPrefix + ".jwt_authn." + c.statPrefix
	var st filterStats
	if env.Stats != nil {
		st = filterStats{
			allowed:          env.Stats.Counter(p + "allowed"),
			denied:           env.Stats.Counter(p + "denied"),
			corsBypassed:     env.Stats.Counter(p + "cors_preflight_bypassed"),
			jwksFetchSuccess: env.Stats.Counter(p + "jwks_fetch_success"),
			jwksFetchFailed:  env.Stats.Counter(p + "jwks_fetch_failed"),
			jwtCacheHit:      env.Stats.Counter(p + "jwt_cache_hit"),
			jwtCacheMiss:     env.Stats.Counter(p + "jwt_cache_miss"),
		}
	}
	return &Filter{cfg: c, clusters: env.Clusters, stats: st, log: slog.Default().With("component", "jwt_authn")}
}

// Filter verifies requests' JWTs as its config requires.
type Filter struct {
	cfg      *Config
	clusters func(string) *upstream.Cluster
	stats    filterStats
	log      *slog.Logger
}

// run is one request's verification state, pooled.
type run struct {
	ctx    context.Context
	f      *Filter
	x      *filters.Exchange
	now    uint64
	tokens []location
}

var runs = sync.Pool{New: func() any { return &run{tokens: make([]location, 0, 4)} }}

// OnRequest implements filters.Filter.
func (f *Filter) OnRequest(ctx context.Context, x *filters.Exchange, perRoute any) filters.Status {
	c := f.cfg
	if c.bypassCORS && x.Method == http.MethodOptions && len(x.Headers["Origin"]) > 0 && len(x.Headers["Access-Control-Request-Method"]) > 0 {
		// A CORS preflight carries no credentials (W3C CORS): it passes whatever is required.
		f.stats.corsBypassed.Inc()
		f.stats.allowed.Inc()
		return filters.Continue
	}
	var req requirement
	if pr, ok := perRoute.(*PerRoute); ok {
		if pr.Disabled {
			f.stats.allowed.Inc()
			return filters.Continue
		}
		if req, ok = c.requirements[pr.RequirementName]; !ok {
			f.stats.denied.Inc()
			msg := "Wrong requirement_name: " + pr.RequirementName + ". It should be one of [" + c.requirementNames + "]"
			body := "Failed JWT authentication: " + msg
			if c.stripFailure {
				body = ""
			}
			return x.SendLocalReply(filters.LocalReply{Status: http.StatusForbidden, Body: body, Details: "jwt_authn_access_denied{" + underscores(msg) + "}"}, 0)
		}
	} else {
		for i := range c.rules {
			if c.rules[i].match.matches(x.Path, x.Lookup) {
				req = c.rules[i].req
				break
			}
		}
	}
	if req == nil {
		f.stats.allowed.Inc()
		return filters.Continue
	}
	r := runs.Get().(*run)
	r.ctx, r.f, r.x, r.now = ctx, f, x, uint64(time.Now().Unix())
	st := req.verify(r)
	clear(r.tokens[:cap(r.tokens)])
	r.ctx, r.f, r.x, r.tokens = nil, nil, nil, r.tokens[:0]
	runs.Put(r)
	if st == OK {
		f.stats.allowed.Inc()
		return filters.Continue
	}
	f.stats.denied.Inc()
	return f.deny(x, st)
}

// deny sends Envoy's answer: 401 (403 for a disallowed audience), the status's message as body and
// a WWW-Authenticate challenge naming the request's URI (RFC 6750).
func (f *Filter) deny(x *filters.Exchange, st Status) filters.Status {
	code := http.StatusUnauthorized
	if st == JwtAudienceNotAllowed {
		code = http.StatusForbidden
	}
	if f.cfg.stripFailure {
		return x.SendLocalReply(filters.LocalReply{Status: code, Details: st.Details()}, 0)
	}
	v := `Bearer realm="` + originalURI(x) + `"`
	if st != JwtMissed {
		v += `, error="invalid_token"`
	}
	x.AddResponseHeader("Www-Authenticate", v)
	return x.SendLocalReply(filters.LocalReply{Status: code, Body: st.String(), Details: st.Details()}, 0)
}

// originalURI is Envoy's Utility::buildOriginalUri with its 256-byte path limit.
func originalURI(x *filters.Exchange) string {
	scheme := "http"
	if p := x.Headers.Get("X-Forwarded-Proto"); p != "" {
		scheme = p
	} else if x.TLS != nil {
		scheme = "https"
	}
	path := x.Path
	if len(path) > 256 {
		path = path[:256]
	}
	return scheme + "://" + x.Authority + path
}

func underscores(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == ' ' || c == '\t' {
			b[i] = '_'
		}
	}
	return string(b)
}

// authenticate is Envoy's AuthenticatorImpl: every token must verify (a good token next to a bad
// one could fool the upstream), last found first. p is the provider whose tokens these are, nil to
// pick the provider by each token's issuer (allow_missing, allow_missing_or_failed).
func (r *run) authenticate(toks []location, p *provider, aud *audiences, allowFailed, allowMissing bool) Status {
	st := JwtMissed
	for i := len(toks) - 1; i >= 0; i-- {
		st = r.verifyToken(&toks[i], p, aud)
		if st != OK && !allowFailed && !allowMissing {
			break
		}
	}
	switch {
	case allowFailed:
		return OK
	case allowMissing && st == JwtMissed:
		return OK
	}
	return st
}

func (r *run) verifyToken(loc *location, p *provider, aud *audiences) Status {
	var hit verified
	if p != nil {
		if hit = p.cache.get(loc.value); hit.t != nil {
			r.f.stats.jwtCacheHit.Inc()
		} else {
			r.f.stats.jwtCacheMiss.Inc()
		}
	}
	t := hit.t
	if t == nil {
		var st Status
		if t, st = parseToken(loc.value); st != OK {
			return st
		}
	}
	if !loc.issuers.allow(t.iss) {
		return JwtUnknownIssuer
	}
	if p == nil {
		if p = r.f.cfg.providerFor(t.iss); p == nil {
			return JwtUnknownIssuer
		}
	}
	if st := t.timeStatus(r.now, p.skew); st != OK {
		return st
	}
	allowed := p.audiences
	if aud != nil {
		allowed = *aud
	}
	if !allowed.allow(t.aud) {
		return JwtAudienceNotAllowed
	}
	ks, st := r.keys(p)
	if st != OK {
		return st
	}
	if hit.ks != ks {
		// Not verified yet, or verified with keys the provider no longer has.
		if ks, st = r.checkSignature(t, p, ks); st != OK {
			return st
		}
		p.cache.put(t, ks)
	}
	r.accept(t, p, loc)
	return OK
}

// keys are p's current keys, fetched as needed.
func (r *run) keys(p *provider) (*keySet, Status) {
	if p.remote == nil {
		if p.local == nil {
			return nil, p.localStatus
		}
		return p.local, OK
	}
	return p.remote.keys(r.ctx, r.f)
}

// checkSignature verifies t with ks, p's keys; it returns the set that verified it.
func (r *run) checkSignature(t *token, p *provider, ks *keySet) (*keySet, Status) {
	st := ks.verify(t)
	if st == JwksKidAlgMismatch && p.remote != nil {
		// A kid we do not know may be a key the issuer just rotated in.
		if fresh, ok := p.remote.refetchForKid(r.ctx, r.f, t.kid); ok {
			return fresh, fresh.verify(t)
		}
	}
	return ks, st
}

// accept applies a verified token: payload and claim headers, the token's removal unless
// forwarded, and the dynamic metadata.
func (r *run) accept(t *token, p *provider, loc *location) {
	h := r.x.Headers
	if p.forwardPayloadHeader != "" {
		v := t.payloadB64
		if p.padPayload {
			switch len(v) % 4 { // Envoy's Base64::completePadding
			case 2:
				v += "=="
			case 3:
				v += "="
			}
		}
		h[p.forwardPayloadHeader] = append(h[p.forwardPayloadHeader], v)
	}
	for _, ch := range p.claimHeaders {
		if v := t.claimString(ch.claim); v != "" {
			h[ch.header] = append(h[ch.header], v)
		}
	}
	if !p.forward && loc.header != "" {
		// Envoy removes the header; a query parameter or cookie stays (see doc.go).
		delete(h, loc.header)
	}
	if p.payloadInMetadata != "" && r.x.Info != nil {
		r.x.Info.SetMetadata(FilterName, p.payloadInMetadata, t.payloadValue)
	}
	if p.headerInMetadata != "" && r.x.Info != nil {
		r.x.Info.SetMetadata(FilterName, p.headerInMetadata, t.headerValue)
	}
}

// providerFor is Envoy's JwksCache::findByIssuer: the first provider (by name) with the issuer,
// else the first without one.
func (c *Config) providerFor(iss string) *provider {
	for _, p := range c.providers {
		if p.issuer == iss {
			return p
		}
	}
	for _, p := range c.providers {
		if p.issuer == "" {
			return p
		}
	}
	return nil
}

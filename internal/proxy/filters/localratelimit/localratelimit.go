// Package localratelimit is Envoy's local rate limit HTTP filter (envoy.filters.http.local_ratelimit):
// a token bucket per filter and per route override, answering 429 "local_rate_limited" (flag RL)
// when it is empty.
//
// Implemented: token_bucket, status, filter_enabled and filter_enforced (their default values:
// there is no runtime), response_headers_to_add (on limited responses), stage 0,
// rate_limited_as_resource_exhausted, and the <stat_prefix>.http_local_rate_limit.{enabled,
// enforced,rate_limited,ok} stats. Rejected: descriptors, rate_limits, per-connection buckets,
// cluster-wide limits, x-ratelimit headers, vh_rate_limits other than the default,
// request_headers_to_add_when_not_enforced and retry-after headers.
package localratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"sync"
	"time"

	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

const typeURL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

// Factory registers the filter.
var Factory = &filters.Factory{
	Name:          "envoy.filters.http.local_ratelimit",
	ConfigType:    typeURL,
	PerRouteTypes: []string{typeURL},
	Parse: func(tc *anypb.Any, _ filters.Converters) (filters.Config, error) {
		if tc == nil {
			return nil, errors.New("typed_config is required (stat_prefix)")
		}
		return parse(tc)
	},
	ParsePerRoute: func(tc *anypb.Any, _ filters.Converters) (any, error) { return parse(tc) },
}

// Body is Envoy's local reply body for a limited request.
const Body = "local_rate_limited"

// Config is one LocalRateLimit: the filter's own or a route's override. A route's override has its
// own bucket, made when the route configuration is parsed; a new route configuration starts full.
type Config struct {
	StatPrefix      string
	Status          int
	Enabled         filters.Fraction
	Enforced        filters.Fraction
	ResponseHeaders [][2]string
	ResourceExhaust bool
	bucket          *Bucket // nil: no token bucket, nothing is limited
}

func parse(tc *anypb.Any) (*Config, error) {
	var l localratelimitv3.LocalRateLimit
	if err := filters.Unmarshal(tc, &l); err != nil {
		return nil, err
	}
	if err := filters.OnlyFields(&l, "stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced",
		"response_headers_to_add", "stage", "rate_limited_as_resource_exhausted", "vh_rate_limits",
		"always_consume_default_token_bucket"); err != nil {
		return nil, err
	}
	if l.GetStage() != 0 {
		return nil, fmt.Errorf("stage %d: %w", l.GetStage(), filters.ErrUnsupported)
	}
	if l.GetVhRateLimits() != 0 {
		return nil, fmt.Errorf("vh_rate_limits %s: %w", l.GetVhRateLimits(), filters.ErrUnsupported)
	}
	c := &Config{
		StatPrefix:      l.GetStatPrefix(),
		Status:          http.StatusTooManyRequests,
		Enabled:         filters.RuntimeFraction(l.GetFilterEnabled(), 0),
		Enforced:        filters.RuntimeFraction(l.GetFilterEnforced(), 0),
		ResourceExhaust: l.GetRateLimitedAsResourceExhausted(),
	}
	if s := l.GetStatus(); s != nil && s.GetCode() >= 400 {
		c.Status = int(s.GetCode()) // Envoy ignores codes below 400
	}
	for i, hv := range l.GetResponseHeadersToAdd() {
		if err := filters.OnlyFields(hv, "header", "append_action"); err != nil {
			return nil, fmt.Errorf("response_headers_to_add[%d].%w", i, err)
		}
		if hv.GetHeader().GetKey() == "" {
			return nil, fmt.Errorf("response_headers_to_add[%d].header.key is required", i)
		}
		c.ResponseHeaders = append(c.ResponseHeaders, [2]string{textproto.CanonicalMIMEHeaderKey(hv.GetHeader().GetKey()), hv.GetHeader().GetValue()})
	}
	if tb := l.GetTokenBucket(); tb != nil {
		perFill := uint32(1)
		if tb.GetTokensPerFill() != nil {
			perFill = tb.GetTokensPerFill().GetValue()
		}
		interval := tb.GetFillInterval().AsDuration()
		if interval < time.Millisecond {
			return nil, errors.New("token_bucket.fill_interval: must be at least 1ms")
		}
		c.bucket = NewBucket(tb.GetMaxTokens(), perFill, interval, time.Now())
	}
	return c, nil
}

// Build makes the running filter with its stats.
func (c *Config) Build(env filters.Env) filters.Filter {
	p := c.StatPrefix + ".http_local_rate_limit."
	return &Filter{
		cfg:         c,
		enabled:     env.Stats.Counter(p + "enabled"),
		enforced:    env.Stats.Counter(p + "enforced"),
		rateLimited: env.Stats.Counter(p + "rate_limited"),
		ok:          env.Stats.Counter(p + "ok"),
	}
}

// Filter limits requests with its bucket, or a route override's.
type Filter struct {
	cfg                                *Config
	enabled, enforced, rateLimited, ok *stats.Counter
}

// OnRequest implements filters.Filter, in the order of Envoy's decodeHeaders: enabled? then a
// token; without one the request is rate_limited, and refused only when enforced.
func (f *Filter) OnRequest(_ context.Context, x *filters.Exchange, perRoute any) filters.Status {
	c := f.cfg
	if pr, ok := perRoute.(*Config); ok {
		c = pr
	}
	if c.bucket == nil || !c.Enabled.Sample() {
		return filters.Continue
	}
	f.enabled.Inc()
	if c.bucket.Take(time.Now()) {
		f.ok.Inc()
		return filters.Continue
	}
	f.rateLimited.Inc()
	if !c.Enforced.Sample() {
		return filters.Continue
	}
	f.enforced.Inc()
	for _, h := range c.ResponseHeaders {
		x.AddResponseHeader(h[0], h[1])
	}
	reply := filters.LocalReply{Status: c.Status, Body: Body, Details: "local_rate_limited"}
	if c.ResourceExhaust {
		reply.GRPCStatus, reply.HasGRPCStatus = 8, true // RESOURCE_EXHAUSTED instead of UNAVAILABLE
	}
	return x.SendLocalReply(reply, streaminfo.RateLimited)
}

// Bucket is a token bucket refilled lazily when a token is asked for, so an idle bucket costs no
// timer or goroutine.
type Bucket struct {
	max, perFill uint32
	interval     time.Duration

	mu       sync.Mutex
	tokens   uint32
	lastFill time.Time
}

// NewBucket returns a full bucket.
func NewBucket(maxTokens, perFill uint32, interval time.Duration, now time.Time) *Bucket {
	return &Bucket{max: maxTokens, perFill: perFill, interval: interval, tokens: maxTokens, lastFill: now}
}

// Take refills the bucket for the whole intervals since the last fill, then takes a token if there
// is one.
func (b *Bucket) Take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if elapsed := now.Sub(b.lastFill); elapsed >= b.interval {
		fills := uint64(elapsed / b.interval)
		b.lastFill = b.lastFill.Add(time.Duration(fills) * b.interval)
		b.tokens = uint32(min(uint64(b.tokens)+fills*uint64(b.perFill), uint64(b.max)))
	}
	if b.tokens == 0 {
		return false
	}
	b.tokens--
	return true
}

//lint:file-ignore SA1019 Envoy still honours the deprecated gRPC timeout fields, so trellis-proxy must too.

package xdsconfig

import (
	"errors"
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// RouteAction parts beyond choosing a cluster: timeouts, retries, mirrors, and the actions that
// answer without an upstream (redirects, direct responses).

// routeTimeouts converts the route timeout and its gRPC variants. idle_timeout and
// max_stream_duration.max_stream_duration are not implemented: zero (disabled) is accepted, anything
// else rejected.
func routeTimeouts(out *route.Action, a *routev3.RouteAction) error {
	out.Timeout = duration(a.GetTimeout(), DefaultRouteTimeout)
	if d := a.GetIdleTimeout(); d != nil && d.AsDuration() != 0 {
		return fmt.Errorf("idle_timeout %s: only 0s (disabled) is %w", d.AsDuration(), ErrUnsupported)
	}
	if msd := a.GetMaxStreamDuration(); msd != nil {
		if d := msd.GetMaxStreamDuration(); d != nil && d.AsDuration() != 0 {
			return fmt.Errorf("max_stream_duration.max_stream_duration %s: only 0s (disabled) is %w", d.AsDuration(), ErrUnsupported)
		}
		if msd.GetGrpcTimeoutHeaderMax() != nil {
			out.UseGRPCTimeout = true
			out.GRPCTimeoutMax = msd.GetGrpcTimeoutHeaderMax().AsDuration()
			out.GRPCTimeoutOffset = duration(msd.GetGrpcTimeoutHeaderOffset(), 0)
		}
	}
	if d := a.GetMaxGrpcTimeout(); d != nil && !out.UseGRPCTimeout {
		out.UseGRPCTimeout = true
		out.GRPCTimeoutMax = d.AsDuration()
		out.GRPCTimeoutOffset = duration(a.GetGrpcTimeoutOffset(), 0)
	}
	return nil
}

// checkHedgePolicy accepts a hedge policy only when it changes nothing (one request, no hedging on
// per-try timeouts).
func checkHedgePolicy(h *routev3.HedgePolicy) error {
	if h == nil {
		return nil
	}
	if h.GetInitialRequests().GetValue() > 1 || h.GetAdditionalRequestChance().GetNumerator() > 0 || h.GetHedgeOnPerTryTimeout() {
		return fmt.Errorf("hedge_policy: hedging is %w", ErrUnsupported)
	}
	return nil
}

const previousHostsPredicate = "envoy.retry_host_predicates.previous_hosts"

// retryPolicy converts a route or virtual host retry_policy with Envoy's defaults: one retry, 25ms
// base back-off, ten times that at most.
func retryPolicy(rp *routev3.RetryPolicy) (*route.RetryPolicy, error) {
	if err := onlyFields(rp, "retry_on", "num_retries", "per_try_timeout", "retry_host_predicate",
		"host_selection_retry_max_attempts", "retriable_status_codes", "retry_back_off"); err != nil {
		return nil, err
	}
	on, bad := route.ParseRetryOn(rp.GetRetryOn())
	if bad != "" {
		return nil, fmt.Errorf("retry_on: %q: %w", bad, ErrUnsupported)
	}
	p := &route.RetryPolicy{
		On:                       on,
		NumRetries:               1,
		PerTryTimeout:            duration(rp.GetPerTryTimeout(), 0),
		BaseInterval:             route.DefaultRetryBaseInterval,
		HostSelectionMaxAttempts: int(rp.GetHostSelectionRetryMaxAttempts()),
	}
	if n := rp.GetNumRetries(); n != nil {
		p.NumRetries = int(n.GetValue())
	}
	for _, c := range rp.GetRetriableStatusCodes() {
		p.RetriableStatusCodes = append(p.RetriableStatusCodes, int(c))
	}
	if b := rp.GetRetryBackOff(); b != nil {
		if err := onlyFields(b, "base_interval", "max_interval"); err != nil {
			return nil, fmt.Errorf("retry_back_off.%w", err)
		}
		p.BaseInterval = b.GetBaseInterval().AsDuration()
		if p.BaseInterval <= 0 {
			return nil, errors.New("retry_back_off.base_interval: must be greater than 0")
		}
		p.MaxInterval = duration(b.GetMaxInterval(), 0)
		if b.GetMaxInterval() != nil && p.MaxInterval < p.BaseInterval {
			return nil, errors.New("retry_back_off.max_interval: must not be less than base_interval")
		}
	}
	if p.MaxInterval == 0 {
		p.MaxInterval = 10 * p.BaseInterval
	}
	for i, hp := range rp.GetRetryHostPredicate() {
		if hp.GetName() != previousHostsPredicate {
			return nil, fmt.Errorf("retry_host_predicate[%d] (%q): only %s is %w", i, hp.GetName(), previousHostsPredicate, ErrUnsupported)
		}
		p.AvoidPreviousHosts = true
	}
	if p.AvoidPreviousHosts && p.HostSelectionMaxAttempts == 0 {
		p.HostSelectionMaxAttempts = 1 // Envoy's default: one re-pick
	}
	return p, nil
}

func mirrorPolicy(mp *routev3.RouteAction_RequestMirrorPolicy) (route.Mirror, error) {
	if err := onlyFields(mp, "cluster", "runtime_fraction", "trace_sampled", "disable_shadow_host_suffix_append"); err != nil {
		return route.Mirror{}, err
	}
	if mp.GetCluster() == "" {
		return route.Mirror{}, errors.New("cluster is required")
	}
	return route.Mirror{
		Cluster:    mp.GetCluster(),
		PerMillion: uint32(filters.RuntimeFraction(mp.GetRuntimeFraction(), filters.Always)),
		KeepHost:   mp.GetDisableShadowHostSuffixAppend(),
	}, nil
}

var redirectCodes = map[routev3.RedirectAction_RedirectResponseCode]int{
	routev3.RedirectAction_MOVED_PERMANENTLY:  301,
	routev3.RedirectAction_FOUND:              302,
	routev3.RedirectAction_SEE_OTHER:          303,
	routev3.RedirectAction_TEMPORARY_REDIRECT: 307,
	routev3.RedirectAction_PERMANENT_REDIRECT: 308,
}

func redirectAction(r *routev3.RedirectAction, m *route.Match) (*route.Redirect, error) {
	if err := onlyFields(r, "https_redirect", "scheme_redirect", "host_redirect", "port_redirect", "path_redirect",
		"prefix_rewrite", "regex_rewrite", "response_code", "strip_query"); err != nil {
		return nil, err
	}
	code, ok := redirectCodes[r.GetResponseCode()]
	if !ok {
		return nil, fmt.Errorf("response_code %s: %w", r.GetResponseCode(), ErrUnsupported)
	}
	out := &route.Redirect{Host: r.GetHostRedirect(), Port: r.GetPortRedirect(), StripQuery: r.GetStripQuery(), Code: code}
	switch s := r.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			out.Scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		out.Scheme = strings.ToLower(s.SchemeRedirect)
	}
	switch p := r.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		out.Path, out.HasPath = p.PathRedirect, true
	case *routev3.RedirectAction_PrefixRewrite:
		if m.Kind == route.PathRegex {
			return nil, errors.New("prefix_rewrite: cannot be used with a safe_regex match")
		}
		out.PrefixRewrite, out.HasPrefixRewrite = p.PrefixRewrite, true
	case *routev3.RedirectAction_RegexRewrite:
		re, err := regexpCompile(p.RegexRewrite.GetPattern().GetRegex())
		if err != nil {
			return nil, fmt.Errorf("regex_rewrite.pattern: %w", err)
		}
		out.RegexRewrite, out.RegexSubstitution = re, route.EnvoySubstitution(p.RegexRewrite.GetSubstitution())
	}
	return out, nil
}

func directResponse(d *routev3.DirectResponseAction, maxBody uint32) (*route.DirectResponse, error) {
	if err := onlyFields(d, "status", "body"); err != nil {
		return nil, err
	}
	out := &route.DirectResponse{Status: int(d.GetStatus())}
	if b := d.GetBody(); b != nil {
		switch s := b.GetSpecifier().(type) {
		case *corev3.DataSource_InlineString:
			out.Body = s.InlineString
		case *corev3.DataSource_InlineBytes:
			out.Body = string(s.InlineBytes)
		default:
			return nil, fmt.Errorf("body: %T: only inline_string and inline_bytes are %w", s, ErrUnsupported)
		}
	}
	if len(out.Body) > int(maxBody) {
		return nil, fmt.Errorf("body: %d bytes exceed max_direct_response_body_size_bytes (%d)", len(out.Body), maxBody)
	}
	return out, nil
}

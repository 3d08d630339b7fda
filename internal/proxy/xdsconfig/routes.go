//lint:file-ignore SA1019 Envoy still honours these deprecated HeaderMatcher and HeaderValueOption fields, so trellis-proxy must too.

package xdsconfig

import (
	"errors"
	"fmt"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/filters/cors"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// DefaultRouteTimeout is Envoy's route timeout when a route sets none.
const DefaultRouteTimeout = 15 * time.Second

// ParseRouteConfiguration converts and validates an Envoy RouteConfiguration. Virtual clusters,
// decorators and tracing are accepted and ignored; rate limits and what routes.go does not list are
// rejected.
func ParseRouteConfiguration(rc *routev3.RouteConfiguration) (*route.Table, error) {
	if err := rc.Validate(); err != nil {
		return nil, &ResourceError{Kind: "RouteConfiguration", Name: rc.GetName(), Err: err}
	}
	t, err := convertRouteConfiguration(rc)
	if err != nil {
		return nil, &ResourceError{Kind: "RouteConfiguration", Name: rc.GetName(), Err: err}
	}
	return t, nil
}

func convertRouteConfiguration(rc *routev3.RouteConfiguration) (*route.Table, error) {
	if err := onlyFields(rc, "name", "virtual_hosts", "internal_only_headers", "response_headers_to_add",
		"response_headers_to_remove", "request_headers_to_add", "request_headers_to_remove",
		"most_specific_header_mutations_wins", "validate_clusters", "max_direct_response_body_size_bytes",
		"ignore_port_in_host_matching", "metadata", "typed_per_filter_config"); err != nil {
		return nil, err
	}
	maxBody := uint32(defaultMaxDirectResponseBody)
	if m := rc.GetMaxDirectResponseBodySizeBytes(); m != nil {
		maxBody = m.GetValue()
	}
	vhosts := make([]*route.VirtualHost, 0, len(rc.GetVirtualHosts()))
	for i, v := range rc.GetVirtualHosts() {
		vh, err := virtualHost(v, maxBody)
		if err != nil {
			return nil, fmt.Errorf("virtual_hosts[%d] (%q).%w", i, v.GetName(), err)
		}
		vhosts = append(vhosts, vh)
	}
	t, err := route.NewTable(rc.GetName(), vhosts)
	if err != nil {
		return nil, err
	}
	t.IgnorePortInHostMatching = rc.GetIgnorePortInHostMatching()
	t.MostSpecificWins = rc.GetMostSpecificHeaderMutationsWins()
	if t.RequestHeaders, err = mutation(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(), "request"); err != nil {
		return nil, err
	}
	if t.ResponseHeaders, err = mutation(rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove(), "response"); err != nil {
		return nil, err
	}
	if t.FilterConfigs, err = perFilterConfigs(rc.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	return t, nil
}

// defaultMaxDirectResponseBody is Envoy's max_direct_response_body_size_bytes default.
const defaultMaxDirectResponseBody = 4096

func virtualHost(v *routev3.VirtualHost, maxBody uint32) (*route.VirtualHost, error) {
	if err := onlyFields(v, "name", "domains", "routes", "require_tls", "virtual_clusters",
		"request_headers_to_add", "request_headers_to_remove", "response_headers_to_add",
		"response_headers_to_remove", "include_request_attempt_count", "include_attempt_count_in_response",
		"retry_policy", "hedge_policy", "per_request_buffer_limit_bytes", "metadata", "typed_per_filter_config",
		"cors"); err != nil {
		return nil, err
	}
	if err := checkHedgePolicy(v.GetHedgePolicy()); err != nil {
		return nil, err
	}
	var vhRetry *route.RetryPolicy
	if rp := v.GetRetryPolicy(); rp != nil {
		var err error
		if vhRetry, err = retryPolicy(rp); err != nil {
			return nil, fmt.Errorf("retry_policy.%w", err)
		}
	}
	if v.GetRequireTls() != routev3.VirtualHost_NONE {
		return nil, fmt.Errorf("require_tls %s: %w", v.GetRequireTls(), ErrUnsupported)
	}
	vh := &route.VirtualHost{Name: v.GetName(), Domains: v.GetDomains()}
	var err error
	if vh.RequestHeaders, err = mutation(v.GetRequestHeadersToAdd(), v.GetRequestHeadersToRemove(), "request"); err != nil {
		return nil, err
	}
	if vh.ResponseHeaders, err = mutation(v.GetResponseHeadersToAdd(), v.GetResponseHeadersToRemove(), "response"); err != nil {
		return nil, err
	}
	if vh.FilterConfigs, err = perFilterConfigs(v.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	if c := v.GetCors(); c != nil {
		p, err := cors.ParseRoutePolicy(c, converters)
		if err != nil {
			return nil, fmt.Errorf("cors.%w", err)
		}
		vh.CORS = p
	}
	for i, r := range v.GetRoutes() {
		rt, err := convertRoute(r, v, vhRetry, maxBody)
		if err != nil {
			return nil, fmt.Errorf("routes[%d]%s.%w", i, nameSuffix(r.GetName()), err)
		}
		vh.Routes = append(vh.Routes, rt)
	}
	return vh, nil
}

func nameSuffix(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", name)
}

func convertRoute(r *routev3.Route, v *routev3.VirtualHost, vhRetry *route.RetryPolicy, maxBody uint32) (*route.Route, error) {
	if err := onlyFields(r, "name", "match", "route", "redirect", "direct_response", "metadata", "decorator",
		"request_headers_to_add", "request_headers_to_remove", "response_headers_to_add",
		"response_headers_to_remove", "tracing", "per_request_buffer_limit_bytes", "stat_prefix",
		"typed_per_filter_config"); err != nil {
		return nil, err
	}
	rt := &route.Route{Name: r.GetName()}
	m, err := routeMatch(r.GetMatch())
	if err != nil {
		return nil, fmt.Errorf("match.%w", err)
	}
	rt.Match = m
	switch act := r.GetAction().(type) {
	case *routev3.Route_Route:
		a, err := routeAction(act.Route, &rt.Match)
		if err != nil {
			return nil, fmt.Errorf("route.%w", err)
		}
		rt.Action = a
		if rt.Action.Retry == nil {
			rt.Action.Retry = vhRetry // a route's own retry_policy replaces its virtual host's whole
		}
		rt.Action.BufferLimit = int64(route.DefaultBufferLimit)
		if b := r.GetPerRequestBufferLimitBytes(); b != nil {
			rt.Action.BufferLimit = int64(b.GetValue())
		} else if b := v.GetPerRequestBufferLimitBytes(); b != nil {
			rt.Action.BufferLimit = int64(b.GetValue())
		}
		rt.Action.IncludeAttemptCount = v.GetIncludeRequestAttemptCount()
		rt.Action.IncludeAttemptCountInResponse = v.GetIncludeAttemptCountInResponse()
	case *routev3.Route_Redirect:
		rd, err := redirectAction(act.Redirect, &rt.Match)
		if err != nil {
			return nil, fmt.Errorf("redirect.%w", err)
		}
		rt.Action.Redirect = rd
	case *routev3.Route_DirectResponse:
		d, err := directResponse(act.DirectResponse, maxBody)
		if err != nil {
			return nil, fmt.Errorf("direct_response.%w", err)
		}
		rt.Action.Direct = d
	default:
		return nil, errors.New("action: one of route, redirect or direct_response is required")
	}
	if rt.RequestHeaders, err = mutation(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(), "request"); err != nil {
		return nil, err
	}
	if rt.ResponseHeaders, err = mutation(r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove(), "response"); err != nil {
		return nil, err
	}
	if rt.FilterConfigs, err = perFilterConfigs(r.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	return rt, nil
}

func routeMatch(m *routev3.RouteMatch) (route.Match, error) {
	var out route.Match
	if m == nil {
		return out, errors.New("match is required")
	}
	if err := onlyFields(m, "prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive",
		"headers", "query_parameters"); err != nil {
		return out, err
	}
	out.CaseInsensitive = m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.Kind, out.Path = route.PathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		out.Kind, out.Path = route.PathExact, p.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		out.Kind, out.Path = route.PathSeparatedPrefix, p.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(p.SafeRegex)
		if err != nil {
			return out, fmt.Errorf("safe_regex: %w", err)
		}
		out.Kind, out.Regex = route.PathRegex, re
	default:
		return out, fmt.Errorf("path_specifier %T: %w", p, ErrUnsupported)
	}
	for i, h := range m.GetHeaders() {
		hm, err := headerMatcher(h)
		if err != nil {
			return out, fmt.Errorf("headers[%d] (%q).%w", i, h.GetName(), err)
		}
		out.Headers = append(out.Headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qm := route.QueryMatcher{Name: q.GetName()}
		switch {
		case q.GetStringMatch() != nil:
			sm, err := stringMatcher(q.GetStringMatch())
			if err != nil {
				return out, fmt.Errorf("query_parameters[%d] (%q).string_match.%w", i, q.GetName(), err)
			}
			qm.String = &sm
		case q.GetPresentMatch():
		default:
			return out, fmt.Errorf("query_parameters[%d] (%q): string_match or present_match is required", i, q.GetName())
		}
		out.Query = append(out.Query, qm)
	}
	return out, nil
}

func headerMatcher(h *routev3.HeaderMatcher) (route.HeaderMatcher, error) {
	key, err := headerKey(h.GetName())
	if err != nil {
		return route.HeaderMatcher{}, err
	}
	out := route.HeaderMatcher{
		Name:                key,
		Invert:              h.GetInvertMatch(),
		TreatMissingAsEmpty: h.GetTreatMissingHeaderAsEmpty(),
	}
	str := func(kind route.StringKind, v string) {
		out.Kind, out.String = route.HeaderString, route.StringMatcher{Kind: kind, Value: v}
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		out.Kind, out.Present = route.HeaderPresent, true // Envoy: no specifier tests presence
	case *routev3.HeaderMatcher_PresentMatch:
		out.Kind, out.Present = route.HeaderPresent, s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		str(route.StringExact, s.ExactMatch)
		out.EmptyMatchesAny = true
	case *routev3.HeaderMatcher_PrefixMatch:
		str(route.StringPrefix, s.PrefixMatch)
	case *routev3.HeaderMatcher_SuffixMatch:
		str(route.StringSuffix, s.SuffixMatch)
	case *routev3.HeaderMatcher_ContainsMatch:
		str(route.StringContains, s.ContainsMatch)
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := compileRegex(s.SafeRegexMatch)
		if err != nil {
			return out, fmt.Errorf("safe_regex_match: %w", err)
		}
		out.Kind, out.String = route.HeaderString, route.StringMatcher{Kind: route.StringRegex, Regex: re}
	case *routev3.HeaderMatcher_RangeMatch:
		out.Kind, out.RangeStart, out.RangeEnd = route.HeaderRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_StringMatch:
		sm, err := stringMatcher(s.StringMatch)
		if err != nil {
			return out, fmt.Errorf("string_match.%w", err)
		}
		out.Kind, out.String = route.HeaderString, sm
	default:
		return out, fmt.Errorf("header_match_specifier %T: %w", s, ErrUnsupported)
	}
	return out, nil
}

func routeAction(a *routev3.RouteAction, m *route.Match) (route.Action, error) {
	var out route.Action
	if err := onlyFields(a, "cluster", "weighted_clusters", "cluster_not_found_response_code", "prefix_rewrite",
		"regex_rewrite", "host_rewrite_literal", "host_rewrite_header", "host_rewrite_path_regex",
		"auto_host_rewrite", "append_x_forwarded_host", "timeout", "idle_timeout", "retry_policy", "priority",
		"include_vh_rate_limits", "hash_policy", "max_grpc_timeout", "grpc_timeout_offset", "upgrade_configs",
		"max_stream_duration", "hedge_policy", "request_mirror_policies", "cors"); err != nil {
		return out, err
	}
	if a.GetAutoHostRewrite().GetValue() {
		return out, fmt.Errorf("auto_host_rewrite: %w", ErrUnsupported)
	}
	if a.GetAppendXForwardedHost() {
		return out, fmt.Errorf("append_x_forwarded_host: %w", ErrUnsupported)
	}
	if a.GetPriority() != corev3.RoutingPriority_DEFAULT {
		// HIGH would pick the clusters' high-priority circuit breakers, which are not enforced.
		return out, fmt.Errorf("priority %s: %w", a.GetPriority(), ErrUnsupported)
	}
	for i, u := range a.GetUpgradeConfigs() {
		if err := onlyFields(u, "upgrade_type", "enabled"); err != nil {
			return out, fmt.Errorf("upgrade_configs[%d].%w", i, err)
		}
		if strings.EqualFold(u.GetUpgradeType(), "CONNECT") {
			return out, fmt.Errorf("upgrade_configs[%d].upgrade_type CONNECT: %w", i, ErrUnsupported)
		}
		out.Upgrades = append(out.Upgrades, route.Upgrade{
			Type:    strings.ToLower(u.GetUpgradeType()),
			Enabled: u.GetEnabled() == nil || u.GetEnabled().GetValue(),
		})
	}
	switch a.GetClusterNotFoundResponseCode() {
	case routev3.RouteAction_SERVICE_UNAVAILABLE:
		out.ClusterNotFoundCode = 503
	case routev3.RouteAction_NOT_FOUND:
		out.ClusterNotFoundCode = 404
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		out.ClusterNotFoundCode = 500
	}
	switch c := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		out.Cluster = c.Cluster
	case *routev3.RouteAction_WeightedClusters:
		if err := weightedClusters(&out, c.WeightedClusters); err != nil {
			return out, fmt.Errorf("weighted_clusters.%w", err)
		}
	default:
		return out, fmt.Errorf("cluster_specifier %T: only cluster and weighted_clusters are %w", c, ErrUnsupported)
	}
	if err := routeTimeouts(&out, a); err != nil {
		return out, err
	}
	switch hr := a.GetHostRewriteSpecifier().(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		out.HostRewrite = hr.HostRewriteLiteral
	case *routev3.RouteAction_HostRewriteHeader:
		key, err := headerKey(hr.HostRewriteHeader)
		if err != nil || strings.HasPrefix(key, ":") {
			return out, fmt.Errorf("host_rewrite_header %q: must name an ordinary request header", hr.HostRewriteHeader)
		}
		out.HostRewriteHeader = key
	case *routev3.RouteAction_HostRewritePathRegex:
		re, err := regexpCompile(hr.HostRewritePathRegex.GetPattern().GetRegex())
		if err != nil {
			return out, fmt.Errorf("host_rewrite_path_regex.pattern: %w", err)
		}
		out.HostRewritePathRegex = re
		out.HostRewritePathSubstitution = route.EnvoySubstitution(hr.HostRewritePathRegex.GetSubstitution())
	}
	if a.GetPrefixRewrite() != "" {
		if m.Kind == route.PathRegex {
			return out, errors.New("prefix_rewrite: cannot be used with a safe_regex match")
		}
		out.PrefixRewrite, out.HasPrefixRewrite = a.GetPrefixRewrite(), true
	}
	if rr := a.GetRegexRewrite(); rr != nil {
		if out.HasPrefixRewrite {
			return out, errors.New("regex_rewrite: cannot be combined with prefix_rewrite")
		}
		// Not anchored: Envoy replaces every match within the path.
		re, err := regexpCompile(rr.GetPattern().GetRegex())
		if err != nil {
			return out, fmt.Errorf("regex_rewrite.pattern: %w", err)
		}
		out.RegexRewrite, out.RegexSubstitution = re, route.EnvoySubstitution(rr.GetSubstitution())
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		p, err := retryPolicy(rp)
		if err != nil {
			return out, fmt.Errorf("retry_policy.%w", err)
		}
		out.Retry = p
	}
	if err := checkHedgePolicy(a.GetHedgePolicy()); err != nil {
		return out, err
	}
	for i, mp := range a.GetRequestMirrorPolicies() {
		mirror, err := mirrorPolicy(mp)
		if err != nil {
			return out, fmt.Errorf("request_mirror_policies[%d].%w", i, err)
		}
		out.Mirrors = append(out.Mirrors, mirror)
	}
	if c := a.GetCors(); c != nil {
		p, err := cors.ParseRoutePolicy(c, converters)
		if err != nil {
			return out, fmt.Errorf("cors.%w", err)
		}
		out.CORS = p
	}
	// hash_policy: the request hash for RING_HASH/MAGLEV clusters (xdsconfig/hashpolicy.go).
	hp, err := parseHashPolicy(a.GetHashPolicy())
	if err != nil {
		return out, err
	}
	out.HashPolicy = hp
	return out, nil
}

func weightedClusters(out *route.Action, wc *routev3.WeightedCluster) error {
	if err := onlyFields(wc, "clusters", "total_weight", "runtime_key_prefix"); err != nil {
		return err
	}
	clusters := make([]route.WeightedCluster, 0, len(wc.GetClusters()))
	for i, c := range wc.GetClusters() {
		field := fmt.Sprintf("clusters[%d] (%q)", i, c.GetName())
		if err := onlyFields(c, "name", "weight", "request_headers_to_add", "request_headers_to_remove",
			"response_headers_to_add", "response_headers_to_remove", "metadata_match", "host_rewrite_literal",
			"typed_per_filter_config"); err != nil {
			return fmt.Errorf("%s.%w", field, err)
		}
		if len(c.GetMetadataMatch().GetFilterMetadata()) > 0 {
			return fmt.Errorf("%s.metadata_match: %w", field, ErrUnsupported)
		}
		out := route.WeightedCluster{Name: c.GetName(), Weight: c.GetWeight().GetValue(), HostRewrite: c.GetHostRewriteLiteral()}
		var err error
		if out.RequestHeaders, err = mutation(c.GetRequestHeadersToAdd(), c.GetRequestHeadersToRemove(), "request"); err != nil {
			return fmt.Errorf("%s.%w", field, err)
		}
		if out.ResponseHeaders, err = mutation(c.GetResponseHeadersToAdd(), c.GetResponseHeadersToRemove(), "response"); err != nil {
			return fmt.Errorf("%s.%w", field, err)
		}
		if out.FilterConfigs, err = perFilterConfigs(c.GetTypedPerFilterConfig()); err != nil {
			return fmt.Errorf("%s.%w", field, err)
		}
		clusters = append(clusters, out)
	}
	return out.SetWeighted(clusters)
}

// mutation converts one level's headers_to_add and headers_to_remove. Values using Envoy's %COMMAND%
// substitutions are rejected: sending the command text literally would not be what was asked.
func mutation(add []*corev3.HeaderValueOption, remove []string, kind string) (route.HeaderMutation, error) {
	var out route.HeaderMutation
	for i, name := range remove {
		key, err := headerKey(name)
		if err != nil || strings.HasPrefix(key, ":") {
			return out, fmt.Errorf("%s_headers_to_remove[%d] %q: pseudo-headers and Host cannot be removed", kind, i, name)
		}
		out.Remove = append(out.Remove, key)
	}
	for i, hv := range add {
		field := fmt.Sprintf("%s_headers_to_add[%d]", kind, i)
		if err := onlyFields(hv, "header", "append", "append_action", "keep_empty_value"); err != nil {
			return out, fmt.Errorf("%s.%w", field, err)
		}
		key, err := headerKey(hv.GetHeader().GetKey())
		if err != nil {
			return out, fmt.Errorf("%s.header.key: %w", field, err)
		}
		if strings.HasPrefix(key, ":") {
			return out, fmt.Errorf("%s.header.key %q: pseudo-headers and Host cannot be set this way", field, hv.GetHeader().GetKey())
		}
		value := hv.GetHeader().GetValue()
		if raw := hv.GetHeader().GetRawValue(); len(raw) > 0 {
			value = string(raw)
		}
		if value, err = literalHeaderValue(value); err != nil {
			return out, fmt.Errorf("%s.header.value: %w", field, err)
		}
		v := route.HeaderValue{Name: key, Value: value, KeepEmpty: hv.GetKeepEmptyValue()}
		switch {
		case hv.GetAppend() != nil && !hv.GetAppend().GetValue():
			v.Action = route.OverwriteIfExistsOrAdd // deprecated append: false
		case hv.GetAppend() != nil:
			v.Action = route.AppendIfExistsOrAdd
		default:
			v.Action = route.AppendAction(hv.GetAppendAction())
		}
		out.Add = append(out.Add, v)
	}
	return out, nil
}

// literalHeaderValue unescapes "%%" and rejects Envoy's %COMMAND% substitutions.
func literalHeaderValue(v string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", fmt.Errorf("%q: %%COMMAND%% substitutions are %w", v, ErrUnsupported)
	}
	return b.String(), nil
}

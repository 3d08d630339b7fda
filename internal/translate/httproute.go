package translate

import (
	"fmt"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// This file translates the parts of a VirtualService http entry beyond its
// destinations, each the way Istio's pilot does (pilot/pkg/networking/core/
// route): redirect and directResponse actions, rewrite, retries, fault,
// mirroring and CORS.

// redirectAction is Istio's ApplyRedirect. port is the port of the virtual
// host being built: Envoy cannot derive the redirect port from the request,
// but every route is built for one port, so FROM_REQUEST_PORT is that port.
// Gateways here serve plain HTTP only, so the default scheme is http.
func redirectAction(rd *networking.HTTPRedirect, port uint32) (*routev3.RedirectAction, error) {
	out := &routev3.RedirectAction{HostRedirect: rd.GetAuthority()}
	// Istio always sets path_redirect, even to "", which Envoy reads as
	// "keep the path"; leaving it unset says the same without the oddity.
	if rd.GetUri() != "" {
		out.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: rd.GetUri()}
	}
	if rd.GetScheme() != "" {
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: rd.GetScheme()}
	}
	if rd.GetRedirectPort() != nil {
		switch p := rd.GetRedirectPort().(type) {
		case *networking.HTTPRedirect_DerivePort:
			if p.DerivePort == networking.HTTPRedirect_FROM_REQUEST_PORT {
				out.PortRedirect = port
			}
			// FROM_PROTOCOL_DEFAULT: no port, Envoy's default.
		case *networking.HTTPRedirect_Port:
			out.PortRedirect = p.Port
		}
		scheme := rd.GetScheme()
		if scheme == "" {
			scheme = "http"
		}
		// Istio leaves out a port that is the scheme's default.
		if (out.PortRedirect == 80 && scheme == "http") || (out.PortRedirect == 443 && scheme == "https") {
			out.PortRedirect = 0
		}
	}
	switch rd.GetRedirectCode() {
	case 0, 301:
		out.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
	case 302:
		out.ResponseCode = routev3.RedirectAction_FOUND
	case 303:
		out.ResponseCode = routev3.RedirectAction_SEE_OTHER
	case 307:
		out.ResponseCode = routev3.RedirectAction_TEMPORARY_REDIRECT
	case 308:
		out.ResponseCode = routev3.RedirectAction_PERMANENT_REDIRECT
	default:
		// Istio drops such a route with a warning; Envoy has no other codes.
		return nil, fmt.Errorf("redirectCode %d: Envoy supports 301, 302, 303, 307 and 308", rd.GetRedirectCode())
	}
	return out, nil
}

// MaxDirectResponseBody is the max_direct_response_body_size_bytes of
// route configurations: Istio's 1 MiB, well above the 100 KiB its
// validation allows a directResponse body.
const MaxDirectResponseBody = 1 << 20

// directResponseAction is Istio's ApplyDirectResponse.
func directResponseAction(dr *networking.HTTPDirectResponse) *routev3.DirectResponseAction {
	out := &routev3.DirectResponseAction{Status: dr.GetStatus()}
	switch b := dr.GetBody().GetSpecifier().(type) {
	case *networking.HTTPBody_String_:
		out.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: b.String_}}
	case *networking.HTTPBody_Bytes:
		out.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b.Bytes}}
	}
	return out
}

// applyRewrite sets prefix_rewrite or regex_rewrite and returns the
// authority rewrite, if any. Envoy rejects prefix_rewrite on a route whose
// path is matched by regex; config validation reports that first.
func applyRewrite(a *routev3.RouteAction, rw *networking.HTTPRewrite) string {
	if rw == nil {
		return ""
	}
	if re := rw.GetUriRegexRewrite(); re != nil {
		a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
			Pattern:      regexMatcher(re.GetMatch()),
			Substitution: re.GetRewrite(),
		}
	} else if uri := rw.GetUri(); uri != "" {
		a.PrefixRewrite = uri
	}
	return rw.GetAuthority()
}

// Istio's default retry policy (pilot/pkg/networking/core/route/retry):
// two retries on connection failures, refused streams, gRPC unavailable and
// cancelled, and 503, each on a host not tried before.
const (
	defaultRetryOn                 = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
	defaultRetryAttempts           = 2
	defaultHostSelectionMaxRetries = 5
	previousHostsPredicate         = "envoy.retry_host_predicates.previous_hosts"
)

// Retry tokens Istio accepts that trellis-proxy does not implement, and
// that can be dropped without changing what gets retried: there is no
// HTTP/3 upstream, and Istio sets no retriable_headers for
// retriable-headers to match.
var droppedRetryOn = map[string]bool{"http3-post-connect-failure": true, "retriable-headers": true}

// retryPolicy is Istio's retry.ConvertPolicy: nil input means the default
// policy, attempts 0 means no retries at all. Consistent-hash routes keep
// retrying the same host, so they do without the previous_hosts predicate.
func retryPolicy(in *networking.HTTPRetry, consistentHash bool) *routev3.RetryPolicy {
	out := &routev3.RetryPolicy{
		NumRetries:                    wrapperspb.UInt32(defaultRetryAttempts),
		RetryOn:                       defaultRetryOn,
		HostSelectionRetryMaxAttempts: defaultHostSelectionMaxRetries,
		RetriableStatusCodes:          []uint32{503},
	}
	if !consistentHash {
		out.RetryHostPredicate = previousHosts()
	}
	if in == nil {
		return out
	}
	if in.GetAttempts() <= 0 {
		return nil
	}
	out.NumRetries = wrapperspb.UInt32(uint32(in.GetAttempts()))
	if in.GetRetryOn() != "" {
		// Numbers among the tokens are status codes (Istio's parseRetryOn).
		var tokens []string
		var codes []uint32
		for tok := range strings.SplitSeq(in.GetRetryOn(), ",") {
			tok = strings.TrimSpace(tok)
			if tok == "" || droppedRetryOn[tok] {
				continue
			}
			if n, err := strconv.Atoi(tok); err == nil && n >= 100 && n <= 599 {
				codes = append(codes, uint32(n))
				continue
			}
			tokens = append(tokens, tok)
		}
		out.RetryOn, out.RetriableStatusCodes = strings.Join(tokens, ","), codes
		if len(codes) > 0 && !strings.Contains(out.RetryOn, "retriable-status-codes") {
			out.RetryOn = strings.TrimPrefix(out.RetryOn+",retriable-status-codes", ",")
		}
	}
	if t := in.GetPerTryTimeout(); t != nil {
		out.PerTryTimeout = durationpb.New(t.AsDuration())
	}
	if p := in.GetRetryIgnorePreviousHosts(); p != nil {
		out.RetryHostPredicate = nil
		if p.GetValue() {
			out.RetryHostPredicate = previousHosts()
		}
	}
	if b := in.GetBackoff(); b != nil {
		out.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(b.AsDuration())}
	}
	// retryRemoteLocalities (Envoy's previous_priorities retry priority)
	// is not supported by trellis-proxy: ignored, see docs/traffic-routing.md.
	return out
}

func previousHosts() []*routev3.RetryPolicy_RetryHostPredicate {
	return []*routev3.RetryPolicy_RetryHostPredicate{{Name: previousHostsPredicate}}
}

// gRPC status codes by the names Istio's abort.grpcStatus takes.
var grpcCodes = map[string]uint32{
	"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
	"NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
	"FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
	"INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

// GRPCStatusCode maps an abort.grpcStatus name to its code.
func GRPCStatusCode(name string) (uint32, bool) {
	c, ok := grpcCodes[name]
	return c, ok
}

// faultConfig is Istio's TranslateFault, packed as the route's
// typed_per_filter_config for envoy.filters.http.fault. nil when nothing
// is injected (an exponential delay, which Istio does not support either).
func faultConfig(in *networking.HTTPFaultInjection) (*anypb.Any, error) {
	out := &faultv3.HTTPFault{}
	if d := in.GetDelay(); d != nil {
		if fd := d.GetFixedDelay(); fd != nil {
			out.Delay = &faultcommonv3.FaultDelay{
				FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(fd.AsDuration())},
			}
			if p := d.GetPercentage(); p != nil {
				out.Delay.Percentage = percentToFractional(p.GetValue())
			} else {
				//lint:ignore SA1019 the deprecated integer percent still applies when percentage is unset, as in Istio.
				out.Delay.Percentage = &typev3.FractionalPercent{Numerator: uint32(max(d.GetPercent(), 0)), Denominator: typev3.FractionalPercent_HUNDRED}
			}
		}
	}
	if a := in.GetAbort(); a != nil {
		abort := &faultv3.FaultAbort{}
		switch e := a.GetErrorType().(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			abort.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(e.HttpStatus)}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			code, ok := GRPCStatusCode(e.GrpcStatus)
			if !ok {
				return nil, fmt.Errorf("abort.grpcStatus: unknown gRPC status %q", e.GrpcStatus)
			}
			abort.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: code}
		default:
			abort = nil // http2Error: not supported by Istio either
		}
		if abort != nil {
			// Unset means no request is aborted, in Istio and Envoy alike.
			if p := a.GetPercentage(); p != nil {
				abort.Percentage = percentToFractional(p.GetValue())
			}
			out.Abort = abort
		}
	}
	if out.Delay == nil && out.Abort == nil {
		return nil, nil
	}
	return anypb.New(out)
}

// percentToFractional is Istio's translatePercentToFractionalPercent: a
// percentage with decimals, in millionths.
func percentToFractional(v float64) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: uint32(v * 10000), Denominator: typev3.FractionalPercent_MILLION}
}

// corsConfig is Istio's TranslateCORSPolicy, packed as the route's
// typed_per_filter_config for envoy.filters.http.cors.
func corsConfig(in *networking.CorsPolicy) (*anypb.Any, error) {
	out := &corsv3.CorsPolicy{
		AllowHeaders:  strings.Join(in.GetAllowHeaders(), ","),
		AllowMethods:  strings.Join(in.GetAllowMethods(), ","),
		ExposeHeaders: strings.Join(in.GetExposeHeaders(), ","),
		FilterEnabled: &corev3.RuntimeFractionalPercent{
			DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
		},
		// Envoy's default before 1.30, which Istio keeps unless told IGNORE.
		ForwardNotMatchingPreflights: wrapperspb.Bool(in.GetUnmatchedPreflights() != networking.CorsPolicy_IGNORE),
	}
	if in.GetAllowCredentials() != nil {
		out.AllowCredentials = wrapperspb.Bool(in.GetAllowCredentials().GetValue())
	}
	if m := in.GetMaxAge(); m != nil {
		out.MaxAge = strconv.FormatInt(m.GetSeconds(), 10)
	}
	if len(in.GetAllowOrigins()) > 0 {
		for i, o := range in.GetAllowOrigins() {
			sm, err := StringMatcher(o)
			if err != nil {
				return nil, fmt.Errorf("allowOrigins[%d]: %w", i, err)
			}
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, sm)
		}
	} else {
		//lint:ignore SA1019 the deprecated allowOrigin list is still honoured, as in Istio.
		for _, o := range in.GetAllowOrigin() {
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch,
				&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: o}})
		}
	}
	return anypb.New(out)
}

// mirrorFraction is Istio's MirrorPercent(ByPolicy): 100% unless a
// percentage is given; nil (no mirroring) for an explicit 0.
func mirrorFraction(p *networking.Percent, legacy *wrapperspb.UInt32Value) *corev3.RuntimeFractionalPercent {
	switch {
	case p != nil:
		if p.GetValue() <= 0 {
			return nil
		}
		return &corev3.RuntimeFractionalPercent{DefaultValue: percentToFractional(p.GetValue())}
	case legacy != nil:
		if legacy.GetValue() == 0 {
			return nil
		}
		return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: legacy.GetValue(), Denominator: typev3.FractionalPercent_HUNDRED}}
	}
	return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}}
}

// mirrorPolicies translates mirror (with mirrorPercentage) and mirrors.
func (e *env) mirrorPolicies(h *networking.HTTPRoute, vsNamespace string, port uint32, path string) ([]*routev3.RouteAction_RequestMirrorPolicy, error) {
	var out []*routev3.RouteAction_RequestMirrorPolicy
	add := func(d *networking.Destination, frac *corev3.RuntimeFractionalPercent, field string) error {
		if frac == nil || d == nil {
			return nil
		}
		cluster, err := e.destinationCluster(d, vsNamespace, port)
		if err != nil {
			return fmt.Errorf("%s.%s: %w", path, field, err)
		}
		out = append(out, &routev3.RouteAction_RequestMirrorPolicy{
			Cluster:         cluster,
			RuntimeFraction: frac,
			TraceSampled:    wrapperspb.Bool(false),
		})
		return nil
	}
	//lint:ignore SA1019 the deprecated integer mirrorPercent is still honoured, as in Istio.
	if err := add(h.GetMirror(), mirrorFraction(h.GetMirrorPercentage(), h.GetMirrorPercent()), "mirror"); err != nil {
		return nil, err
	}
	for i, m := range h.GetMirrors() {
		if err := add(m.GetDestination(), mirrorFraction(m.GetPercentage(), nil), fmt.Sprintf("mirrors[%d].destination", i)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

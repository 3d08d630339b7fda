package translate

import (
	"sort"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/trellis-mesh/trellis/internal/model"
)

// CUSTOM AuthorizationPolicies delegate the decision to an external authorization service, a
// MeshConfig envoyExtAuthzHttp or envoyExtAuthzGrpc extension provider, exactly as Istio wires
// it: an RBAC filter whose shadow rules are the CUSTOM policies (never enforced; a matching
// request gets its policy name, prefixed "istio-ext-authz", in the RBAC filter's dynamic metadata
// under "istio_ext_authz_shadow_effective_policy_id"), then an ext_authz filter enabled only for
// requests carrying that mark. Requests no CUSTOM policy selects never reach the service.

const (
	extAuthzPolicyPrefix     = "istio-ext-authz"
	extAuthzShadowStatPrefix = "istio_ext_authz_"
	shadowEffectivePolicyID  = "shadow_effective_policy_id"
	// badCustomSuffix names the DENY rules that replace CUSTOM policies Trellis cannot wire (two
	// providers for one workload, or no cluster for the service): they fail closed, as Istio's.
	badCustomSuffix = "-deny-due-to-bad-CUSTOM-action"
	// extAuthzDefaultTimeout is Istio's when the provider sets none.
	extAuthzDefaultTimeout = 600 * time.Second
)

func (e *env) customAuthz(policies []*model.AuthorizationPolicy, b rbacRuleBuilder, existing map[string]bool) ([]*hcmv3.HttpFilter, error) {
	if len(policies) == 0 {
		return nil, nil
	}
	providers := map[string]bool{}
	for _, p := range policies {
		providers[p.Spec.GetProvider().GetName()] = true
	}
	var authz *extauthzv3.ExtAuthz
	if len(providers) == 1 {
		authz = e.extAuthzConfig(policies[0].Spec.GetProvider().GetName(), existing)
	}
	if authz == nil {
		rules := b.rbac(policies, rbacv3.RBAC_DENY, "")
		named := make(map[string]*rbacv3.Policy, len(rules.Policies))
		for name, p := range rules.Policies {
			named[name+badCustomSuffix] = p
		}
		rules.Policies = named
		f, err := rbacFilter(&rbachttpv3.RBAC{Rules: rules})
		if err != nil {
			return nil, err
		}
		return []*hcmv3.HttpFilter{f}, nil
	}
	shadow, err := rbacFilter(&rbachttpv3.RBAC{
		ShadowRules:           b.rbac(policies, rbacv3.RBAC_DENY, extAuthzPolicyPrefix+"-"),
		ShadowRulesStatPrefix: extAuthzShadowStatPrefix,
	})
	if err != nil {
		return nil, err
	}
	authz.FilterEnabledMetadata = &matcherv3.MetadataMatcher{
		Filter: rbacFilterName,
		Path:   []*matcherv3.MetadataMatcher_PathSegment{metadataKey(extAuthzShadowStatPrefix + shadowEffectivePolicyID)},
		Value:  stringValue(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: extAuthzPolicyPrefix}}),
	}
	f, err := httpFilter(extAuthzFilterName, authz)
	if err != nil {
		return nil, err
	}
	return []*hcmv3.HttpFilter{shadow, f}, nil
}

// extAuthzConfig translates the named provider, or returns nil when its service has no cluster.
// Validation guarantees the provider exists and is an ext_authz one.
func (e *env) extAuthzConfig(name string, existing map[string]bool) *extauthzv3.ExtAuthz {
	var p *meshv1alpha1.MeshConfig_ExtensionProvider
	for _, ep := range e.snap.Config.Mesh.GetExtensionProviders() {
		if ep.GetName() == name {
			p = ep
			break
		}
	}
	if h := p.GetEnvoyExtAuthzHttp(); h != nil {
		host, cluster := extAuthzCluster(h.GetService(), h.GetPort())
		if !existing[cluster] {
			return nil
		}
		svc := &extauthzv3.HttpService{
			ServerUri: &corev3.HttpUri{
				// Istio's: the URI is required but only the cluster is used.
				Uri:              "http://" + host,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster},
				Timeout:          timeoutOr(h.GetTimeout(), extAuthzDefaultTimeout),
			},
			PathPrefix: h.GetPathPrefix(),
		}
		allowed := headerList(h.GetIncludeRequestHeadersInCheck())
		if allowed == nil {
			//lint:ignore SA1019 Istio still honours the deprecated field when includeRequestHeadersInCheck is unset.
			allowed = headerList(h.GetIncludeHeadersInCheck())
		}
		var add []*corev3.HeaderValue
		extra := h.GetIncludeAdditionalHeadersInCheck()
		keys := make([]string, 0, len(extra))
		for k := range extra {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			add = append(add, &corev3.HeaderValue{Key: k, Value: extra[k]})
		}
		if allowed != nil || len(add) > 0 {
			//lint:ignore SA1019 the security contract (and Istio) use authorization_request.allowed_headers.
			svc.AuthorizationRequest = &extauthzv3.AuthorizationRequest{AllowedHeaders: allowed, HeadersToAdd: add}
		}
		if len(h.GetHeadersToUpstreamOnAllow())+len(h.GetHeadersToDownstreamOnDeny())+len(h.GetHeadersToDownstreamOnAllow()) > 0 {
			svc.AuthorizationResponse = &extauthzv3.AuthorizationResponse{
				AllowedUpstreamHeaders:        headerList(h.GetHeadersToUpstreamOnAllow()),
				AllowedClientHeaders:          headerList(h.GetHeadersToDownstreamOnDeny()),
				AllowedClientHeadersOnSuccess: headerList(h.GetHeadersToDownstreamOnAllow()),
			}
		}
		return &extauthzv3.ExtAuthz{
			Services:         &extauthzv3.ExtAuthz_HttpService{HttpService: svc},
			FailureModeAllow: h.GetFailOpen(),
			StatusOnError:    statusOnError(h.GetStatusOnError()),
			WithRequestBody:  requestBody(h.GetIncludeRequestBodyInCheck()),
		}
	}
	g := p.GetEnvoyExtAuthzGrpc()
	_, cluster := extAuthzCluster(g.GetService(), g.GetPort())
	if !existing[cluster] {
		return nil
	}
	return &extauthzv3.ExtAuthz{
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}},
			// Envoy's default is 200ms; Istio sets its own default.
			Timeout: timeoutOr(g.GetTimeout(), extAuthzDefaultTimeout),
		}},
		FailureModeAllow: g.GetFailOpen(),
		StatusOnError:    statusOnError(g.GetStatusOnError()),
		WithRequestBody:  requestBody(g.GetIncludeRequestBodyInCheck()),
	}
}

// extAuthzCluster resolves a provider's service, "<host>" or "<namespace>/<host>", to the outbound
// cluster of that host and port, as Istio's LookupCluster.
func extAuthzCluster(service string, port uint32) (host, cluster string) {
	host = service
	if _, h, scoped := strings.Cut(service, "/"); scoped {
		host = h
	}
	return host, OutboundClusterName(port, "", host)
}

func timeoutOr(d *durationpb.Duration, def time.Duration) *durationpb.Duration {
	if d != nil && d.AsDuration() > 0 {
		return durationpb.New(d.AsDuration())
	}
	return durationpb.New(def)
}

// headerList is Istio's header name list: case-insensitive, "x-*" a prefix, "*-id" a suffix.
func headerList(names []string) *matcherv3.ListStringMatcher {
	if len(names) == 0 {
		return nil
	}
	out := &matcherv3.ListStringMatcher{}
	for _, n := range names {
		m := &matcherv3.StringMatcher{IgnoreCase: true}
		switch {
		case strings.HasPrefix(n, "*"):
			m.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: n[1:]}
		case strings.HasSuffix(n, "*"):
			m.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: strings.TrimSuffix(n, "*")}
		default:
			m.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: n}
		}
		out.Patterns = append(out.Patterns, m)
	}
	return out
}

func statusOnError(s string) *typev3.HttpStatus {
	if s == "" {
		return nil
	}
	n, _ := strconv.Atoi(s) // validated
	return &typev3.HttpStatus{Code: typev3.StatusCode(n)}
}

func requestBody(b *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationRequestBody) *extauthzv3.BufferSettings {
	if b == nil {
		return nil
	}
	return &extauthzv3.BufferSettings{
		MaxRequestBytes:     b.GetMaxRequestBytes(),
		AllowPartialMessage: b.GetAllowPartialMessage(),
		PackAsBytes:         b.GetPackAsBytes(),
	}
}

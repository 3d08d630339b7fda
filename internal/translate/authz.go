package translate

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	security "istio.io/api/security/v1beta1"

	"github.com/trellis-mesh/trellis/internal/model"
)

// AuthorizationPolicy and RequestAuthentication become HTTP filters at the head of the chain of
// every HCM that serves the workload (sidecar inbound listeners, gateway listeners), in Istio's
// order: jwt_authn (authentication), then authorization — CUSTOM (an RBAC shadow filter that marks
// the requests its policies select, then ext_authz gated on that mark), AUDIT (RBAC action LOG),
// DENY (action DENY), ALLOW (action ALLOW; only when some ALLOW policy applies). A request is
// allowed when CUSTOM allows or does not apply, no DENY policy matches, and, if there are ALLOW
// policies, one matches. Sidecar outbound listeners carry none of this: policies guard the server.
//
// TCP chains get the same rules, minus the HTTP-only fields, as envoy.filters.network.rbac
// filters before their tcp_proxy (authztcp.go).

// Filter names as Envoy registers them.
const (
	rbacFilterName     = "envoy.filters.http.rbac"
	jwtAuthnFilterName = "envoy.filters.http.jwt_authn"
	extAuthzFilterName = "envoy.filters.http.ext_authz"
)

// applySecurityFilters adds the authentication and authorization filters, and the clusters they
// fetch keys from, to the proxy's resources.
func (e *env) applySecurityFilters(res *Resources) error {
	if err := e.applyNetworkRBAC(res); err != nil { // authztcp.go: the same policies on TCP chains
		return err
	}
	existing := map[string]bool{}
	for _, c := range res.Clusters {
		existing[c.GetName()] = true
	}
	filters, clusters, err := e.securityFilters(existing)
	if err != nil || len(filters) == 0 {
		return err
	}
	res.Clusters = append(res.Clusters, clusters...)
	for _, l := range res.Listeners {
		if e.proxy.Type == model.SidecarProxy && l.GetTrafficDirection() != corev3.TrafficDirection_INBOUND {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			if err := withHCM(fc, func(h *hcmv3.HttpConnectionManager) {
				head := make([]*hcmv3.HttpFilter, 0, len(filters)+len(h.HttpFilters))
				for _, f := range filters {
					head = append(head, proto.Clone(f).(*hcmv3.HttpFilter))
				}
				h.HttpFilters = append(head, h.HttpFilters...)
			}); err != nil {
				return fmt.Errorf("listener %s: %w", l.GetName(), err)
			}
		}
	}
	return nil
}

// securityFilters builds the filters in chain order, with the clusters they need that do not
// exist yet.
func (e *env) securityFilters(existing map[string]bool) ([]*hcmv3.HttpFilter, []*clusterv3.Cluster, error) {
	var out []*hcmv3.HttpFilter
	jwt, err := e.jwtAuthn(existing)
	if err != nil {
		return nil, nil, err
	}
	if jwt.filter != nil {
		out = append(out, jwt.filter)
	}
	pols := e.authorizationPolicies()
	b := rbacRuleBuilder{issuers: jwt.issuers}
	custom, err := e.customAuthz(pols.custom, b, existing)
	if err != nil {
		return nil, nil, err
	}
	out = append(out, custom...)
	for _, a := range []struct {
		policies []*model.AuthorizationPolicy
		action   rbacv3.RBAC_Action
	}{
		{pols.audit, rbacv3.RBAC_LOG},
		{pols.deny, rbacv3.RBAC_DENY},
		{pols.allow, rbacv3.RBAC_ALLOW},
	} {
		if len(a.policies) == 0 {
			continue
		}
		f, err := rbacFilter(&rbachttpv3.RBAC{Rules: b.rbac(a.policies, a.action, "")})
		if err != nil {
			return nil, nil, err
		}
		out = append(out, f)
	}
	return out, jwt.clusters, nil
}

// workloadPolicies are the AuthorizationPolicies that apply to the proxy's workload, by action.
type workloadPolicies struct {
	custom, deny, allow, audit []*model.AuthorizationPolicy
}

// authorizationPolicies selects as Istio does: policies in the root namespace (mesh-wide) and in
// the workload's namespace whose selector matches its labels (no selector: all of its
// namespace's workloads), in namespace/name order.
func (e *env) authorizationPolicies() workloadPolicies {
	var out workloadPolicies
	for _, p := range e.snap.Config.AuthorizationPolicies {
		if !e.selects(p.Namespace, p.Spec.GetSelector().GetMatchLabels()) {
			continue
		}
		switch p.Spec.GetAction() {
		case security.AuthorizationPolicy_CUSTOM:
			out.custom = append(out.custom, p)
		case security.AuthorizationPolicy_DENY:
			out.deny = append(out.deny, p)
		case security.AuthorizationPolicy_AUDIT:
			out.audit = append(out.audit, p)
		default:
			out.allow = append(out.allow, p)
		}
	}
	return out
}

// selects reports whether a security policy in ns with selector applies to the proxy.
func (e *env) selects(ns string, selector map[string]string) bool {
	if ns != e.proxy.Namespace && ns != e.snap.Config.Mesh.GetRootNamespace() {
		return false
	}
	return model.LabelsMatch(selector, e.labels)
}

// rbac builds the rules for policies of one action. Policy names are Istio's,
// "ns[<ns>]-policy[<name>]-rule[<i>]" (after prefix), which is what a denied request's
// response code details name. A policy without rules matches nothing, so an ALLOW one allows
// nothing (Istio's allow-nothing policy).
func (b rbacRuleBuilder) rbac(policies []*model.AuthorizationPolicy, action rbacv3.RBAC_Action, prefix string) *rbacv3.RBAC {
	r := &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{}}
	for _, p := range policies {
		if len(p.Spec.GetRules()) == 0 {
			r.Policies[policyName(prefix, p, 0)] = policyMatchNever()
			continue
		}
		for i, rule := range p.Spec.GetRules() {
			r.Policies[policyName(prefix, p, i)] = b.policy(rule)
		}
	}
	return r
}

func policyName(prefix string, p *model.AuthorizationPolicy, rule int) string {
	return fmt.Sprintf("%sns[%s]-policy[%s]-rule[%d]", prefix, p.Namespace, p.Name, rule)
}

func policyMatchNever() *rbacv3.Policy {
	return &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_NotRule{NotRule: &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}}}},
		Principals:  []*rbacv3.Principal{principalNever()},
	}
}

func rbacFilter(cfg *rbachttpv3.RBAC) (*hcmv3.HttpFilter, error) {
	return httpFilter(rbacFilterName, cfg)
}

// httpFilter packs cfg deterministically: RBAC policies are a map, and equal inputs must give
// byte-equal resources (and equal xDS versions).
func httpFilter(name string, cfg proto.Message) (*hcmv3.HttpFilter, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, cfg, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("%s filter config: %w", name, err)
	}
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}, nil
}

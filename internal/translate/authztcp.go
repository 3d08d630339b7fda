package translate

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	security "istio.io/api/security/v1beta1"

	"github.com/trellis-mesh/trellis/internal/model"
)

// AuthorizationPolicies guard TCP chains (tcp_proxy) with envoy.filters.network.rbac filters
// before the tcp_proxy, in Istio's order (AUDIT, DENY, ALLOW), built from the TCP-applicable
// fields only, as Istio's authz builder does for TCP (Generate with forTCP):
//
//   - A rule using an HTTP-only field (hosts, methods, paths, requestPrincipals, request.*
//     conditions) is dropped from an ALLOW policy: it cannot match a connection, so it allows
//     nothing (an ALLOW policy left with no rule denies every connection).
//   - In DENY and AUDIT policies the HTTP-only fields are ignored, so the rule matches more
//     connections, not fewer.
//
// CUSTOM (ext_authz) is not applied to TCP chains: trellis-proxy has no network ext_authz.

const networkRBACFilterName = "envoy.filters.network.rbac"

// tcpRule is r restricted to what a connection can be matched on; ok is false when an ALLOW rule
// must be dropped.
func tcpRule(r *security.Rule, action security.AuthorizationPolicy_Action) (*security.Rule, bool) {
	out := proto.Clone(r).(*security.Rule)
	httpOnly := false
	for _, to := range out.GetTo() {
		o := to.GetOperation()
		if o == nil {
			continue
		}
		if len(o.GetHosts())+len(o.GetNotHosts())+len(o.GetMethods())+len(o.GetNotMethods())+len(o.GetPaths())+len(o.GetNotPaths()) > 0 {
			httpOnly = true
			o.Hosts, o.NotHosts, o.Methods, o.NotMethods, o.Paths, o.NotPaths = nil, nil, nil, nil, nil, nil
		}
	}
	for _, from := range out.GetFrom() {
		s := from.GetSource()
		if s == nil {
			continue
		}
		if len(s.GetRequestPrincipals())+len(s.GetNotRequestPrincipals()) > 0 {
			httpOnly = true
			s.RequestPrincipals, s.NotRequestPrincipals = nil, nil
		}
	}
	var when []*security.Condition
	for _, w := range out.GetWhen() {
		if strings.HasPrefix(w.GetKey(), "request.") {
			httpOnly = true
			continue
		}
		when = append(when, w)
	}
	out.When = when
	if httpOnly && action == security.AuthorizationPolicy_ALLOW {
		return nil, false
	}
	return out, true
}

// networkRBACFilters are the network RBAC filters for the proxy's workload, in chain order.
func (e *env) networkRBACFilters() ([]*listenerv3.Filter, error) {
	pols := e.authorizationPolicies()
	b := rbacRuleBuilder{}
	var out []*listenerv3.Filter
	for _, a := range []struct {
		policies []*model.AuthorizationPolicy
		action   security.AuthorizationPolicy_Action
		rbac     rbacv3.RBAC_Action
	}{
		{pols.audit, security.AuthorizationPolicy_AUDIT, rbacv3.RBAC_LOG},
		{pols.deny, security.AuthorizationPolicy_DENY, rbacv3.RBAC_DENY},
		{pols.allow, security.AuthorizationPolicy_ALLOW, rbacv3.RBAC_ALLOW},
	} {
		if len(a.policies) == 0 {
			continue
		}
		r := &rbacv3.RBAC{Action: a.rbac, Policies: map[string]*rbacv3.Policy{}}
		for _, p := range a.policies {
			if len(p.Spec.GetRules()) == 0 {
				r.Policies[policyName("", p, 0)] = policyMatchNever()
				continue
			}
			for i, rule := range p.Spec.GetRules() {
				if tr, ok := tcpRule(rule, a.action); ok {
					r.Policies[policyName("", p, i)] = b.policy(tr)
				}
			}
		}
		cfg := &rbacnetv3.RBAC{StatPrefix: "tcp.", Rules: r}
		a := &anypb.Any{}
		if err := anypb.MarshalFrom(a, cfg, proto.MarshalOptions{Deterministic: true}); err != nil {
			return nil, fmt.Errorf("%s filter config: %w", networkRBACFilterName, err)
		}
		out = append(out, &listenerv3.Filter{Name: networkRBACFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}})
	}
	return out, nil
}

// applyNetworkRBAC puts the network RBAC filters at the head of every tcp_proxy chain that serves
// the workload: a sidecar's inbound chains, a gateway's chains.
func (e *env) applyNetworkRBAC(res *Resources) error {
	filters, err := e.networkRBACFilters()
	if err != nil || len(filters) == 0 {
		return err
	}
	for _, l := range res.Listeners {
		if e.proxy.Type == model.SidecarProxy && l.GetTrafficDirection() != corev3.TrafficDirection_INBOUND {
			continue
		}
		chains := l.GetFilterChains()
		if dc := l.GetDefaultFilterChain(); dc != nil {
			chains = append(chains[:len(chains):len(chains)], dc)
		}
		for _, fc := range chains {
			if !hasFilter(fc, tcpProxyFilterName) || strings.HasSuffix(fc.GetName(), "-blackhole") {
				continue // a loop's black hole serves no one
			}
			head := make([]*listenerv3.Filter, 0, len(filters)+len(fc.Filters))
			for _, f := range filters {
				head = append(head, proto.Clone(f).(*listenerv3.Filter))
			}
			fc.Filters = append(head, fc.Filters...)
		}
	}
	return nil
}

func hasFilter(fc *listenerv3.FilterChain, name string) bool {
	for _, f := range fc.GetFilters() {
		if f.GetName() == name {
			return true
		}
	}
	return false
}

package rbac_test

import (
	"net/http"
	"testing"
)

// Policies in the shape Istio's AuthorizationPolicy translation gives them: each rule an and_rules
// of or_rules over one attribute, principals likewise, policy names ns[<ns>]-policy[<name>]-rule[<i>].
const (
	matchNever = `
permissions: [{not_rule: {any: true}}]
principals: [{not_id: {any: true}}]`
)

func TestIstioShapedPoliciesAllowAndDenyRequests(t *testing.T) {
	const none = "rbac_access_denied_matched_policy[none]"
	tests := []struct {
		name     string
		hcmExtra string
		filters  string
		requests []request
	}{{
		name:    "ALLOW with no policies allows nothing",
		filters: rbacHTTP(`rules: {action: ALLOW}`),
		requests: []request{
			{path: "/", status: 403, details: none},
		},
	}, {
		name: "allow-nothing policy (spec: {}) matches nothing",
		filters: rbacHTTP(`
rules:
  policies:
    ns[foo]-policy[allow-nothing]-rule[0]:
` + indent(matchNever, "      ")),
		requests: []request{{path: "/x", status: 403, details: none}},
	}, {
		name: "methods and paths: exact, prefix, suffix; the query is not part of the path",
		filters: rbacHTTP(`
rules:
  policies:
    ns[foo]-policy[read]-rule[0]:
      permissions:
      - and_rules:
          rules:
          - or_rules: {rules: [{header: {name: ":method", string_match: {exact: GET}}}, {header: {name: ":method", string_match: {exact: HEAD}}}]}
          - or_rules:
              rules:
              - url_path: {path: {exact: /status}}
              - url_path: {path: {prefix: /api/}}
              - url_path: {path: {suffix: .html}}
      principals: [{and_ids: {ids: [{any: true}]}}]`),
		requests: []request{
			{path: "/status", status: 200, details: "via_upstream"},
			{path: "/status?verbose=1", status: 200},
			{path: "/api/v1/books", status: 200},
			{path: "/docs/index.html", status: 200},
			{method: "HEAD", path: "/status", status: 200},
			{method: "POST", path: "/status", status: 403, details: none},
			{path: "/status/extra", status: 403},
			{path: "/other", status: 403},
		},
	}, {
		name: "hosts (the :authority, ignoring case) and header presence",
		filters: rbacHTTP(`
rules:
  policies:
    ns[foo]-policy[hosts]-rule[0]:
      permissions:
      - and_rules:
          rules:
          - or_rules: {rules: [{header: {name: ":authority", string_match: {exact: reviews.default, ignore_case: true}}}, {header: {name: ":authority", string_match: {prefix: "reviews.default:"}}}]}
      principals:
      - and_ids: {ids: [{or_ids: {ids: [{header: {name: x-token, present_match: true}}]}}]}`),
		requests: []request{
			{path: "/", host: "Reviews.Default", headers: map[string]string{"X-Token": "t"}, status: 200},
			{path: "/", host: "reviews.default:9080", headers: map[string]string{"X-Token": ""}, status: 200},
			{path: "/", host: "reviews.default", status: 403},
			{path: "/", host: "ratings.default", headers: map[string]string{"X-Token": "t"}, status: 403},
		},
	}, {
		name: "DENY with notMethods and a header value (request.headers[x-user])",
		filters: rbacHTTP(`
rules:
  action: DENY
  policies:
    ns[foo]-policy[no-writes]-rule[0]:
      permissions: [{and_rules: {rules: [{not_rule: {or_rules: {rules: [{header: {name: ":method", string_match: {exact: GET}}}]}}}]}}]
      principals: [{and_ids: {ids: [{any: true}]}}]
    ns[foo]-policy[no-mallory]-rule[0]:
      permissions: [{and_rules: {rules: [{any: true}]}}]
      principals: [{and_ids: {ids: [{or_ids: {ids: [{header: {name: x-user, string_match: {exact: mallory}}}]}}]}}]`),
		requests: []request{
			{path: "/", status: 200, details: "via_upstream"},
			{method: "DELETE", path: "/", status: 403, details: "rbac_access_denied_matched_policy[ns[foo]-policy[no-writes]-rule[0]]"},
			{path: "/", headers: map[string]string{"X-User": "mallory"}, status: 403, details: "rbac_access_denied_matched_policy[ns[foo]-policy[no-mallory]-rule[0]]"},
			{path: "/", headers: map[string]string{"X-User": "alice"}, status: 200},
		},
	}, {
		name: "DENY then ALLOW filters, as Istio orders them",
		filters: rbacHTTP(`
rules:
  action: DENY
  policies:
    ns[foo]-policy[deny-admin]-rule[0]:
      permissions: [{and_rules: {rules: [{or_rules: {rules: [{url_path: {path: {prefix: /admin}}}]}}]}}]
      principals: [{and_ids: {ids: [{any: true}]}}]`) + rbacHTTP(`
rules:
  policies:
    ns[foo]-policy[get-only]-rule[0]:
      permissions: [{and_rules: {rules: [{or_rules: {rules: [{header: {name: ":method", string_match: {exact: GET}}}]}}]}}]
      principals: [{and_ids: {ids: [{any: true}]}}]`),
		requests: []request{
			{path: "/", status: 200},
			{path: "/admin/users", status: 403, details: "rbac_access_denied_matched_policy[ns[foo]-policy[deny-admin]-rule[0]]"},
			{method: "POST", path: "/", status: 403, details: none},
		},
	}, {
		name: "LOG never denies",
		filters: rbacHTTP(`
rules:
  action: LOG
  policies:
    ns[foo]-policy[audit]-rule[0]:
      permissions: [{any: true}]
      principals: [{any: true}]`),
		requests: []request{{path: "/", status: 200}, {method: "POST", path: "/x", status: 200}},
	}, {
		name: "ipBlocks: the peer's address, whatever X-Forwarded-For says",
		filters: rbacHTTP(`
rules:
  policies:
    ns[foo]-policy[local]-rule[0]:
      permissions: [{and_rules: {rules: [{any: true}]}}]
      principals: [{and_ids: {ids: [{or_ids: {ids: [{direct_remote_ip: {address_prefix: 127.0.0.1, prefix_len: 32}}]}}]}}]
    ns[foo]-policy[source]-rule[0]:
      permissions: [{and_rules: {rules: [{any: true}]}}]
      principals: [{and_ids: {ids: [{source_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]}}]`),
		requests: []request{
			{path: "/", status: 200},
			{path: "/", headers: map[string]string{"X-Forwarded-For": "10.1.2.3"}, status: 200},
		},
	}, {
		name: "notIpBlocks: DENY from the peer's /8",
		filters: rbacHTTP(`
rules:
  action: DENY
  policies:
    ns[foo]-policy[deny-loopback]-rule[0]:
      permissions: [{and_rules: {rules: [{any: true}]}}]
      principals: [{and_ids: {ids: [{or_ids: {ids: [{direct_remote_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}]}}]}}]`),
		requests: []request{
			{path: "/", headers: map[string]string{"X-Forwarded-For": "203.0.113.7"}, status: 403},
		},
	}, {
		name: "remoteIpBlocks: the last X-Forwarded-For entry without use_remote_address",
		filters: rbacHTTP(`
rules:
  policies:
    ns[foo]-policy[clients]-rule[0]:
      permissions: [{and_rules: {rules: [{any: true}]}}]
      principals: [{and_ids: {ids: [{or_ids: {ids: [{remote_ip: {address_prefix: 203.0.113.0, prefix_len: 24}}]}}]}}]`),
		requests: []request{
			{path: "/", headers: map[string]string{"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}, status: 200},
			{path: "/", headers: map[string]string{"X-Forwarded-For": "203.0.113.7, 198.51.100.1"}, status: 403},
			{path: "/", headers: map[string]string{"X-Forwarded-For": "not-an-ip"}, status: 403},
			{path: "/", status: 403},
		},
	}, {
		name:     "remoteIpBlocks with use_remote_address: the peer unless trusted hops vouch",
		hcmExtra: "use_remote_address: true",
		filters: rbacHTTP(`
rules:
  policies:
    ns[foo]-policy[clients]-rule[0]:
      permissions: [{any: true}]
      principals: [{remote_ip: {address_prefix: 203.0.113.0, prefix_len: 24}}]`),
		requests: []request{
			{path: "/", headers: map[string]string{"X-Forwarded-For": "203.0.113.7"}, status: 403},
		},
	}, {
		name:     "remoteIpBlocks behind one trusted proxy (numTrustedProxies: 1)",
		hcmExtra: "use_remote_address: true\nxff_num_trusted_hops: 1",
		filters: rbacHTTP(`
rules:
  policies:
    ns[foo]-policy[clients]-rule[0]:
      permissions: [{any: true}]
      principals: [{remote_ip: {address_prefix: 203.0.113.0, prefix_len: 24}}]`),
		requests: []request{
			{path: "/", headers: map[string]string{"X-Forwarded-For": "198.51.100.1,203.0.113.7"}, status: 200},
			{path: "/", headers: map[string]string{"X-Forwarded-For": "203.0.113.7,198.51.100.1"}, status: 403},
			{path: "/", status: 403},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hp := newHTTPProxy(t, "", tt.hcmExtra, tt.filters, "", "", nil)
			for _, r := range tt.requests {
				hp.send(t, r)
			}
		})
	}
}

func TestDestinationPortsAndAddressesMatchTheListener(t *testing.T) {
	port := freePort(t)
	hp := newHTTPProxy(t, port, "", rbacHTTP(`
rules:
  policies:
    ns[foo]-policy[ports]-rule[0]:
      permissions:
      - and_rules:
          rules:
          - or_rules: {rules: [{destination_port: 1}, {destination_port: `+port+`}]}
          - destination_ip: {address_prefix: 127.0.0.1, prefix_len: 32}
      principals: [{any: true}]
    ns[foo]-policy[admin-port]-rule[0]:
      permissions: [{and_rules: {rules: [{destination_port_range: {start: 1, end: 1024}}, {url_path: {path: {prefix: /admin}}}]}}]
      principals: [{any: true}]`), "", "", nil)
	hp.send(t, request{path: "/", status: http.StatusOK})
	other := newHTTPProxy(t, "", "", rbacHTTP(`
rules:
  policies:
    ns[foo]-policy[ports]-rule[0]:
      permissions: [{destination_port: 1}]
      principals: [{any: true}]`), "", "", nil)
	other.send(t, request{path: "/", status: http.StatusForbidden})
}

func TestPerRouteConfigDisablesOrReplacesTheRules(t *testing.T) {
	routes := `
          - match: {prefix: /open}
            route: {cluster: backend}
            typed_per_filter_config:
              envoy.filters.http.rbac: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute}
          - match: {prefix: /posts}
            route: {cluster: backend}
            typed_per_filter_config:
              envoy.filters.http.rbac:
                "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
                rbac:
                  rules:
                    policies:
                      route-get:
                        permissions: [{header: {name: ":method", string_match: {exact: GET}}}]
                        principals: [{any: true}]
          - {match: {prefix: /}, route: {cluster: backend}}`
	hp := newHTTPProxy(t, "", "", rbacHTTP(`rules: {action: ALLOW}`), routes, "", nil)
	hp.send(t, request{path: "/", status: http.StatusForbidden})
	hp.send(t, request{path: "/open/door", status: http.StatusOK})
	hp.send(t, request{path: "/posts/1", status: http.StatusOK})
	hp.send(t, request{method: "POST", path: "/posts/1", status: http.StatusForbidden, details: "rbac_access_denied_matched_policy[none]"})
}

// Istio's CUSTOM gating: a shadow-only RBAC filter records which policy matched, and a later filter
// (ext_authz there; here a second RBAC filter) acts on that dynamic metadata.
func TestShadowRulesNeverDenyButTheirResultGatesALaterFilter(t *testing.T) {
	hp := newHTTPProxy(t, "", "", rbacHTTP(`
shadow_rules_stat_prefix: istio_ext_authz_
shadow_rules:
  action: DENY
  policies:
    istio-ext-authz-ns[foo]-policy[ext]-rule[0]:
      permissions: [{and_rules: {rules: [{or_rules: {rules: [{url_path: {path: {prefix: /ext}}}]}}]}}]
      principals: [{and_ids: {ids: [{any: true}]}}]`)+rbacHTTP(`
rules:
  action: DENY
  policies:
    gate:
      permissions: [{any: true}]
      principals:
      - and_ids:
          ids:
          - metadata: {filter: envoy.filters.http.rbac, path: [{key: istio_ext_authz_shadow_effective_policy_id}], value: {string_match: {prefix: istio-ext-authz}}}
          - metadata: {filter: envoy.filters.http.rbac, path: [{key: istio_ext_authz_shadow_engine_result}], value: {string_match: {exact: denied}}}`), "", "", nil)
	hp.send(t, request{path: "/other", status: http.StatusOK})
	hp.send(t, request{path: "/ext/login", status: http.StatusForbidden, details: "rbac_access_denied_matched_policy[gate]"})

	st := hp.p.Stats()
	for name, want := range map[string]uint64{
		"http.in.rbac.istio_ext_authz_shadow_denied":  1,
		"http.in.rbac.istio_ext_authz_shadow_allowed": 1,
		"http.in.rbac.allowed":                        1, // the first filter has no rules: only the second counts
		"http.in.rbac.denied":                         1,
	} {
		if got := st.Counter(name).Value(); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

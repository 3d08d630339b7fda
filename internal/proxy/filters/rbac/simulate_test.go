package rbac_test

import (
	"context"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
	"github.com/trellis-mesh/trellis/internal/proxy/filters/rbac"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// headers is a request's headers as the connection manager's lookup shows them.
type headers map[string]string

func (h headers) Get(name string) (string, bool) { v, ok := h[name]; return v, ok }

// buildFilter parses an RBAC filter config the way the proxy does and builds it.
func buildFilter(t testing.TB, src string) filters.Filter {
	t.Helper()
	m := yamlTo(t, &rbachttpv3.RBAC{}, src, nil)
	tc, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := rbac.ParseHTTP(tc, xdsconfig.MatcherConverters())
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Build(filters.Env{Stats: stats.NewStore(), StatPrefix: "sim"})
}

func mustStruct(t testing.TB, m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A JWT payload as jwt_authn leaves it (payload_in_metadata: the issuer).
func jwtMetadata(t testing.TB, claims map[string]any) map[string]*structpb.Struct {
	return map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": mustStruct(t, map[string]any{"https://issuer.example": claims})}
}

// Istio's requestPrincipals, request.auth.claims, audiences and a few ValueMatcher kinds, evaluated
// on requests with the dynamic metadata jwt_authn would have set.
func TestMetadataRulesMatchJWTClaimsAsIstioTranslatesThem(t *testing.T) {
	f := buildFilter(t, `
rules:
  policies:
    ns[foo]-policy[jwt]-rule[0]:
      permissions: [{and_rules: {rules: [{or_rules: {rules: [{url_path: {path: {prefix: /principal}}}]}}]}}]
      principals:
      - and_ids:
          ids:
          - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: https://issuer.example}, {key: iss}], value: {string_match: {exact: https://issuer.example}}}
          - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: https://issuer.example}, {key: sub}], value: {string_match: {exact: alice}}}
    ns[foo]-policy[groups]-rule[0]:
      permissions: [{url_path: {path: {prefix: /groups}}}]
      principals:
      - metadata:
          filter: envoy.filters.http.jwt_authn
          path: [{key: https://issuer.example}, {key: groups}]
          value: {or_match: {value_matchers: [{list_match: {one_of: {string_match: {exact: admins}}}}, {string_match: {exact: admins}}]}}
    ns[foo]-policy[kinds]-rule[0]:
      permissions: [{url_path: {path: {prefix: /kinds}}}]
      principals:
      - and_ids:
          ids:
          - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: https://issuer.example}, {key: level}], value: {double_match: {range: {start: 2, end: 5}}}}
          - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: https://issuer.example}, {key: verified}], value: {bool_match: true}}
          - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: https://issuer.example}, {key: banned}], value: {present_match: true}, invert: true}
          - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: https://issuer.example}, {key: nested}, {key: team}], value: {string_match: {prefix: core}}}
    ns[foo]-policy[sni]-rule[0]:
      permissions: [{and_rules: {rules: [{url_path: {path: {exact: /sni}}}, {requested_server_name: {suffix: .example.com}}]}}]
      principals: [{url_path: {path: {exact: /sni}}}]`)
	tests := []struct {
		name   string
		path   string
		sni    string
		claims map[string]any
		want   bool
	}{
		{"iss/sub", "/principal", "", map[string]any{"iss": "https://issuer.example", "sub": "alice"}, true},
		{"other sub", "/principal", "", map[string]any{"iss": "https://issuer.example", "sub": "bob"}, false},
		{"no token", "/principal", "", nil, false},
		{"list claim", "/groups", "", map[string]any{"groups": []any{"dev", "admins"}}, true},
		{"string claim", "/groups", "", map[string]any{"groups": "admins"}, true},
		{"list without it", "/groups", "", map[string]any{"groups": []any{"dev"}}, false},
		{"all kinds", "/kinds", "", map[string]any{"level": 3, "verified": true, "nested": map[string]any{"team": "core-net"}}, true},
		{"level out of range", "/kinds", "", map[string]any{"level": 5, "verified": true, "nested": map[string]any{"team": "core-net"}}, false},
		{"bool is not a string", "/kinds", "", map[string]any{"level": 3, "verified": "true", "nested": map[string]any{"team": "core-net"}}, false},
		{"banned present", "/kinds", "", map[string]any{"level": 3, "verified": true, "banned": false, "nested": map[string]any{"team": "core"}}, false},
		{"sni", "/sni", "api.example.com", nil, true},
		{"other sni", "/sni", "api.example.org", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := &streaminfo.Info{ServerName: tt.sni}
			if tt.claims != nil {
				info.DynamicMetadata = jwtMetadata(t, tt.claims)
			}
			x := &filters.Exchange{Method: "GET", Path: tt.path, Lookup: headers{":method": "GET", ":path": tt.path}, Info: info}
			got := f.OnRequest(context.Background(), x, nil) == filters.Continue
			if got != tt.want {
				t.Fatalf("allowed = %v, want %v (reply %+v)", got, tt.want, x.Reply())
			}
		})
	}
}

func TestShadowAndLogResultsGoToDynamicMetadataAsEnvoyWritesThem(t *testing.T) {
	f := buildFilter(t, `
shadow_rules_stat_prefix: istio_dry_run_allow_
shadow_rules:
  policies:
    ns[foo]-policy[dry]-rule[0]: {permissions: [{url_path: {path: {prefix: /a}}}], principals: [{any: true}]}
rules:
  action: LOG
  policies:
    ns[foo]-policy[audit]-rule[0]: {permissions: [{url_path: {path: {prefix: /a}}}], principals: [{any: true}]}`)
	for _, tt := range []struct {
		path, policy, result string
		hint                 bool
	}{
		{"/a", "ns[foo]-policy[dry]-rule[0]", "allowed", true},
		{"/b", "", "denied", false},
	} {
		info := &streaminfo.Info{}
		x := &filters.Exchange{Lookup: headers{":path": tt.path}, Info: info}
		if f.OnRequest(context.Background(), x, nil) != filters.Continue {
			t.Fatalf("%s: shadow or LOG rules denied a request", tt.path)
		}
		md := info.DynamicMetadata["envoy.filters.http.rbac"].GetFields()
		if got := md["istio_dry_run_allow_shadow_engine_result"].GetStringValue(); got != tt.result {
			t.Errorf("%s: shadow_engine_result %q, want %q", tt.path, got, tt.result)
		}
		if got := md["istio_dry_run_allow_shadow_effective_policy_id"].GetStringValue(); got != tt.policy {
			t.Errorf("%s: shadow_effective_policy_id %q, want %q", tt.path, got, tt.policy)
		}
		hint := info.DynamicMetadata["envoy.common"].GetFields()["access_log_hint"]
		if hint == nil || hint.GetBoolValue() != tt.hint {
			t.Errorf("%s: access_log_hint %v, want %v", tt.path, hint, tt.hint)
		}
	}
}

func TestConfigTrellisCannotEnforceIsRejectedWithItsPath(t *testing.T) {
	for _, src := range []string{
		"rules: {policies: {p: {permissions: [{uri_template: {name: t, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig, path_template: \"/a/{x}\"}}}], principals: [{any: true}]}}}",
		"rules: {policies: {p: {permissions: [{any: true}], principals: [{sourced_metadata: {metadata_matcher: {filter: f, path: [{key: k}], value: {present_match: true}}, metadata_source: ROUTE}}]}}}",
		"track_per_rule_stats: true",
	} {
		m := yamlTo(t, &rbachttpv3.RBAC{}, src, nil)
		tc, _ := anypb.New(m)
		if _, err := rbac.ParseHTTP(tc, xdsconfig.MatcherConverters()); err == nil {
			t.Errorf("accepted %s", src)
		} else {
			t.Log(err)
		}
	}
}

// BenchmarkAllowTenPolicies evaluates an Istio-shaped ALLOW config of ten policies (methods, paths,
// principals, headers) where the request matches the last one: the common path of a sidecar.
func BenchmarkAllowTenPolicies(b *testing.B) {
	src := "rules:\n  policies:\n"
	for i := range 10 {
		src += "    ns[foo]-policy[p" + string(rune('0'+i)) + `]-rule[0]:
      permissions:
      - and_rules:
          rules:
          - or_rules: {rules: [{header: {name: ":method", string_match: {exact: GET}}}, {header: {name: ":method", string_match: {exact: POST}}}]}
          - or_rules: {rules: [{url_path: {path: {prefix: /api/v` + string(rune('0'+i)) + `/}}}, {url_path: {path: {exact: /healthz` + string(rune('0'+i)) + `}}}]}
      principals:
      - and_ids: {ids: [{or_ids: {ids: [{header: {name: x-user, string_match: {suffix: "@example.com"}}}, {remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]}}]}
`
	}
	f := buildFilter(b, src)
	h := headers{":method": "GET", ":path": "/api/v9/books?page=2", ":authority": "reviews", "X-User": "alice@example.com"}
	info := &streaminfo.Info{DownstreamRemoteAddr: "127.0.0.1:40000"}
	x := &filters.Exchange{Lookup: h, Info: info}
	ctx := context.Background()
	if f.OnRequest(ctx, x, nil) != filters.Continue {
		b.Fatal("denied")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if f.OnRequest(ctx, x, nil) != filters.Continue {
			b.Fatal("denied")
		}
	}
}

package translate

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/config"
	"github.com/trellis-mesh/trellis/internal/model"
)

// securityBase is httpbin (foo) and sleep (bar) as local-mode workloads, with an ext-authz
// service the mesh config's providers point at.
const securityBase = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: foo}
spec:
  hosts: [httpbin.foo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: httpbin}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: httpbin, namespace: foo}
spec: {address: 127.0.1.10, labels: {app: httpbin}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-authz, namespace: foo}
spec:
  hosts: [ext-authz.foo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: HTTP}, {number: 9000, name: grpc, protocol: GRPC}]
  endpoints: [{address: 127.0.1.40}]
---
`

const securityMesh = `extensionProviders:
- name: http-authz
  envoyExtAuthzHttp: {service: ext-authz.foo.svc.cluster.local, port: 8000}
- name: grpc-authz
  envoyExtAuthzGrpc: {service: ext-authz.foo.svc.cluster.local, port: 9000}
- name: missing-authz
  envoyExtAuthzGrpc: {service: nowhere.foo.svc.cluster.local, port: 9000}
`

const httpbinID = "sidecar~127.0.1.10~httpbin.foo~foo.svc.cluster.local"

// buildSecurity loads securityBase plus docs (validated as a user's files are), translates them
// for httpbin in local mode and checks the result as the golden tests do.
func buildSecurity(t *testing.T, docs string) *Resources {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{"mesh.yaml": securityMesh, "config.yaml": securityBase + docs} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, _, err := config.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Build(model.NewSnapshot(cfg), mustProxy(t, httpbinID, model.InterceptNone))
	if err != nil {
		t.Fatal(err)
	}
	validateAll(t, res)
	checkConsistent(t, res)
	proxyAccepts(t, res)
	return res
}

// listenerFilters returns the HTTP filters of the named listener's first chain.
func listenerFilters(t *testing.T, res *Resources, name string) []*hcmv3.HttpFilter {
	t.Helper()
	for _, l := range res.Listeners {
		if l.GetName() != name {
			continue
		}
		h := &hcmv3.HttpConnectionManager{}
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
			t.Fatal(err)
		}
		return h.GetHttpFilters()
	}
	t.Fatalf("no listener %s", name)
	return nil
}

// describe names each filter, with its RBAC action: "rbac:DENY", "rbac:shadow", "ext_authz".
func describe(t *testing.T, fs []*hcmv3.HttpFilter) []string {
	t.Helper()
	var out []string
	for _, f := range fs {
		name := strings.TrimPrefix(f.GetName(), "envoy.filters.http.")
		if f.GetName() == rbacFilterName {
			r := rbacConfig(t, f)
			if r.GetRules() != nil {
				name += ":" + r.GetRules().GetAction().String()
			} else {
				name += ":shadow"
			}
		}
		out = append(out, name)
	}
	return out
}

func rbacConfig(t *testing.T, f *hcmv3.HttpFilter) *rbachttpv3.RBAC {
	t.Helper()
	r := &rbachttpv3.RBAC{}
	if err := f.GetTypedConfig().UnmarshalTo(r); err != nil {
		t.Fatal(err)
	}
	return r
}

const inboundListener = "127.0.1.10_8000"

func TestSecurityFiltersRunInIstiosOrderBeforeFaultOnInboundOnly(t *testing.T) {
	res := buildSecurity(t, `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules: [{issuer: issuer.example.com, jwksUri: "https://issuer.example.com/jwks"}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a-allow, namespace: foo}
spec:
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: b-deny, namespace: foo}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: c-audit, namespace: foo}
spec:
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: d-custom, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: http-authz}
  rules: [{}]
`)
	got := describe(t, listenerFilters(t, res, inboundListener))
	want := []string{"jwt_authn", "rbac:shadow", "ext_authz", "rbac:LOG", "rbac:DENY", "rbac:ALLOW", "fault", "cors", "istio.stats", "router"}
	if !slices.Equal(got, want) {
		t.Errorf("inbound filters:\n got %v\nwant %v", got, want)
	}
	for _, l := range res.Listeners {
		if l.GetName() == inboundListener {
			continue
		}
		for _, d := range describe(t, listenerFilters(t, res, l.GetName())) {
			if strings.HasPrefix(d, "rbac") || d == "jwt_authn" || d == "ext_authz" {
				t.Errorf("listener %s (outbound) carries %s: policies guard the server side only", l.GetName(), d)
			}
		}
	}
	if !slices.ContainsFunc(res.Clusters, func(c *clusterv3.Cluster) bool { return c.GetName() == "jwks|issuer.example.com|443" }) {
		t.Error("no cluster jwks|issuer.example.com|443 for the remote key set")
	}
}

func TestPoliciesApplyFromTheirNamespaceAndTheRootNamespaceWhenTheSelectorMatches(t *testing.T) {
	res := buildSecurity(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-httpbin, namespace: istio-system}
spec: {selector: {matchLabels: {app: httpbin}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: namespace-wide, namespace: foo}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-workload, namespace: foo}
spec: {selector: {matchLabels: {app: sleep}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-namespace, namespace: bar}
spec: {rules: [{}]}
`)
	fs := listenerFilters(t, res, inboundListener)
	var got []string
	for name := range rbacConfig(t, fs[0]).GetRules().GetPolicies() {
		got = append(got, name)
	}
	slices.Sort(got)
	want := []string{
		"ns[foo]-policy[namespace-wide]-rule[0]",
		"ns[istio-system]-policy[mesh-httpbin]-rule[0]",
		"ns[istio-system]-policy[mesh-wide]-rule[0]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ALLOW policies:\n got %v\nwant %v", got, want)
	}
}

func TestNoPolicyMeansNoSecurityFilter(t *testing.T) {
	res := buildSecurity(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sleep-only, namespace: foo}
spec: {selector: {matchLabels: {app: sleep}}}
`)
	got := describe(t, listenerFilters(t, res, inboundListener))
	if want := []string{"fault", "cors", "istio.stats", "router"}; !slices.Equal(got, want) {
		t.Errorf("filters: got %v, want %v", got, want)
	}
}

func TestCustomPolicyThatCannotBeWiredFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name, docs string
		want       []string
	}{
		{"two providers for one workload", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-http, namespace: foo}
spec: {action: CUSTOM, provider: {name: http-authz}, rules: [{to: [{operation: {paths: [/a]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-grpc, namespace: foo}
spec: {action: CUSTOM, provider: {name: grpc-authz}, rules: [{}]}
`, []string{"ns[foo]-policy[by-grpc]-rule[0]-deny-due-to-bad-CUSTOM-action", "ns[foo]-policy[by-http]-rule[0]-deny-due-to-bad-CUSTOM-action"}},
		{"provider service not in the registry", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: by-missing, namespace: foo}
spec: {action: CUSTOM, provider: {name: missing-authz}, rules: [{}]}
`, []string{"ns[foo]-policy[by-missing]-rule[0]-deny-due-to-bad-CUSTOM-action"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := listenerFilters(t, buildSecurity(t, tc.docs), inboundListener)
			if got := describe(t, fs); got[0] != "rbac:DENY" || slices.Contains(got, "ext_authz") {
				t.Fatalf("filters: got %v, want a DENY RBAC filter and no ext_authz", got)
			}
			var got []string
			for name := range rbacConfig(t, fs[0]).GetRules().GetPolicies() {
				got = append(got, name)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("DENY policies:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestRequestPrincipalWithoutRequestAuthenticationNeverMatches(t *testing.T) {
	res := buildSecurity(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: need-jwt, namespace: foo}
spec:
  rules: [{from: [{source: {requestPrincipals: ["*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-without-jwt, namespace: foo}
spec:
  action: DENY
  rules: [{from: [{source: {notRequestPrincipals: ["*"]}}]}]
`)
	fs := listenerFilters(t, res, inboundListener)
	never := principalNever()
	allow := rbacConfig(t, fs[1]).GetRules().GetPolicies()["ns[foo]-policy[need-jwt]-rule[0]"]
	wantAllow := principalAnd([]*rbacv3.Principal{principalOr([]*rbacv3.Principal{never})})
	if !proto.Equal(allow.GetPrincipals()[0], wantAllow) {
		t.Errorf("ALLOW requestPrincipals [*] without any issuer: got %v, want a principal that never matches", allow.GetPrincipals()[0])
	}
	deny := rbacConfig(t, fs[0]).GetRules().GetPolicies()["ns[foo]-policy[deny-without-jwt]-rule[0]"]
	wantDeny := principalAnd([]*rbacv3.Principal{{Identifier: &rbacv3.Principal_NotId{NotId: principalOr([]*rbacv3.Principal{never})}}})
	if !proto.Equal(deny.GetPrincipals()[0], wantDeny) {
		t.Errorf("DENY notRequestPrincipals [*] without any issuer: got %v, want not(never): every request", deny.GetPrincipals()[0])
	}
}

func TestJWKSOverHTTPSToAnIPVerifiesTheIPAndSendsNoSNI(t *testing.T) {
	res := buildSecurity(t, `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  jwtRules: [{issuer: local, jwksUri: "https://127.0.1.60:8443/keys"}]
`)
	i := slices.IndexFunc(res.Clusters, func(c *clusterv3.Cluster) bool { return c.GetName() == "jwks|127.0.1.60|8443" })
	if i < 0 {
		t.Fatal("no cluster jwks|127.0.1.60|8443")
	}
	c := res.Clusters[i]
	if c.GetType() != clusterv3.Cluster_STATIC {
		t.Errorf("type: got %v, want STATIC for an IP", c.GetType())
	}
	u := &tlsv3.UpstreamTlsContext{}
	if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(u); err != nil {
		t.Fatal(err)
	}
	san := u.GetCommonTlsContext().GetValidationContext().GetMatchTypedSubjectAltNames()
	if u.GetSni() != "" || len(san) != 1 || san[0].GetSanType() != tlsv3.SubjectAltNameMatcher_IP_ADDRESS || san[0].GetMatcher().GetExact() != "127.0.1.60" {
		t.Errorf("tls: got sni %q, sans %v; want no SNI and the IP SAN 127.0.1.60", u.GetSni(), san)
	}
}

func TestSameIssuerInTwoRequestAuthenticationsGetsTwoProviders(t *testing.T) {
	res := buildSecurity(t, `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh, namespace: istio-system}
spec:
  jwtRules: [{issuer: issuer.example.com, jwksUri: "https://issuer.example.com/jwks"}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules: [{issuer: issuer.example.com, jwksUri: "https://issuer.example.com/jwks", audiences: [httpbin]}]
`)
	f := listenerFilters(t, res, inboundListener)[0]
	cfg := &jwtv3.JwtAuthentication{}
	if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"issuer.example.com", "issuer.example.com#2"} {
		if p := cfg.GetProviders()[name]; p.GetPayloadInMetadata() != "issuer.example.com" {
			t.Errorf("provider %q: got %v, want payload under the issuer", name, p)
		}
	}
	reqs := cfg.GetRules()[0].GetRequires().GetRequiresAny().GetRequirements()
	if len(reqs) != 3 || reqs[2].GetAllowMissing() == nil {
		t.Errorf("requires_any: got %v, want both providers then allow_missing", reqs)
	}
}

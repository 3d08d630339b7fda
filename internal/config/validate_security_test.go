package config

import (
	"path/filepath"
	"strings"
	"testing"
)

const securityMesh = `extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: [x-ext-authz]
    headersToUpstreamOnAllow: [x-user-id]
    headersToDownstreamOnDeny: [x-ext-authz-check-result]
- name: sample-ext-authz-grpc
  envoyExtAuthzGrpc: {service: foo/ext-authz.foo.svc.cluster.local, port: 9000, timeout: 2s}
- name: otel
  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317}
`

// istioSecurityTaskDocs are the policies of Istio's security tasks (authorization for HTTP
// traffic, deny, JWT, ingress IP-based, external authorization), as users apply them.
const istioSecurityTaskDocs = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: foo}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-by-sleep, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/foo/sa/sleep"], namespaces: ["foo"]}
    to:
    - operation: {methods: ["GET"], paths: ["/headers", "/ip*", "*.json"], ports: ["8000"], hosts: ["*.example.com"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to: [{operation: {notPaths: ["/public/*"], notMethods: ["GET"]}}]
    when:
    - {key: "request.headers[x-token]", notValues: ["admin"]}
    - {key: source.ip, values: ["10.0.0.0/8", "192.168.1.1"]}
    - {key: destination.port, values: ["8000"]}
    - {key: "request.auth.claims[realm_access][roles]", values: ["admin"]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://raw.githubusercontent.com/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json
    audiences: [httpbin]
    fromHeaders: [{name: x-jwt-assertion, prefix: "Bearer "}]
    fromParams: [token]
    fromCookies: [session]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{header: x-jwt-group, claim: group}]
    forwardOriginalToken: true
    timeout: 5s
  - issuer: inline.example.com
    jwks: '{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","kid":"k1"}]}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from: [{source: {requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]}}]
    when: [{key: "request.auth.claims[groups]", values: ["group1"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress-policy, namespace: istio-system}
spec:
  selector: {matchLabels: {app: istio-ingressgateway}}
  action: ALLOW
  rules:
  - from: [{source: {remoteIpBlocks: ["1.2.3.4", "5.6.7.0/24"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: CUSTOM
  provider: {name: sample-ext-authz-http}
  rules:
  - to: [{operation: {paths: ["/headers"]}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: audit-writes, namespace: foo}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {methods: ["POST", "PUT", "DELETE"]}}]
`

func TestIstioSecurityTaskPoliciesLoad(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "mesh.yaml"), securityMesh)
	writeFile(t, filepath.Join(dir, "security.yaml"), istioSecurityTaskDocs)
	cfg, warns, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	if got := len(cfg.AuthorizationPolicies); got != 7 {
		t.Errorf("authorization policies: got %d, want 7", got)
	}
	if got := len(cfg.RequestAuthentications); got != 1 || len(cfg.RequestAuthentications[0].Spec.GetJwtRules()) != 2 {
		t.Errorf("request authentications: got %v", cfg.RequestAuthentications)
	}
}

func TestInvalidSecurityPolicyReportsLineAndFieldPath(t *testing.T) {
	ap := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: foo\n"
	ra := "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: r\n  namespace: foo\n"
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"custom without provider", ap + "spec:\n  action: CUSTOM\n  rules: [{}]\n",
			`6: AuthorizationPolicy foo/p: spec.provider.name: required with action CUSTOM`},
		{"custom without rules", ap + "spec:\n  action: CUSTOM\n  provider: {name: sample-ext-authz-http}\n",
			`spec.rules: CUSTOM action without rules would never be triggered`},
		{"custom unknown provider", ap + "spec:\n  action: CUSTOM\n  provider:\n    name: nope\n  rules: [{}]\n",
			`9: AuthorizationPolicy foo/p: spec.provider.name: provider "nope" is not defined in the mesh config's extensionProviders`},
		{"custom tracing provider", ap + "spec:\n  action: CUSTOM\n  provider: {name: otel}\n  rules: [{}]\n",
			`provider "otel" is a opentelemetry provider; CUSTOM authorization needs an envoyExtAuthzHttp or envoyExtAuthzGrpc provider`},
		{"provider with allow", ap + "spec:\n  provider: {name: sample-ext-authz-http}\n",
			`spec.provider: only allowed with action CUSTOM, got ALLOW`},
		{"targetRef", ap + "spec:\n  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n",
			`7: AuthorizationPolicy foo/p: spec.targetRef: attaches the policy to a Gateway API resource`},
		{"empty source", ap + "spec:\n  rules:\n  - from:\n    - source: {}\n",
			`9: AuthorizationPolicy foo/p: spec.rules[0].from[0].source: must not be empty`},
		{"bad ip block", ap + "spec:\n  rules:\n  - from:\n    - source:\n        ipBlocks: [10.0.0.0/33]\n",
			`10: AuthorizationPolicy foo/p: spec.rules[0].from[0].source.ipBlocks[0]: "10.0.0.0/33" is not an IP address or CIDR range`},
		{"service accounts", ap + "spec:\n  rules:\n  - from:\n    - source:\n        serviceAccounts: [sleep]\n",
			`spec.rules[0].from[0].source.serviceAccounts: not supported by Trellis`},
		{"middle wildcard", ap + "spec:\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/*/sa/sleep]\n",
			`spec.rules[0].from[0].source.principals[0]: "cluster.local/ns/*/sa/sleep": '*' may only be the whole value, its first or its last character`},
		{"bad port", ap + "spec:\n  rules:\n  - to:\n    - operation:\n        ports: [http]\n",
			`10: AuthorizationPolicy foo/p: spec.rules[0].to[0].operation.ports[0]: "http" is not a port`},
		{"path template", ap + "spec:\n  rules:\n  - to:\n    - operation:\n        paths: [\"/api/{*}/x\"]\n",
			`spec.rules[0].to[0].operation.paths[0]: "/api/{*}/x": path templates ({*}, {**}) are not supported by Trellis`},
		{"relative path", ap + "spec:\n  rules:\n  - to:\n    - operation:\n        paths: [api]\n",
			`"api": a path starts with /`},
		{"unknown condition key", ap + "spec:\n  rules:\n  - when:\n    - key: source.serviceAccount\n      values: [sleep]\n",
			`9: AuthorizationPolicy foo/p: spec.rules[0].when[0].key: "source.serviceAccount" is not supported; want one of request.headers[<name>]`},
		{"condition without values", ap + "spec:\n  rules:\n  - when:\n    - key: source.ip\n",
			`spec.rules[0].when[0]: set values or notValues`},
		{"malformed claim key", ap + "spec:\n  rules:\n  - when:\n    - key: request.auth.claims[a]b\n      values: [x]\n",
			`spec.rules[0].when[0].key: "request.auth.claims[a]b": want [name] segments, found "b"`},
		{"condition ip value", ap + "spec:\n  rules:\n  - when:\n    - key: remote.ip\n      values: [nope]\n",
			`spec.rules[0].when[0].values[0]: "nope" is not an IP address or CIDR range`},
		{"dry run", "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: foo\n  annotations: {istio.io/dry-run: \"true\"}\nspec: {}\n",
			`6: AuthorizationPolicy foo/p: metadata.annotations: istio.io/dry-run: dry-run policies are not supported by Trellis yet`},
		{"issuer required", ra + "spec:\n  jwtRules:\n  - jwksUri: https://example.com/jwks.json\n",
			`8: RequestAuthentication foo/r: spec.jwtRules[0].issuer: required`},
		{"no key set", ra + "spec:\n  jwtRules:\n  - issuer: https://example.com\n",
			`spec.jwtRules[0].jwksUri: set jwksUri (or jwks): Trellis does not yet discover the key set`},
		{"jwks uri scheme", ra + "spec:\n  jwtRules:\n  - issuer: https://example.com\n    jwksUri: ftp://example.com/jwks.json\n",
			`9: RequestAuthentication foo/r: spec.jwtRules[0].jwksUri: "ftp://example.com/jwks.json": want an http:// or https:// URL`},
		{"inline jwks", ra + "spec:\n  jwtRules:\n  - issuer: https://example.com\n    jwks: '{\"keys\": [{\"kty\": \"RSA\", \"n\": \"abc\"}]}'\n",
			`spec.jwtRules[0].jwks: keys[0]: a RSA key needs "e"`},
		{"claim to header", ra + "spec:\n  jwtRules:\n  - issuer: https://example.com\n    jwksUri: https://example.com/jwks.json\n    outputClaimToHeaders: [{header: \"x bad\", claim: sub}]\n",
			`spec.jwtRules[0].outputClaimToHeaders[0].header: "x bad" is not a valid header name`},
		{"from header name", ra + "spec:\n  jwtRules:\n  - issuer: https://example.com\n    jwksUri: https://example.com/jwks.json\n    fromHeaders: [{prefix: \"Bearer \"}]\n",
			`spec.jwtRules[0].fromHeaders[0].name: required`},
		{"space delimited claims", ra + "spec:\n  jwtRules:\n  - issuer: https://example.com\n    jwksUri: https://example.com/jwks.json\n    spaceDelimitedClaims: [scope]\n",
			`spec.jwtRules[0].spaceDelimitedClaims: not supported by Trellis`},
		{"selector wildcard", ra + "spec:\n  selector: {matchLabels: {app: \"*\"}}\n",
			`spec.selector.matchLabels[app]: wildcard "*" is not supported in a selector`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "mesh.yaml"), securityMesh)
			writeFile(t, filepath.Join(dir, "p.yaml"), tc.doc)
			_, _, err := LoadDir(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %q", err, tc.want)
			}
		})
	}
}

func TestInvalidExtAuthzProviderReportsMeshField(t *testing.T) {
	for _, tc := range []struct{ mesh, want string }{
		{"extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {port: 8000}\n", `mesh.yaml:3: MeshConfig: extensionProviders[0].envoyExtAuthzHttp.service: required`},
		{"extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: a.foo.svc.cluster.local, port: 8000, pathPrefix: check}\n", `extensionProviders[0].envoyExtAuthzHttp.pathPrefix: "check" must start with /`},
		{"extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: a.foo.svc.cluster.local, port: 8000, headersToUpstreamOnAllow: [\"*\"]}\n", `extensionProviders[0].envoyExtAuthzHttp.headersToUpstreamOnAllow[0]: a single wildcard "*" is not supported`},
		{"extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: a.foo.svc.cluster.local, port: 8000, clearRouteCache: true}\n", `extensionProviders[0].envoyExtAuthzHttp.clearRouteCache: not supported by Trellis`},
		{"extensionProviders:\n- name: a\n  envoyExtAuthzGrpc: {service: a.foo.svc.cluster.local, port: 0}\n", `extensionProviders[0].envoyExtAuthzGrpc.port: must be between 1 and 65535, got 0`},
		{"extensionProviders:\n- name: a\n  envoyExtAuthzGrpc: {service: \"Foo_/a\", port: 9000}\n", `extensionProviders[0].envoyExtAuthzGrpc.service: "Foo_/a": namespace "Foo_" is not a valid namespace`},
		{"extensionProviders:\n- name: a\n  envoyExtAuthzGrpc: {service: a.foo.svc.cluster.local, port: 9000, statusOnError: \"abc\"}\n", `extensionProviders[0].envoyExtAuthzGrpc.statusOnError: "abc" is not an HTTP status code`},
	} {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "mesh.yaml"), tc.mesh)
		_, _, err := LoadDir(dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mesh %q: got %v, want %q", tc.mesh, err, tc.want)
		}
	}
}

package localmesh_test

import (
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// Issue 5's security matrix, end to end: the real control plane with its CA,
// real proxies holding CA-issued certificates, real apps, and Istio YAML
// written into the watched config directory while the mesh runs. Three
// workloads: server (default/server-sa, ports 8000 and 8001 to the app),
// client (default/client-sa) and other (other/other-sa); clients call the
// server through their own sidecar, used as an HTTP proxy, as
// `curl -x http://127.0.1.102:15001 http://server.default.svc.cluster.local:8000/`
// does. Each subtest replaces policy.yaml and waits (polling, with a
// generous deadline) until every request of its matrix is answered as Istio
// would answer it.

const (
	serverIP   = "127.0.1.101"
	clientIP   = "127.0.1.102"
	otherIP    = "127.0.1.103"
	serverURL  = "http://server.default.svc.cluster.local:8000"
	server2URL = "http://server.default.svc.cluster.local:8001"
	// jwtIssuer is the RequestAuthentication issuer of the JWT cases.
	jwtIssuer   = "https://issuer.trellis.test"
	jwtAudience = "server.default.svc.cluster.local"
)

// securityMeshConfig is the base config; APP is the app's address, AUTH the
// ext_authz service's port.
const securityMeshConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: default}
spec:
  hosts: [server.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8000, name: http, protocol: HTTP}
  - {number: 8001, name: http-admin, protocol: HTTP}
  workloadSelector: {labels: {app: server}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server, namespace: default}
spec:
  address: 127.0.1.101
  labels: {app: server}
  serviceAccount: server-sa
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: server, namespace: default}
spec:
  workloadSelector: {labels: {app: server}}
  ingress:
  - port: {number: 8000, protocol: HTTP, name: http}
    defaultEndpoint: APP
  - port: {number: 8001, protocol: HTTP, name: http-admin}
    defaultEndpoint: APP
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: default}
spec:
  address: 127.0.1.102
  labels: {app: client}
  serviceAccount: client-sa
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other, namespace: other}
spec:
  address: 127.0.1.103
  labels: {app: other}
  serviceAccount: other-sa
---
# The external authorization service: no sidecar, plain HTTP.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-authz, namespace: default}
spec:
  hosts: [ext-authz.default.svc.cluster.local]
  resolution: STATIC
  ports:
  - {number: 8000, name: http, protocol: HTTP}
  endpoints:
  - address: 127.0.0.1
    ports: {http: AUTH}
`

// securityMeshYAML is the MeshConfig: JSON access logs (the "why was I
// denied" story) and the ext_authz provider of the CUSTOM cases.
const securityMeshYAML = `accessLogFile: LOG
accessLogEncoding: JSON
extensionProviders:
- name: user-auth
  envoyExtAuthzHttp:
    service: ext-authz.default.svc.cluster.local
    port: 8000
    pathPrefix: /check
    includeRequestHeadersInCheck: [x-session]
    headersToUpstreamOnAllow: [x-user-id, x-user-roles]
    headersToDownstreamOnDeny: [content-type, x-auth-reason]
`

func TestSecurityMatrixEndToEnd(t *testing.T) {
	m := startSecurityMesh(t)

	t.Run("MutualTLS", m.testMutualTLS)
	t.Run("AuthorizationPolicy", m.testAuthorizationPolicy)
	t.Run("RequestAuthentication", m.testRequestAuthentication)
	t.Run("ExternalAuthorization", m.testExternalAuthorization) // stops the auth service: last
}

func (m *secMesh) testMutualTLS(t *testing.T) {
	good := m.meshCert(t, "spiffe://cluster.local/ns/default/sa/tester", time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	expired := m.meshCert(t, "spiffe://cluster.local/ns/default/sa/tester", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	wrongSAN := m.meshCert(t, "https://tester.example.com/", time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	foreign := foreignCert(t, "spiffe://cluster.local/ns/default/sa/client-sa")

	t.Run("StrictAcceptsOnlyMeshCertificates", func(t *testing.T) {
		m.writePolicy(t, `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
`)
		m.converge(t,
			check{"client sidecar → server (mTLS)", m.via(m.client, "GET", serverURL+"/strict", nil), answeredByApp},
			check{"the app learns its caller from x-forwarded-client-cert", m.via(m.client, "GET", serverURL+"/strict", nil),
				appSeesClientCert("spiffe://cluster.local/ns/default/sa/server-sa", "spiffe://cluster.local/ns/default/sa/client-sa")},
			check{"plaintext straight to the server sidecar", m.direct(nil, "/strict"), refused},
			check{"mesh-CA certificate straight to the server sidecar", m.direct(&good, "/strict"), answeredByApp},
			check{"certificate from another root", m.direct(&foreign, "/strict"), refusedTLS},
			check{"expired mesh certificate", m.direct(&expired, "/strict"), refusedTLS},
			check{"mesh certificate without a SPIFFE ID", m.direct(&wrongSAN, "/strict"), refusedTLS},
			check{"TLS without a client certificate", m.direct(&tls.Certificate{}, "/strict"), refusedTLS},
		)
		// The server side's standard metrics show the client's identity too.
		m.waitForServerSeries(t, map[string]string{
			"reporter":                   "destination",
			"connection_security_policy": "mutual_tls",
			"source_principal":           "spiffe://cluster.local/ns/default/sa/client-sa",
			"destination_principal":      "spiffe://cluster.local/ns/default/sa/server-sa",
			"source_workload":            "client",
		})
		m.waitForServerSeries(t, map[string]string{
			"reporter":                   "destination",
			"connection_security_policy": "mutual_tls",
			"source_principal":           "spiffe://cluster.local/ns/default/sa/tester",
		})
	})

	t.Run("PermissiveAcceptsBoth", func(t *testing.T) {
		m.writePolicy(t, `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: PERMISSIVE}
`)
		m.converge(t,
			check{"plaintext straight to the server sidecar", m.direct(nil, "/permissive"), answeredByApp},
			check{"a plaintext client cannot forge x-forwarded-client-cert", m.directWithHeader("/permissive",
				http.Header{"X-Forwarded-Client-Cert": {"By=spiffe://x;Hash=00;URI=spiffe://cluster.local/ns/default/sa/admin"}}),
				appSeesNoClientCert},
			check{"client sidecar → server (mTLS)", m.via(m.client, "GET", serverURL+"/permissive", nil), answeredByApp},
			check{"mesh-CA certificate straight to the server sidecar", m.direct(&good, "/permissive"), answeredByApp},
			check{"certificate from another root", m.direct(&foreign, "/permissive"), refusedTLS},
		)
		m.waitForServerSeries(t, map[string]string{"reporter": "destination", "connection_security_policy": "none", "source_principal": "unknown"})
	})

	t.Run("WorkloadDisableUnderMeshStrictLetsPlaintextIn", func(t *testing.T) {
		m.writePolicy(t, `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: server-plaintext, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  mtls: {mode: DISABLE}
`)
		m.converge(t,
			check{"plaintext straight to the server sidecar", m.direct(nil, "/disable"), answeredByApp},
			// Auto-mTLS sees the workload's DISABLE and sends plaintext.
			check{"client sidecar → server", m.via(m.client, "GET", serverURL+"/disable", nil), answeredByApp},
			check{"mesh-CA certificate (TLS) to a plaintext-only port", m.direct(&good, "/disable"), refused},
		)
	})
}

func (m *secMesh) testAuthorizationPolicy(t *testing.T) {
	t.Run("AllowNothing", func(t *testing.T) {
		m.writePolicy(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
`)
		m.converge(t,
			check{"client", m.via(m.client, "GET", serverURL+"/", nil), rbacDenied},
			check{"other namespace", m.via(m.other, "GET", serverURL+"/", nil), rbacDenied},
			check{"plaintext, no identity", m.direct(nil, "/"), rbacDenied},
		)
	})

	t.Run("AllowByPrincipal", func(t *testing.T) {
		m.writePolicy(t, allowPolicy("by-principal", `
  - from: [{source: {principals: ["cluster.local/ns/default/sa/client-sa"]}}]`))
		m.converge(t,
			check{"client-sa allowed", m.via(m.client, "GET", serverURL+"/by-principal", nil), answeredByApp},
			check{"other-sa denied", m.via(m.other, "GET", serverURL+"/by-principal", nil), rbacDenied},
			check{"plaintext (no principal) denied", m.direct(nil, "/by-principal"), rbacDenied},
		)
		// No ALLOW policy matched: the access log says so.
		m.waitForAccessLog(t, "/by-principal", 403, "rbac_access_denied_matched_policy[none]")
	})

	t.Run("AllowByNamespace", func(t *testing.T) {
		m.writePolicy(t, allowPolicy("by-namespace", `
  - from: [{source: {namespaces: ["other"]}}]`))
		m.converge(t,
			check{"namespace other allowed", m.via(m.other, "GET", serverURL+"/", nil), answeredByApp},
			check{"namespace default denied", m.via(m.client, "GET", serverURL+"/", nil), rbacDenied},
		)
	})

	t.Run("AllowByIPBlock", func(t *testing.T) {
		// Local proxies connect from their own 127.0.1.N, as pods from theirs.
		m.writePolicy(t, allowPolicy("by-ip", `
  - from: [{source: {ipBlocks: ["`+clientIP+`/32"]}}]`))
		m.converge(t,
			check{"from the client's address allowed", m.via(m.client, "GET", serverURL+"/", nil), answeredByApp},
			check{"from the other workload's address denied", m.via(m.other, "GET", serverURL+"/", nil), rbacDenied},
		)
	})

	t.Run("AllowByMethodPathNotPath", func(t *testing.T) {
		m.writePolicy(t, allowPolicy("by-operation", `
  - to: [{operation: {methods: ["GET"], paths: ["/public/*"], notPaths: ["/public/secret"]}}]`))
		m.converge(t,
			check{"GET /public/page", m.via(m.client, "GET", serverURL+"/public/page?q=1", nil), answeredByApp},
			check{"POST /public/page", m.via(m.client, "POST", serverURL+"/public/page", nil), rbacDenied},
			check{"GET /public/secret", m.via(m.client, "GET", serverURL+"/public/secret", nil), rbacDenied},
			check{"GET /private", m.via(m.client, "GET", serverURL+"/private", nil), rbacDenied},
		)
	})

	t.Run("AllowByPort", func(t *testing.T) {
		m.writePolicy(t, allowPolicy("by-port", `
  - to: [{operation: {ports: ["8001"]}}]`))
		m.converge(t,
			check{"port 8001 allowed", m.via(m.client, "GET", server2URL+"/", nil), answeredByApp},
			check{"port 8000 denied", m.via(m.client, "GET", serverURL+"/", nil), rbacDenied},
		)
	})

	t.Run("AllowByHeaderCondition", func(t *testing.T) {
		m.writePolicy(t, allowPolicy("by-header", `
  - when: [{key: "request.headers[x-tenant]", values: ["acme", "beta*"]}]`))
		m.converge(t,
			check{"x-tenant: acme", m.via(m.client, "GET", serverURL+"/", http.Header{"X-Tenant": {"acme"}}), answeredByApp},
			check{"x-tenant: beta-2", m.via(m.client, "GET", serverURL+"/", http.Header{"X-Tenant": {"beta-2"}}), answeredByApp},
			check{"x-tenant: evil", m.via(m.client, "GET", serverURL+"/", http.Header{"X-Tenant": {"evil"}}), rbacDenied},
			check{"no x-tenant", m.via(m.client, "GET", serverURL+"/", nil), rbacDenied},
		)
	})

	t.Run("DenyWinsOverAllowAndTheAccessLogSaysWhich", func(t *testing.T) {
		m.writePolicy(t, allowPolicy("allow-client", `
  - from: [{source: {principals: ["cluster.local/ns/default/sa/client-sa"]}}]`)+`---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
`)
		m.converge(t,
			check{"allowed client, /", m.via(m.client, "GET", serverURL+"/", nil), answeredByApp},
			check{"allowed client, /admin/users", m.via(m.client, "GET", serverURL+"/admin/users", nil), rbacDenied},
		)
		m.waitForAccessLog(t, "/admin/users", 403, "rbac_access_denied_matched_policy[ns[default]-policy[deny-admin]-rule[0]]")
	})

	t.Run("AuditDoesNotDeny", func(t *testing.T) {
		m.writePolicy(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-admin, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: AUDIT
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-delete, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {methods: ["DELETE"]}}]
`)
		m.converge(t,
			check{"audited path", m.via(m.client, "GET", serverURL+"/admin/audited", nil), answeredByApp},
			check{"DELETE (the DENY beside it applies)", m.via(m.client, "DELETE", serverURL+"/admin/audited", nil), rbacDenied},
		)
	})
}

func (m *secMesh) testRequestAuthentication(t *testing.T) {
	key := newECKey(t)
	jwks := jwksOf(t, map[string]*ecdsa.PrivateKey{"k1": key})
	now := time.Now()
	claims := func(sub string, mod func(map[string]any)) map[string]any {
		c := map[string]any{"iss": jwtIssuer, "sub": sub, "aud": jwtAudience, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "groups": []string{"admin"}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	alice := signES256(t, key, "k1", claims("alice", nil))
	bob := signES256(t, key, "k1", claims("bob", func(c map[string]any) { c["groups"] = []string{"dev"} }))
	carol := signES256(t, key, "k1", claims("carol", nil))
	algNone := unsignedJWT(t, claims("alice", nil))
	wrongIssuer := signES256(t, key, "k1", claims("alice", func(c map[string]any) { c["iss"] = "https://evil.example" }))
	wrongAudience := signES256(t, key, "k1", claims("alice", func(c map[string]any) { c["aud"] = "someone-else" }))
	expired := signES256(t, key, "k1", claims("alice", func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() }))
	badSignature := signES256(t, newECKey(t), "k1", claims("alice", nil))
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

	requestAuthn := func(keys string) string {
		return `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  jwtRules:
  - issuer: ` + jwtIssuer + `
    audiences: [` + jwtAudience + `]
    ` + keys + `
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders:
    - {header: x-jwt-sub, claim: sub}
---
`
	}
	inline := "jwks: '" + jwks + "'"

	t.Run("InlineJWKSAndRequestPrincipals", func(t *testing.T) {
		m.writePolicy(t, requestAuthn(inline)+allowPolicy("require-alice", `
  - from: [{source: {requestPrincipals: ["`+jwtIssuer+`/alice"]}}]`))
		m.converge(t,
			check{"valid token of alice", m.via(m.client, "GET", serverURL+"/jwt", bearer(alice)), answeredByApp},
			check{"no token: no request principal", m.via(m.client, "GET", serverURL+"/jwt", nil), rbacDenied},
			check{"valid token of bob: not the principal", m.via(m.client, "GET", serverURL+"/jwt", bearer(bob)), rbacDenied},
			check{"alg none", m.via(m.client, "GET", serverURL+"/jwt", bearer(algNone)), status(401, "Jwt")},
			check{"wrong issuer", m.via(m.client, "GET", serverURL+"/jwt", bearer(wrongIssuer)), status(401, "Jwt issuer is not configured")},
			check{"expired", m.via(m.client, "GET", serverURL+"/jwt", bearer(expired)), status(401, "Jwt is expired")},
			check{"bad signature", m.via(m.client, "GET", serverURL+"/jwt", bearer(badSignature)), status(401, "Jwt verification fails")},
			// Envoy answers 403 here (jwt_authn's JwtAudienceNotAllowed).
			check{"wrong audience", m.via(m.client, "GET", serverURL+"/jwt", bearer(wrongAudience)), status(403, "Audiences in Jwt are not allowed")},
		)

		// What the app receives from a verified token: the payload and the
		// claim in headers, and not the token itself.
		r, err := m.via(m.client, "GET", serverURL+"/jwt", http.Header{
			"Authorization": {"Bearer " + alice},
			"X-Jwt-Sub":     {"mallory"}, // forged: replaced by the token's claim
		})()
		if err := answeredByApp(r, err); err != nil {
			t.Fatal(err)
		}
		if got := r.app.Header.Get("X-Jwt-Sub"); got != "alice" {
			t.Errorf("app got x-jwt-sub %q, want alice (from the token)", got)
		}
		payload, err := base64.RawURLEncoding.DecodeString(r.app.Header.Get("X-Jwt-Payload"))
		var p map[string]any
		if err != nil || json.Unmarshal(payload, &p) != nil || p["sub"] != "alice" || p["iss"] != jwtIssuer {
			t.Errorf("app got x-jwt-payload %q (%v), want the token's payload", r.app.Header.Get("X-Jwt-Payload"), err)
		}
		if auth := r.app.Header.Get("Authorization"); auth != "" {
			t.Errorf("app got the token (%q) though forwardOriginalToken is false", auth)
		}
	})

	t.Run("ClaimCondition", func(t *testing.T) {
		m.writePolicy(t, requestAuthn(inline)+allowPolicy("admins", `
  - from: [{source: {requestPrincipals: ["`+jwtIssuer+`/*"]}}]
    when: [{key: "request.auth.claims[groups]", values: ["admin"]}]`))
		m.converge(t,
			check{"alice, groups [admin]", m.via(m.client, "GET", serverURL+"/claims", bearer(alice)), answeredByApp},
			check{"carol, groups [admin]", m.via(m.client, "GET", serverURL+"/claims", bearer(carol)), answeredByApp},
			check{"bob, groups [dev]", m.via(m.client, "GET", serverURL+"/claims", bearer(bob)), rbacDenied},
			check{"no token", m.via(m.client, "GET", serverURL+"/claims", nil), rbacDenied},
		)
	})

	t.Run("RemoteJWKSAndKeyRotation", func(t *testing.T) {
		keys := &jwksServer{keys: map[string]*ecdsa.PrivateKey{"r1": key}}
		uri := keys.start(t)
		m.writePolicy(t, requestAuthn("jwksUri: "+uri)+allowPolicy("any-token", `
  - from: [{source: {requestPrincipals: ["*"]}}]`))
		r1 := signES256(t, key, "r1", claims("alice", nil))
		m.converge(t,
			check{"token signed with the served key", m.via(m.client, "GET", serverURL+"/remote", bearer(r1)), answeredByApp},
			check{"no token", m.via(m.client, "GET", serverURL+"/remote", nil), rbacDenied},
			check{"token signed with another key", m.via(m.client, "GET", serverURL+"/remote", bearer(badSignature)), status(401, "")},
		)
		if keys.fetches.Load() == 0 {
			t.Fatal("the JWKS server was never asked for the keys")
		}
		// The issuer rotates in a new key: tokens signed with it verify
		// within seconds, without a config change.
		newKey := newECKey(t)
		keys.set(map[string]*ecdsa.PrivateKey{"r1": key, "r2": newKey})
		r2 := signES256(t, newKey, "r2", claims("alice", nil))
		m.converge(t,
			check{"token signed with the rotated-in key", m.via(m.client, "GET", serverURL+"/remote", bearer(r2)), answeredByApp},
			check{"token signed with the old key", m.via(m.client, "GET", serverURL+"/remote", bearer(r1)), answeredByApp},
		)
	})
}

func (m *secMesh) testExternalAuthorization(t *testing.T) {
	m.writePolicy(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: user-auth, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: CUSTOM
  provider: {name: user-auth}
  rules:
  - to: [{operation: {paths: ["/orders*"]}}]
`)
	session := func(s string) http.Header {
		// A client-supplied identity must never reach the app.
		return http.Header{"X-Session": {s}, "X-User-Id": {"mallory"}}
	}
	m.converge(t,
		check{"known session", m.via(m.client, "GET", serverURL+"/orders/1", session("alice-session")), answeredByApp},
		check{"unknown session", m.via(m.client, "GET", serverURL+"/orders/1", session("stolen")),
			all(status(401, `{"error":"unknown session"}`), header("X-Auth-Reason", "unknown-session"), header("Content-Type", "application/json"))},
	)

	t.Run("AllowedRequestCarriesTheUserToTheApp", func(t *testing.T) {
		r, err := m.via(m.client, "POST", serverURL+"/orders/2", session("alice-session"))()
		if err := answeredByApp(r, err); err != nil {
			t.Fatal(err)
		}
		if got := r.app.Header.Values("X-User-Id"); len(got) != 1 || got[0] != "alice" {
			t.Errorf("app got x-user-id %q, want just alice (the auth service's answer)", got)
		}
		if got := r.app.Header.Get("X-User-Roles"); got != "admin,buyer" {
			t.Errorf("app got x-user-roles %q, want admin,buyer", got)
		}
		if got := m.auth.lastPath(); got != "/check/orders/2" {
			t.Errorf("the auth service was asked about %q, want /check/orders/2 (pathPrefix + path)", got)
		}
		if got := m.auth.lastMethod(); got != "POST" {
			t.Errorf("the auth service was asked with %s, want the request's method POST", got)
		}
	})

	t.Run("RequestsThePolicyDoesNotSelectSkipTheService", func(t *testing.T) {
		before := m.auth.calls.Load()
		r, err := m.via(m.client, "GET", serverURL+"/catalog", nil)()
		if err := answeredByApp(r, err); err != nil {
			t.Fatal(err)
		}
		if n := m.auth.calls.Load() - before; n != 0 {
			t.Errorf("the auth service was called %d times for a path the policy does not select", n)
		}
	})

	t.Run("AuthServiceDownFailsClosed", func(t *testing.T) {
		m.auth.stop()
		m.converge(t,
			check{"known session, service down", m.via(m.client, "GET", serverURL+"/orders/down", session("alice-session")), status(403, "")},
			check{"unselected path still served", m.via(m.client, "GET", serverURL+"/catalog", nil), answeredByApp},
		)
		m.waitForAccessLogFlag(t, "/orders/down", 403, "UAEX")
	})
}

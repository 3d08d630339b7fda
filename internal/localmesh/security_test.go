package localmesh_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/localmesh"
	"github.com/trellis-mesh/trellis/internal/testenv"
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

// allowPolicy is an ALLOW AuthorizationPolicy on the server with rules.
func allowPolicy(name, rules string) string {
	return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ` + name + `, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:` + rules + "\n"
}

// secMesh is the running mesh and what the test drives it with.
type secMesh struct {
	dir       string // the watched config directory
	caDir     string // the mesh CA's root and key
	accessLog string
	auth      *authService

	client, other *http.Client // through the client's and the other workload's sidecars
}

func startSecurityMesh(t *testing.T) *secMesh {
	t.Helper()
	testenv.LockDemoAddresses(t)
	app := serveApp(t)
	auth := startAuthService(t)
	m := &secMesh{
		dir:       t.TempDir(),
		caDir:     t.TempDir(),
		accessLog: filepath.Join(t.TempDir(), "access.log"),
		auth:      auth,
		client:    viaSidecar(clientIP),
		other:     viaSidecar(otherIP),
	}
	t.Cleanup(m.client.CloseIdleConnections)
	t.Cleanup(m.other.CloseIdleConnections)
	base := strings.NewReplacer("APP", app, "AUTH", auth.port).Replace(securityMeshConfig)
	writeAtomic(t, filepath.Join(m.dir, "mesh.yaml"), strings.Replace(securityMeshYAML, "LOG", m.accessLog, 1))
	writeAtomic(t, filepath.Join(m.dir, "base.yaml"), base)

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan localmesh.Mesh, 1)
	done := make(chan error, 1)
	go func() {
		done <- localmesh.Run(ctx, localmesh.Options{
			ConfigDir:     m.dir,
			XDSAddress:    "127.0.0.1:0",
			CADir:         m.caDir,
			Logger:        slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
			Ready:         func(mesh localmesh.Mesh) { ready <- mesh },
			OnConfigError: func(err error) { t.Errorf("config rejected: %v", err) },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mesh: %v", err)
		}
	})
	select {
	case mesh := <-ready:
		if len(mesh.Proxies) != 3 {
			t.Fatalf("want 3 sidecars, got %+v", mesh.Proxies)
		}
	case err := <-done:
		t.Fatalf("mesh did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("mesh not ready in 60 s")
	}
	return m
}

// writePolicy replaces the subtest's policies, as an editor saving a file.
func (m *secMesh) writePolicy(t *testing.T, yaml string) {
	t.Helper()
	writeAtomic(t, filepath.Join(m.dir, "policy.yaml"), yaml)
}

func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func viaSidecar(ip string) *http.Client {
	proxyURL, _ := url.Parse("http://" + ip + ":15001")
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
}

// reply is what a client saw, and what the app received when it answered.
type reply struct {
	code   int
	body   string
	header http.Header
	app    *appRequest // nil: the app did not answer
}

// appRequest is the request as the app received it (the app echoes it).
type appRequest struct {
	Method string
	Path   string
	Header http.Header
}

type sendFunc func() (reply, error)

// via sends a request through a client's sidecar.
func (m *secMesh) via(c *http.Client, method, target string, h http.Header) sendFunc {
	return func() (reply, error) {
		req, err := http.NewRequest(method, target, nil)
		if err != nil {
			return reply{}, err
		}
		for k, v := range h {
			req.Header[k] = v
		}
		return do(c, req)
	}
}

// direct connects straight to the server sidecar's inbound port 8000, as an
// attacker on the network would: in plaintext when cert is nil, else over
// TLS presenting cert (an empty one: no client certificate).
func (m *secMesh) direct(cert *tls.Certificate, path string) sendFunc {
	return func() (reply, error) {
		tr := &http.Transport{DisableKeepAlives: true}
		scheme := "http"
		if cert != nil {
			scheme = "https"
			tr.TLSClientConfig = &tls.Config{
				// The attacker does not care who the server is; the server
				// must care who the client is.
				InsecureSkipVerify: true,
				NextProtos:         []string{"http/1.1"},
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					return cert, nil
				},
			}
		}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequest(http.MethodGet, scheme+"://"+serverIP+":8000"+path, nil)
		if err != nil {
			return reply{}, err
		}
		return do(&http.Client{Timeout: 10 * time.Second, Transport: tr}, req)
	}
}

// directWithHeader sends a plaintext request with headers straight to the server sidecar.
func (m *secMesh) directWithHeader(path string, h http.Header) sendFunc {
	return func() (reply, error) {
		req, err := http.NewRequest(http.MethodGet, "http://"+serverIP+":8000"+path, nil)
		if err != nil {
			return reply{}, err
		}
		maps.Copy(req.Header, h)
		return do(&http.Client{Timeout: 10 * time.Second}, req)
	}
}

// appSeesClientCert wants the app's x-forwarded-client-cert to be exactly Istio's sidecar
// element: By the server's identity, Hash of the client's certificate, its Subject (empty for
// mesh certificates) and URI.
func appSeesClientCert(by, uri string) func(reply, error) error {
	return func(r reply, err error) error {
		if err := answeredByApp(r, err); err != nil {
			return err
		}
		xfcc := r.app.Header.Get("X-Forwarded-Client-Cert")
		re := regexp.MustCompile(`^By=` + regexp.QuoteMeta(by) + `;Hash=[0-9a-f]{64};Subject="[^"]*";URI=` + regexp.QuoteMeta(uri) + `$`)
		if !re.MatchString(xfcc) {
			return fmt.Errorf("x-forwarded-client-cert %q, want By=%s;Hash=...;Subject=...;URI=%s", xfcc, by, uri)
		}
		return nil
	}
}

func appSeesNoClientCert(r reply, err error) error {
	if err := answeredByApp(r, err); err != nil {
		return err
	}
	if v := r.app.Header.Values("X-Forwarded-Client-Cert"); len(v) > 0 {
		return fmt.Errorf("the app got x-forwarded-client-cert %q from a client without a certificate", v)
	}
	return nil
}

func do(c *http.Client, req *http.Request) (reply, error) {
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	r := reply{code: resp.StatusCode, body: string(body), header: resp.Header}
	if resp.Header.Get("X-Served-By") == "security-app" {
		r.app = &appRequest{}
		if err := json.Unmarshal(body, r.app); err != nil {
			return reply{}, fmt.Errorf("app answer %q: %w", body, err)
		}
	}
	return r, nil
}

// A check is one request of a matrix and what the user must see.
type check struct {
	name string
	send sendFunc
	want func(reply, error) error
}

// converge sends every check until all of them answer as wanted (the config
// just written has reached every proxy involved), failing after a deadline
// with what each check last saw.
func (m *secMesh) converge(t *testing.T, checks ...check) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var failed []string
		for _, c := range checks {
			r, err := c.send()
			if werr := c.want(r, err); werr != nil {
				failed = append(failed, fmt.Sprintf("%s: %v", c.name, werr))
			}
		}
		if len(failed) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s, %d of %d requests are not answered as they should be:\n  %s", len(failed), len(checks), strings.Join(failed, "\n  "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func answeredByApp(r reply, err error) error {
	if err != nil {
		return err
	}
	if r.code != http.StatusOK || r.app == nil {
		return fmt.Errorf("status %d %q, want 200 from the app", r.code, r.body)
	}
	return nil
}

func rbacDenied(r reply, err error) error {
	if err != nil {
		return err
	}
	if r.code != http.StatusForbidden || r.body != "RBAC: access denied" {
		return fmt.Errorf("status %d %q, want 403 %q", r.code, r.body, "RBAC: access denied")
	}
	return nil
}

func status(code int, bodyContains string) func(reply, error) error {
	return func(r reply, err error) error {
		if err != nil {
			return err
		}
		if r.code != code || !strings.Contains(r.body, bodyContains) || r.app != nil {
			return fmt.Errorf("status %d %q, want %d from the proxy with a body containing %q", r.code, r.body, code, bodyContains)
		}
		return nil
	}
}

func header(name, value string) func(reply, error) error {
	return func(r reply, err error) error {
		if err != nil {
			return err
		}
		if got := r.header.Get(name); got != value {
			return fmt.Errorf("response header %s %q, want %q", name, got, value)
		}
		return nil
	}
}

func all(wants ...func(reply, error) error) func(reply, error) error {
	return func(r reply, err error) error {
		for _, w := range wants {
			if e := w(r, err); e != nil {
				return e
			}
		}
		return nil
	}
}

// refused: the server ends the connection without an HTTP answer the client
// can read; promptly, not by letting the client time out.
func refused(r reply, err error) error {
	if err == nil {
		return fmt.Errorf("status %d %q, want the connection refused", r.code, r.body)
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return fmt.Errorf("want the connection refused, the client timed out: %v", err)
	}
	return nil
}

// refusedTLS: the server sidecar ends the handshake with a TLS alert.
func refusedTLS(r reply, err error) error {
	if err == nil {
		return fmt.Errorf("status %d %q, want the TLS handshake refused", r.code, r.body)
	}
	if !strings.Contains(err.Error(), "tls:") {
		return fmt.Errorf("want a TLS alert from the server, got %v", err)
	}
	return nil
}

// waitForServerSeries waits for an istio_requests_total series on the server
// proxy's 15020 with (at least) these labels.
func (m *secMesh) waitForServerSeries(t *testing.T, labels map[string]string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		reqs := scrape(t, serverIP+":15020")["istio_requests_total"]
		for _, s := range reqs.GetMetric() {
			got := map[string]string{}
			for _, l := range s.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			match := true
			for k, v := range labels {
				match = match && got[k] == v
			}
			if match && s.GetCounter().GetValue() > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server reports no istio_requests_total series with %v; it has:\n%s", labels, describe(reqs))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// accessLogEntry is the part of Istio's default JSON access log the tests read.
type accessLogEntry struct {
	Path                string `json:"path"`
	ResponseCode        int    `json:"response_code"`
	ResponseCodeDetails string `json:"response_code_details"`
	ResponseFlags       string `json:"response_flags"`
	LocalAddress        string `json:"downstream_local_address"`
}

// findServerLog waits for the server sidecar's access log entry of a request.
func (m *secMesh) findServerLog(t *testing.T, path string, code int, ok func(accessLogEntry) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(m.accessLog)
		var seen []string
		for line := range strings.Lines(string(data)) {
			var e accessLogEntry
			if json.Unmarshal([]byte(line), &e) != nil || e.Path != path || e.LocalAddress != serverIP+":8000" {
				continue
			}
			if e.ResponseCode == code && ok(e) {
				return
			}
			seen = append(seen, strings.TrimSpace(line))
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fitting server access log entry for %s with %d; entries for it:\n%s", path, code, strings.Join(seen, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (m *secMesh) waitForAccessLog(t *testing.T, path string, code int, details string) {
	t.Helper()
	m.findServerLog(t, path, code, func(e accessLogEntry) bool { return e.ResponseCodeDetails == details })
}

func (m *secMesh) waitForAccessLogFlag(t *testing.T, path string, code int, flag string) {
	t.Helper()
	m.findServerLog(t, path, code, func(e accessLogEntry) bool { return e.ResponseFlags == flag })
}

// serveApp starts the server workload's app: it echoes the request it
// received as JSON, marked so tests can tell its answers from the proxy's.
func serveApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Served-By", "security-app")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(appRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header})
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// authService is the ext_authz HTTP service: the session "alice-session" is
// alice with roles admin and buyer; any other is refused with 401.
type authService struct {
	port  string
	srv   *http.Server
	calls atomic.Int64

	mu           sync.Mutex
	path, method string
}

func startAuthService(t *testing.T) *authService {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &authService{}
	_, a.port, _ = net.SplitHostPort(ln.Addr().String())
	a.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.calls.Add(1)
		a.mu.Lock()
		a.path, a.method = r.URL.Path, r.Method
		a.mu.Unlock()
		if r.Header.Get("X-Session") == "alice-session" {
			w.Header().Set("X-User-Id", "alice")
			w.Header().Set("X-User-Roles", "admin,buyer")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Auth-Reason", "unknown-session")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"unknown session"}`)
	})}
	go a.srv.Serve(ln)
	t.Cleanup(a.stop)
	return a
}

func (a *authService) stop() { a.srv.Close() }

func (a *authService) lastPath() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.path
}

func (a *authService) lastMethod() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.method
}

// jwksServer serves a JWKS that the test can change, as an issuer rotating keys.
type jwksServer struct {
	mu      sync.Mutex
	keys    map[string]*ecdsa.PrivateKey
	fetches atomic.Int64
}

func (s *jwksServer) set(keys map[string]*ecdsa.PrivateKey) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

// start serves the key set and returns its URL.
func (s *jwksServer) start(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		keys := s.keys
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, jwksOf(t, keys))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/jwks.json"
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// jwksOf is the JSON Web Key Set of the keys' public halves, by kid.
func jwksOf(t *testing.T, keys map[string]*ecdsa.PrivateKey) string {
	type jwk struct {
		Kty string `json:"kty"`
		Crv string `json:"crv"`
		Kid string `json:"kid"`
		Alg string `json:"alg"`
		Use string `json:"use"`
		X   string `json:"x"`
		Y   string `json:"y"`
	}
	var set struct {
		Keys []jwk `json:"keys"`
	}
	for kid, k := range keys {
		pub, err := k.PublicKey.Bytes() // 0x04 || X || Y
		if err != nil {
			t.Error(err)
			return ""
		}
		set.Keys = append(set.Keys, jwk{Kty: "EC", Crv: "P-256", Kid: kid, Alg: "ES256", Use: "sig",
			X: base64.RawURLEncoding.EncodeToString(pub[1:33]), Y: base64.RawURLEncoding.EncodeToString(pub[33:])})
	}
	out, _ := json.Marshal(set)
	return string(out)
}

func jwtSegment(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// signES256 makes a compact JWS (RFC 7515) signed with key.
func signES256(t *testing.T, key *ecdsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	signed := jwtSegment(t, map[string]string{"alg": "ES256", "kid": kid, "typ": "JWT"}) + "." + jwtSegment(t, claims)
	digest := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// unsignedJWT is the classic attack: alg none and no signature.
func unsignedJWT(t *testing.T, claims map[string]any) string {
	return jwtSegment(t, map[string]string{"alg": "none", "typ": "JWT"}) + "." + jwtSegment(t, claims) + "."
}

// meshCert is a client certificate with the URI SAN uri, signed by the
// mesh's own CA (its root and key as the control plane keeps them).
func (m *secMesh) meshCert(t *testing.T, uri string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(m.caDir, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(m.caDir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(caCert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leafCert(t, root, caCert.PrivateKey, uri, notBefore, notAfter)
}

// foreignCert is a well-formed workload certificate for uri from a root the
// mesh does not trust, with the same subject as the mesh's root.
func foreignCert(t *testing.T, uri string) tls.Certificate {
	t.Helper()
	key := newECKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leafCert(t, root, key, uri, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
}

func leafCert(t *testing.T, issuer *x509.Certificate, issuerKey any, uri string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	key := newECKey(t)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

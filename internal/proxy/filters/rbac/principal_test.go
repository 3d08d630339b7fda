package rbac_test

import (
	"crypto/tls"
	"net/http"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/tlstest"
)

// Istio's principals and namespaces become authenticated.principal_name matchers on the peer
// certificate's URI SAN (principals: exact with the spiffe:// prefix; namespaces: a regex).
const principalPolicies = `
rules:
  policies:
    ns[foo]-policy[from-sleep]-rule[0]:
      permissions: [{and_rules: {rules: [{or_rules: {rules: [{url_path: {path: {prefix: /sleep}}}]}}]}}]
      principals: [{and_ids: {ids: [{or_ids: {ids: [{authenticated: {principal_name: {exact: "spiffe://cluster.local/ns/default/sa/sleep"}}}]}}]}}]
    ns[foo]-policy[from-ns-prod]-rule[0]:
      permissions: [{and_rules: {rules: [{or_rules: {rules: [{url_path: {path: {prefix: /prod}}}]}}]}}]
      principals: [{and_ids: {ids: [{or_ids: {ids: [{authenticated: {principal_name: {safe_regex: {regex: ".*/ns/prod/.*"}}}}]}}]}}]
    ns[foo]-policy[not-from-sleep]-rule[0]:
      permissions: [{and_rules: {rules: [{or_rules: {rules: [{url_path: {path: {prefix: /others}}}]}}]}}]
      principals: [{and_ids: {ids: [{authenticated: {}}, {not_id: {or_ids: {ids: [{authenticated: {principal_name: {exact: "spiffe://cluster.local/ns/default/sa/sleep"}}}]}}}]}}]
    ns[foo]-policy[dns-peer]-rule[0]:
      permissions: [{url_path: {path: {prefix: /dns}}}]
      principals: [{authenticated: {principal_name: {exact: "legacy.example.com"}}}]`

// The requests go over HTTP/2: the HTTP/1.1 codec does not hand a request its connection's TLS state
// yet (the sds change does).
func TestPrincipalsMatchThePeerCertificateOfAMutualTLSConnection(t *testing.T) {
	serverCA, clientCA := tlstest.NewCA(t, "server-ca"), tlstest.NewCA(t, "client-ca")
	leaf := serverCA.Issue(t, "proxy.example.com")
	sleep := clientCA.Issue(t, "spiffe://cluster.local/ns/default/sa/sleep")
	prod := clientCA.Issue(t, "spiffe://cluster.local/ns/prod/sa/api")
	legacy := clientCA.Issue(t, "legacy.example.com")
	hp := newHTTPProxy(t, "", "", rbacHTTP(principalPolicies), "", `
require_client_certificate: true
common_tls_context:
  alpn_protocols: [h2]
  tls_certificates: [{certificate_chain: {inline_string: {{q .Cert}}}, private_key: {inline_string: {{q .Key}}}}]
  validation_context: {trusted_ca: {inline_string: {{q .CA}}}}
`, map[string]string{"Cert": leaf.CertPEM, "Key": leaf.KeyPEM, "CA": clientCA.PEM})

	tests := []struct {
		name string
		cert tls.Certificate
		reqs []request
	}{
		{"sleep", sleep.TLS, []request{
			{path: "/sleep", status: http.StatusOK},
			{path: "/prod", status: http.StatusForbidden, details: "rbac_access_denied_matched_policy[none]"},
			{path: "/others", status: http.StatusForbidden},
		}},
		{"prod/api", prod.TLS, []request{
			{path: "/sleep", status: http.StatusForbidden},
			{path: "/prod", status: http.StatusOK},
			{path: "/others", status: http.StatusOK},
		}},
		{"a DNS SAN when there is no URI SAN", legacy.TLS, []request{
			{path: "/dns", status: http.StatusOK},
			{path: "/others", status: http.StatusOK},
		}},
	}
	for _, tt := range tests {
		c := mtlsClient(t, serverCA.Pool(), &tt.cert)
		for _, r := range tt.reqs {
			t.Run(tt.name+r.path, func(t *testing.T) { hp.sendWith(t, c, "https", r) })
		}
	}
}

func TestPrincipalsNeverMatchPlaintextRequests(t *testing.T) {
	hp := newHTTPProxy(t, "", "", rbacHTTP(principalPolicies), "", "", nil)
	for _, path := range []string{"/sleep", "/prod", "/others"} {
		hp.send(t, request{path: path, status: http.StatusForbidden})
	}
}

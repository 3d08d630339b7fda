package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/localmesh"
	"github.com/trellis-mesh/trellis/internal/proxyadmin"
)

// A STRICT mesh of three workloads on 127.0.1.81-83: server (sa server-sa), client (sa
// client-sa) and other (sa other-sa). The server denies /admin* to everyone and allows only
// client-sa; it also accepts JWTs of one issuer, and asks an external authorization service
// (which denies everything) about /custom*. Access logs go to ACCESSLOG.
const secMeshConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: default}
spec:
  hosts: [server.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: server}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server-v1, namespace: default}
spec:
  address: 127.0.1.81
  labels: {app: server, version: v1}
  serviceAccount: server-sa
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: server-v1, namespace: default}
spec:
  workloadSelector: {labels: {app: server}}
  ingress:
  - port: {number: 8000, protocol: HTTP, name: http}
    defaultEndpoint: BACKEND
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client-v1, namespace: default}
spec:
  address: 127.0.1.82
  labels: {app: client, version: v1}
  serviceAccount: client-sa
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other-v1, namespace: default}
spec:
  address: 127.0.1.83
  labels: {app: other, version: v1}
  serviceAccount: other-sa
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/client-sa"]}}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: server-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  jwtRules:
  - issuer: https://issuer.example
    jwks: '{"keys":[{"use":"sig","kty":"OKP","kid":"docs","crv":"Ed25519","alg":"EdDSA","x":"zHE6xus02YxYV36gVimlAKjVKQ4uNPU-zqw9DoQlyGc"}]}'
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-authz, namespace: default}
spec:
  hosts: [ext-authz.default.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: AUTHZPORT}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: custom-check, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: CUSTOM
  provider: {name: my-authz}
  rules:
  - to: [{operation: {paths: ["/custom*"]}}]
---
apiVersion: v1
kind: MeshConfig
accessLogFile: ACCESSLOG
extensionProviders:
- name: my-authz
  envoyExtAuthzHttp:
    service: ext-authz.default.svc.cluster.local
    port: 8000
    pathPrefix: /check
`

type secMesh struct {
	debug, caDir, accessLog string
}

// startSecMesh runs the mesh above with a real CA (root kept in a temp dir) and a backend that
// answers "ok".
func startSecMesh(t *testing.T) secMesh {
	t.Helper()
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	t.Cleanup(func() { backend.Close() })
	authz := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "denied by the test's authorization service", http.StatusForbidden)
	})}
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go authz.Serve(aln)
	t.Cleanup(func() { authz.Close() })

	dir, caDir := t.TempDir(), t.TempDir()
	accessLog := filepath.Join(t.TempDir(), "access.log")
	cfg := strings.NewReplacer("BACKEND", ln.Addr().String(), "ACCESSLOG", accessLog,
		"AUTHZPORT", fmt.Sprint(aln.Addr().(*net.TCPAddr).Port)).Replace(secMeshConfig)
	if err := writeMeshFiles(dir, cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan localmesh.Mesh, 1)
	done := make(chan error, 1)
	go func() {
		done <- localmesh.Run(ctx, localmesh.Options{
			ConfigDir:    dir,
			XDSAddress:   "127.0.0.1:0",
			DebugAddress: "127.0.0.1:0",
			CADir:        caDir,
			Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
			Ready:        func(m localmesh.Mesh) { ready <- m },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mesh: %v", err)
		}
	})
	select {
	case m := <-ready:
		return secMesh{debug: m.DebugAddress, caDir: caDir, accessLog: accessLog}
	case err := <-done:
		t.Fatalf("mesh did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("mesh not ready in 60 s")
	}
	return secMesh{}
}

// writeMeshFiles splits the MeshConfig document into mesh.yaml, the rest into config.yaml.
func writeMeshFiles(dir, cfg string) error {
	i := strings.Index(cfg, "apiVersion: v1\nkind: MeshConfig\n")
	mesh := strings.TrimPrefix(cfg[i:], "apiVersion: v1\nkind: MeshConfig\n")
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(strings.TrimSuffix(cfg[:i], "---\n")), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(mesh), 0o644)
}

// pollCLI runs the CLI until its output matches every pattern (the mesh applies config and
// certificates asynchronously).
func pollCLI(t *testing.T, args []string, patterns ...string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := runCLI(context.Background(), args...)
		ok := err == nil
		for _, p := range patterns {
			ok = ok && regexp.MustCompile(p).MatchString(out)
		}
		if ok {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("trellis %v: err %v; output lacks %q:\n%s", args, err, patterns, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// servedCertificate is the leaf a TLS server presents at addr. The handshake itself may fail
// (the server wants a client certificate we do not have); the certificate is seen first.
func servedCertificate(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
		InsecureSkipVerify: true, // we only look at what is presented
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			c, err := x509.ParseCertificate(raw[0])
			leaf = c
			return err
		},
	})
	if err == nil {
		conn.Close()
	}
	if leaf == nil {
		t.Fatalf("%s presented no certificate: %v", addr, err)
	}
	return leaf
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// One mesh, the whole inspection workflow: which certificate a proxy holds (the one it really
// serves, issued by the mesh's CA), which policies guard it, and why a request was denied.
func TestProxyConfigInspectsIdentityAndAuthorizationOfARunningMesh(t *testing.T) {
	m := startSecMesh(t)
	cp := []string{"--control-plane", m.debug}

	t.Run("secret lists the workload certificate the proxy serves and the mesh root", func(t *testing.T) {
		out := pollCLI(t, append([]string{"proxy-config", "secret", "server-v1.default"}, cp...),
			`(?m)^RESOURCE NAME\s+TYPE\s+STATUS\s+VALID CERT\s+SERIAL NUMBER\s+NOT AFTER\s+NOT BEFORE\s+SPIFFE ID\s+EXPIRES IN$`,
			`(?m)^default\s+Cert Chain\s+ACTIVE\s+true\s+[0-9a-f]+\s+\S+\s+\S+\s+spiffe://cluster.local/ns/default/sa/server-sa\s+2[0-4]h`,
			`(?m)^ROOTCA\s+CA\s+ACTIVE\s+true\s+[0-9a-f]+\s+`)
		t.Logf("trellis proxy-config secret server-v1.default:\n%s", out)

		leaf := servedCertificate(t, "127.0.1.81:8000")
		root := readCert(t, filepath.Join(m.caDir, "ca-cert.pem"))
		if !regexp.MustCompile(`(?m)^default\s+Cert Chain\s+ACTIVE\s+true\s+` + leaf.SerialNumber.Text(16) + `\s+` + regexp.QuoteMeta(leaf.NotAfter.UTC().Format(time.RFC3339)) + `\s`).MatchString(out) {
			t.Errorf("the default row is not the certificate served on 127.0.1.81:8000 (serial %x, not after %s)", leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		if !regexp.MustCompile(`(?m)^ROOTCA\s+CA\s+ACTIVE\s+true\s+` + root.SerialNumber.Text(16) + `\s`).MatchString(out) {
			t.Errorf("the ROOTCA row is not the CA's root (serial %x)", root.SerialNumber)
		}

		// -o json, by admin address: the same certificate, in fields.
		js := pollCLI(t, []string{"proxy-config", "secret", "--admin", "127.0.1.81:15000", "-o", "json"}, `"resource_name"`)
		var rows []proxyadmin.Secret
		if err := json.Unmarshal([]byte(js), &rows); err != nil {
			t.Fatalf("-o json: %v\n%s", err, js)
		}
		if len(rows) != 2 || rows[0].Name != "default" || rows[1].Name != "ROOTCA" {
			t.Fatalf("-o json: want default and ROOTCA, got %+v", rows)
		}
		d := rows[0]
		if d.SerialNumber != leaf.SerialNumber.Text(16) || d.SPIFFEID != "spiffe://cluster.local/ns/default/sa/server-sa" ||
			!d.Valid || d.DaysUntilExpiry != 0 || d.Type != "Cert Chain" || !d.NotAfter.Equal(leaf.NotAfter) {
			t.Errorf("-o json default = %+v, want the served certificate (serial %x), valid, 0 days left", d, leaf.SerialNumber)
		}
		if r := rows[1]; r.SerialNumber != root.SerialNumber.Text(16) || r.DaysUntilExpiry < 3000 || r.SPIFFEID != "" {
			t.Errorf("-o json ROOTCA = %+v, want the CA root (serial %x), ten years", r, root.SerialNumber)
		}
		// /certs, Envoy's own view, agrees.
		certs, err := proxyadmin.Client{Addr: "127.0.1.81:15000"}.Certs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got := certs.GetCertificates()[0].GetCertChain()[0].GetSerialNumber(); got != d.SerialNumber {
			t.Errorf("/certs serial %s, proxy-config %s", got, d.SerialNumber)
		}
	})

	t.Run("authz names each policy guarding the inbound listener", func(t *testing.T) {
		out := pollCLI(t, append([]string{"proxy-config", "authz", "server-v1.default"}, cp...),
			`Listener 127.0.1.81_8000 \(inbound\), filter chains \S+ \(mTLS\):`,
			`(?m)^  jwt_authn\s+AUTHENTICATE\s+\S+\s+issuer https://issuer.example, jwks inline$`,
			`(?m)^  rbac\s+SHADOW DENY\s+istio-ext-authz-ns\[default\]-policy\[custom-check\]-rule\[0\]\s+selects the requests ext_authz checks \(CUSTOM\)$`,
			`(?m)^  ext_authz\s+CUSTOM\s+outbound\|8000\|\|ext-authz.default.svc.cluster.local\s+http http://ext-authz.default.svc.cluster.local/check, fail closed, only for requests with metadata envoy.filters.http.rbac istio_ext_authz_shadow_effective_policy_id prefix istio-ext-authz$`,
			`(?m)^  rbac\s+DENY\s+ns\[default\]-policy\[deny-admin\]-rule\[0\]\s*$`,
			`(?m)^  rbac\s+ALLOW\s+ns\[default\]-policy\[allow-client\]-rule\[0\]\s*$`)
		t.Logf("trellis proxy-config authz server-v1.default:\n%s", out)
		if strings.Contains(out, "(plaintext)") {
			t.Errorf("STRICT: the server has a plaintext chain:\n%s", out)
		}
		// In the order requests meet them: JWT, CUSTOM, DENY, ALLOW.
		j, c, d, a := strings.Index(out, "jwt_authn"), strings.Index(out, "ext_authz"), strings.Index(out, "deny-admin"), strings.Index(out, "allow-client")
		if j >= c || c >= d || d >= a {
			t.Errorf("filters out of order (jwt %d, ext_authz %d, deny %d, allow %d):\n%s", j, c, d, a, out)
		}
		// A sidecar that serves nothing: no inbound listener, no authorization.
		other := pollCLI(t, append([]string{"proxy-config", "authz", "client-v1"}, cp...), `No inbound or gateway listener`)
		if strings.Contains(other, "  rbac ") {
			t.Errorf("client-v1 has RBAC filters:\n%s", other)
		}

		js := pollCLI(t, []string{"proxy-config", "authz", "--admin", "127.0.1.81:15000", "-o", "json"}, `"listener"`)
		var ls []proxyadmin.ListenerAuthz
		if err := json.Unmarshal([]byte(js), &ls); err != nil {
			t.Fatalf("-o json: %v", err)
		}
		var actions []string
		for _, l := range ls {
			if l.Listener != "127.0.1.81_8000" {
				continue
			}
			for _, f := range l.Chains[0].Filters {
				actions = append(actions, f.Kind+" "+f.Action+" "+strings.Join(f.Policies, ","))
			}
		}
		want := []string{"jwt_authn AUTHENTICATE ", "rbac SHADOW DENY istio-ext-authz-ns[default]-policy[custom-check]-rule[0]", "ext_authz CUSTOM ", "rbac DENY ns[default]-policy[deny-admin]-rule[0]", "rbac ALLOW ns[default]-policy[allow-client]-rule[0]"}
		if strings.Join(actions, "|") != strings.Join(want, "|") {
			t.Errorf("-o json filters of 127.0.1.81_8000:\n got %q\nwant %q", actions, want)
		}
	})

	t.Run("a denied request's access log names the policy that denied it", func(t *testing.T) {
		get := func(proxy, path string) (int, string) {
			t.Helper()
			pu, _ := url.Parse("http://" + proxy + ":15001")
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
			defer c.CloseIdleConnections()
			resp, err := c.Get("http://server:8000" + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, strings.TrimSpace(string(b))
		}
		if code, body := get("127.0.1.82", "/ok"); code != 200 {
			t.Fatalf("client-sa GET /ok: %d %s, want 200", code, body)
		}
		if code, body := get("127.0.1.82", "/admin/users"); code != 403 || body != "RBAC: access denied" {
			t.Errorf("client-sa GET /admin/users: %d %q, want 403 RBAC: access denied", code, body)
		}
		if code, body := get("127.0.1.83", "/ok"); code != 403 || body != "RBAC: access denied" {
			t.Errorf("other-sa GET /ok: %d %q, want 403 RBAC: access denied", code, body)
		}
		if code, body := get("127.0.1.82", "/custom"); code != 403 || body != "denied by the test's authorization service" {
			t.Errorf("client-sa GET /custom: %d %q, want the authorization service's 403", code, body)
		}
		// STRICT: plaintext straight to the server's port never reaches the app.
		if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://127.0.1.81:8000/ok"); err == nil {
			resp.Body.Close()
			t.Errorf("plaintext GET to the STRICT server: %s, want the connection refused", resp.Status)
		}

		want := []string{
			`"GET /admin/users HTTP/1.1" 403 - rbac_access_denied_matched_policy[ns[default]-policy[deny-admin]-rule[0]] `,
			`"GET /ok HTTP/1.1" 403 - rbac_access_denied_matched_policy[none] `,
			`"GET /custom HTTP/1.1" 403 UAEX ext_authz_denied `,
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, err := os.ReadFile(m.accessLog)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			missing := ""
			for _, w := range want {
				if !strings.Contains(string(b), w) {
					missing = w
				}
			}
			if missing == "" {
				t.Logf("access log:\n%s", b)
				// The client side names the server sidecar it reached by its address, as
				// Envoy's %UPSTREAM_HOST% does (not by a connection-pool key).
				if !strings.Contains(string(b), `"127.0.1.81:8000"`) || strings.Contains(string(b), `"tsm`) {
					t.Errorf("the access log's upstream hosts are not the server's address 127.0.1.81:8000")
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("access log lacks %q:\n%s", missing, b)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("mistakes are reported", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{append([]string{"proxy-config", "secret", "nosuch"}, cp...), `no connected proxy named "nosuch"`},
			{[]string{"proxy-config", "secret"}, "name a proxy"},
			{[]string{"proxy-config", "authz", "x", "--admin", "127.0.1.81:15000"}, "not both"},
			{[]string{"proxy-config", "secret", "--admin", "127.0.1.81:15000", "-o", "yaml"}, `--output "yaml"`},
			{[]string{"proxy-config", "secret", "--admin", "127.0.0.1:1", "--timeout", "2s"}, "cannot reach the proxy's admin API at 127.0.0.1:1"},
		} {
			_, err := runCLI(context.Background(), tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("trellis %v: error %v, want %q", tc.args, err, tc.want)
			}
		}
	})
}

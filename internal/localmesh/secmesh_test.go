package localmesh_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
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
	"github.com/trellis-mesh/trellis/internal/testenv"
)

// The security mesh the end-to-end matrix runs on, and how its checks send
// requests and judge replies.

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

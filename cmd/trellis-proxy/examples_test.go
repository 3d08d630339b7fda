package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestEnvoyBootstrapExamplesRunUnderTheBinary runs each feature example of examples/envoy-bootstrap
// (the ones docs/proxy-*.md walk through) in the real binary, only its ports changed (and, for
// tls.yaml, its certificate directory), and checks that it does what the docs show.
func TestEnvoyBootstrapExamplesRunUnderTheBinary(t *testing.T) {
	bin := buildBinary(t)
	for _, ex := range []struct {
		file  string
		check func(t *testing.T, e *runningExample)
	}{
		{"traffic.yaml", checkTrafficExample},
		{"upstreams.yaml", checkUpstreamsExample},
		{"protocols.yaml", checkProtocolsExample},
		{"tls.yaml", checkTLSExample},
		{"observability.yaml", checkObservabilityExample},
	} {
		t.Run(strings.TrimSuffix(ex.file, ".yaml"), func(t *testing.T) {
			e := startExample(t, bin, ex.file)
			ex.check(t, e)
			e.proc.stopWithSIGTERM(t)
		})
	}
}

// runningExample is an example bootstrap running in the binary.
type runningExample struct {
	proc   *proxyProcess
	stdout *lockedBuffer
	ports  map[int]int // the example's port -> the port it runs on
	certs  string      // tls.yaml's certificate directory
	admin  string      // admin URL
}

// url is http://127.0.0.1:<where the example's port runs><path>.
func (e *runningExample) url(t *testing.T, examplePort int, path string) string {
	t.Helper()
	p, ok := e.ports[examplePort]
	if !ok {
		t.Fatalf("the example has no port %d", examplePort)
	}
	return fmt.Sprintf("http://127.0.0.1:%d%s", p, path)
}

var portValue = regexp.MustCompile(`port_value: (\d+)\}`)

// startExample writes the example with every port_value replaced by a free port (the example's
// admin must be 9901) and the TLS certificate directory by a fresh one, runs it, and waits for /ready.
func startExample(t *testing.T, bin, file string) *runningExample {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("../../examples/envoy-bootstrap", file))
	if err != nil {
		t.Fatal(err)
	}
	e := &runningExample{stdout: &lockedBuffer{}, ports: map[int]int{}}
	used := map[int]bool{}
	cfg := portValue.ReplaceAllStringFunc(string(src), func(m string) string {
		from, _ := strconv.Atoi(portValue.FindStringSubmatch(m)[1])
		to, ok := e.ports[from]
		if !ok {
			for to = freePort(t); used[to]; to = freePort(t) {
			}
			e.ports[from], used[to] = to, true
		}
		return fmt.Sprintf("port_value: %d}", to)
	})
	if _, ok := e.ports[9901]; !ok {
		t.Fatalf("%s: no admin on port 9901", file)
	}
	if strings.Contains(cfg, exampleCertDir) {
		e.certs = writeLocalhostCert(t)
		cfg = strings.ReplaceAll(cfg, exampleCertDir, e.certs)
	}
	path := filepath.Join(t.TempDir(), file)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// startBinary, with stdout kept too (access logs).
	p := &proxyProcess{cmd: exec.Command(bin, "--config", path, "--drain-duration", "1s"), logs: &bytes.Buffer{}}
	p.cmd.Stdout, p.cmd.Stderr = e.stdout, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	e.proc = p
	e.admin = e.url(t, 9901, "")
	waitReady(t, e.admin)
	return e
}

// lockedBuffer is a bytes.Buffer the process writes while the test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// eventually polls cond for up to 10 s: for what the proxy does in the background (mirrors, health
// checks, log flushes).
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened; last saw:\n%s", what, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func newRequest(t *testing.T, method, url string, headers ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return req
}

func expect(t *testing.T, what string, code int, body string, wantCode int, wantBody string) {
	t.Helper()
	if code != wantCode || body != wantBody {
		t.Errorf("%s: %d %q, want %d %q", what, code, body, wantCode, wantBody)
	}
}

func checkTrafficExample(t *testing.T, e *runningExample) {
	code, body := get(t, e.url(t, 10000, "/healthz"))
	expect(t, "direct response", code, body, 200, "ok\n")

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, _ := do(t, noFollow, newRequest(t, "GET", e.url(t, 10000, "/old/items")))
	if want := e.url(t, 10000, "/api/items"); resp.StatusCode != 301 || resp.Header.Get("Location") != want {
		t.Errorf("redirect: %d Location %q, want 301 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	resp, body = do(t, nil, newRequest(t, "GET", e.url(t, 10000, "/api/items")))
	expect(t, "rewrite and request header", resp.StatusCode, body, 200, "backend: /v2/items, x-example: added\n")
	if got := resp.Header.Get("X-Served-By"); got != "trellis-proxy" {
		t.Errorf("response header x-served-by = %q", got)
	}
	eventually(t, "the mirror receives a copy", func() (bool, string) {
		_, stats := get(t, e.admin+"/stats?filter=^http%5C.shadow%5C.downstream_rq_total$")
		return strings.Contains(stats, "http.shadow.downstream_rq_total: 1\n"), stats
	})

	for range 4 {
		code, body = get(t, e.url(t, 10000, "/flaky"))
		expect(t, "retried request", code, body, 200, "backend: ok\n")
	}
	if _, stats := get(t, e.admin+"/stats?filter=^cluster%5C.flaky%5C.upstream_rq_retry_success$"); stats == "cluster.flaky.upstream_rq_retry_success: 0\n" {
		t.Errorf("no retry succeeded: %s", stats)
	}

	code, body = get(t, e.url(t, 10000, "/fault"))
	expect(t, "fault abort", code, body, 418, "fault filter abort")

	for i, want := range []int{200, 200, 429} {
		code, body = get(t, e.url(t, 10000, "/limited"))
		if code != want {
			t.Errorf("rate limited request %d: %d %q, want %d", i+1, code, body, want)
		}
	}

	resp, _ = do(t, nil, newRequest(t, "OPTIONS", e.url(t, 10000, "/api/items"),
		"Origin", "https://app.example.com", "Access-Control-Request-Method", "POST"))
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		resp.Header.Get("Access-Control-Allow-Methods") != "GET, POST" {
		t.Errorf("CORS preflight: %d %v", resp.StatusCode, resp.Header)
	}
}

func checkUpstreamsExample(t *testing.T, e *runningExample) {
	var seq []string
	for range 4 {
		_, body := get(t, e.url(t, 10000, "/rr"))
		seq = append(seq, strings.TrimSpace(body))
	}
	if s := strings.Join(seq, ""); s != "abab" && s != "baba" {
		t.Errorf("round robin answered %q, want a and b in turn", s)
	}

	for _, user := range []string{"alice", "bob", "carol", "dave"} {
		_, first := do(t, nil, newRequest(t, "GET", e.url(t, 10000, "/sticky"), "x-user", user))
		for range 3 {
			if _, again := do(t, nil, newRequest(t, "GET", e.url(t, 10000, "/sticky"), "x-user", user)); again != first {
				t.Errorf("ring hash sent x-user %s to %q, then %q", user, first, again)
			}
		}
	}

	broken := fmt.Sprintf("127.0.0.1:%d", e.ports[8094])
	eventually(t, "the failing health check marks the priority 0 host", func() (bool, string) {
		_, clusters := get(t, e.admin+"/clusters")
		return strings.Contains(clusters, "failover::"+broken+"::health_flags::/failed_active_hc\n"), clusters
	})
	for range 3 {
		code, body := get(t, e.url(t, 10000, "/failover"))
		expect(t, "failover to priority 1", code, body, 200, "b\n")
	}

	for range 6 {
		get(t, e.url(t, 10000, "/ejecting"))
	}
	_, clusters := get(t, e.admin+"/clusters")
	if !strings.Contains(clusters, "ejecting::"+broken+"::health_flags::/failed_outlier_check\n") {
		t.Errorf("the broken host is not ejected:\n%s", clusters)
	}
	for range 3 {
		code, body := get(t, e.url(t, 10000, "/ejecting"))
		expect(t, "after the ejection", code, body, 200, "a\n")
	}
}

// h2c is a client speaking cleartext HTTP/2 with prior knowledge (curl --http2-prior-knowledge).
func h2c() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

func checkProtocolsExample(t *testing.T, e *runningExample) {
	const want = "backend: reached over HTTP/2\n"
	code, body := get(t, e.url(t, 10000, "/"))
	expect(t, "HTTP/1.1 in, HTTP/2 out", code, body, 200, want)

	client := h2c()
	defer client.CloseIdleConnections()
	resp, body := do(t, client, newRequest(t, "GET", e.url(t, 10000, "/")))
	expect(t, "HTTP/2 in, HTTP/2 out", resp.StatusCode, body, 200, want)
	if resp.ProtoMajor != 2 {
		t.Errorf("downstream protocol %s, want HTTP/2", resp.Proto)
	}

	resp, _ = do(t, client, newRequest(t, "POST", e.url(t, 10000, "/helloworld.Greeter/SayHello"), "Content-Type", "application/grpc"))
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "14" || resp.Header.Get("Grpc-Message") != "cluster not found" {
		t.Errorf("gRPC local reply: %d %v, want 200, grpc-status 14", resp.StatusCode, resp.Header)
	}

	resp, body = do(t, client, newRequest(t, "GET", e.url(t, 10001, "/")))
	expect(t, "through the TCP proxy", resp.StatusCode, body, 200, want)

	// upgrade_configs enables websocket only: other upgrades are refused.
	resp, _ = do(t, nil, newRequest(t, "GET", e.url(t, 10000, "/"), "Connection", "Upgrade", "Upgrade", "foo"))
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("Upgrade: foo answered %d, want 403", resp.StatusCode)
	}
}

// exampleCertDir is where tls.yaml's docs tell the reader to put a certificate for localhost.
const exampleCertDir = "/tmp/trellis-example-tls"

// writeLocalhostCert writes a fresh self-signed certificate for localhost as cert.pem and key.pem.
func writeLocalhostCert(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, block := range map[string]*pem.Block{
		"cert.pem": {Type: "CERTIFICATE", Bytes: der},
		"key.pem":  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func checkTLSExample(t *testing.T, e *runningExample) {
	const want = "hello over TLS\n"
	caPEM, err := os.ReadFile(filepath.Join(e.certs, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	https := func(serverName string) *http.Client {
		return &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: serverName},
			ForceAttemptHTTP2: true,
		}}
	}
	secure := func(url string) string { return strings.Replace(url, "http://", "https://", 1) }

	client := https("localhost")
	defer client.CloseIdleConnections()
	resp, body := do(t, client, newRequest(t, "GET", secure(e.url(t, 10443, "/"))))
	expect(t, "TLS termination", resp.StatusCode, body, 200, want)
	if resp.ProtoMajor != 2 {
		t.Errorf("TLS termination negotiated %s, want HTTP/2 by ALPN", resp.Proto)
	}

	code, body := get(t, e.url(t, 10000, "/"))
	expect(t, "TLS origination", code, body, 200, want)

	passthrough := https("localhost")
	defer passthrough.CloseIdleConnections()
	resp, body = do(t, passthrough, newRequest(t, "GET", secure(e.url(t, 10444, "/"))))
	expect(t, "SNI passthrough", resp.StatusCode, body, 200, want)

	other := https("other.example")
	defer other.CloseIdleConnections()
	if resp, err := other.Get(secure(e.url(t, 10444, "/"))); err == nil {
		resp.Body.Close()
		t.Errorf("SNI other.example matched no chain, yet got %s", resp.Status)
	}
}

func checkObservabilityExample(t *testing.T, e *runningExample) {
	for path, want := range map[string]int{"/app": 200, "/empty": 503, "/nope": 404} {
		if code, body := get(t, e.url(t, 10000, path)); code != want {
			t.Errorf("GET %s: %d %q, want %d", path, code, body, want)
		}
	}
	eventually(t, "access log lines with response flags", func() (bool, string) {
		logs := e.stdout.String()
		return strings.Contains(logs, `"GET /app HTTP/1.1" 200 - via_upstream `) &&
			strings.Contains(logs, `"GET /empty HTTP/1.1" 503 UH no_healthy_upstream `) &&
			strings.Contains(logs, `"GET /nope HTTP/1.1" 404 NR route_not_found `), logs
	})
	_, prom := get(t, e.admin+"/stats/prometheus")
	for _, want := range []string{
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} 1`,
		`envoy_cluster_upstream_cx_none_healthy{envoy_cluster_name="empty"} 1`,
		`envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="front",envoy_response_code_class="4"} 1`,
	} {
		if !strings.Contains(prom, want+"\n") {
			t.Errorf("/stats/prometheus lacks %s", want)
		}
	}
}

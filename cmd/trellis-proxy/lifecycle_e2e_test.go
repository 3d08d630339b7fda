package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/controlplane"
)

// The lifecycle end to end: a real control plane (file mode), trellis-proxy processes in local mode
// (INTERCEPTION_MODE NONE), one loopback address 127.0.1.2xx per workload as `trellis up` gives
// them, and real apps. Each test has its own addresses, so they run in parallel.

// meshApp is a workload's app: /slow answers after a while, /who names the app, /callout calls
// service "slow" through the app's own proxy (its outbound listener, :15001) and relays the answer.
type meshApp struct {
	name     string
	port     int
	proxyIP  string
	hits     atomic.Int64 // /who requests served
	entered  chan struct{}
	aborted  chan struct{} // a /slow request whose connection went before its answer
	slowTime time.Duration
}

func startMeshApp(t *testing.T, name, proxyIP string, slow time.Duration) *meshApp {
	t.Helper()
	a := &meshApp{name: name, proxyIP: proxyIP, entered: make(chan struct{}, 4), aborted: make(chan struct{}, 4), slowTime: slow}
	viaProxy := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:             http.ProxyURL(&url.URL{Scheme: "http", Host: proxyIP + ":15001"}),
		DisableKeepAlives: true, // the app's outbound connections end with each call
	}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			a.entered <- struct{}{}
			select {
			case <-time.After(a.slowTime):
			case <-r.Context().Done():
				a.aborted <- struct{}{}
				return
			}
			_, _ = io.WriteString(w, "slow done by "+a.name)
		case "/who":
			a.hits.Add(1)
			_, _ = io.WriteString(w, a.name)
		case "/callout":
			resp, err := viaProxy.Get("http://slow:8000/who")
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(b)
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.port = ln.Addr().(*net.TCPAddr).Port
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a
}

// workload is one WorkloadEntry of service "slow" (app=slow) or a client (app=client).
type workload struct {
	name, ip, app string
	appPort       int // the Sidecar's defaultEndpoint; 0 for a client
}

// meshConfig is the Istio YAML: service slow:8000 selecting app=slow, and each workload with a
// Sidecar sending its inbound port 8000 to its app.
func meshConfig(ws []workload, extra ...string) string {
	var b strings.Builder
	for _, e := range extra {
		b.WriteString(e + "---\n")
	}
	b.WriteString(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: slow, namespace: default}
spec:
  hosts: [slow.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8000, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: slow}}
`)
	for _, w := range ws {
		fmt.Fprintf(&b, `---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %[1]s, namespace: default}
spec:
  address: %[2]s
  labels: {app: %[3]s, instance: %[1]s}
`, w.name, w.ip, w.app)
		if w.appPort != 0 {
			fmt.Fprintf(&b, `---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: %[1]s, namespace: default}
spec:
  workloadSelector: {labels: {instance: %[1]s}}
  ingress:
  - port: {number: 8000, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:%[2]d
`, w.name, w.appPort)
		}
	}
	return b.String()
}

// startControlPlane runs the control plane in file mode on config; it returns the xDS address.
func startControlPlane(t *testing.T, config string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "workloads.yaml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// Plaintext between proxies: these proxies run no identity agent (mTLS is not what is tested).
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte("enableAutoMtls: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- controlplane.Run(ctx, controlplane.Options{
			ConfigDir: dir, XDSAddress: "127.0.0.1:0",
			Logger: slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
			Ready:  func(r controlplane.Ready) { ready <- r.XDSAddr.String() },
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
	})
	select {
	case addr := <-ready:
		return addr
	case err := <-done:
		t.Fatalf("control plane did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("control plane not ready in 30 s")
	}
	return ""
}

// meshProxy is a trellis-proxy process whose logs the test may read while it runs.
type meshProxy struct {
	*proxyProcess
	logs *lockedBuffer
}

// startMeshProxy runs trellis-proxy for w as `trellis up` would: its ports on w.ip.
func startMeshProxy(t *testing.T, xds string, w workload, args ...string) *meshProxy {
	t.Helper()
	bin := buildBinary(t)
	all := append([]string{
		"--xds-address", xds,
		"--node-id", fmt.Sprintf("sidecar~%s~%s.default~default.svc.cluster.local", w.ip, w.name),
		"--metadata", "INTERCEPTION_MODE=NONE", "--metadata", "NAME=" + w.name, "--metadata", "NAMESPACE=default",
		"--label", "app=" + w.app, "--label", "instance=" + w.name,
		"--admin-address", w.ip + ":15000", "--status-address", w.ip + ":15020", "--health-address", w.ip + ":15021",
	}, args...)
	p := &meshProxy{proxyProcess: &proxyProcess{cmd: exec.Command(bin, all...)}, logs: &lockedBuffer{}}
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	return p
}

// runWait runs `trellis-proxy wait` against ip's health port and returns its exit error and output.
func runWait(t *testing.T, ip string, timeout time.Duration) (string, error) {
	t.Helper()
	cmd := exec.Command(buildBinary(t), "wait", "--url", "http://"+ip+":15021/healthz/ready",
		"--timeout", timeout.String(), "--period", "100ms")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// viaProxy is an app's HTTP client whose outbound traffic goes through the proxy on ip.
func viaProxy(ip string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: ip + ":15001"}),
	}}
}

func call(c *http.Client, u string) (int, string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// rollout is a client and two endpoints of service "slow" (a and b), all ready and known to the
// client's proxy.
type rollout struct {
	client       *http.Client
	apps         map[string]*meshApp
	proxies      map[string]*meshProxy
	clientIP     string
	endpointsIPs map[string]string
}

// noRetries turns the client proxies' retries off for service slow, so a cut request shows.
const noRetries = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: slow, namespace: default}
spec:
  hosts: [slow.default.svc.cluster.local]
  http: [{route: [{destination: {host: slow.default.svc.cluster.local}}], retries: {attempts: 0}}]
`

func startRollout(t *testing.T, base int, drain time.Duration, extra ...string) *rollout {
	t.Helper()
	ipC, ipA, ipB := fmt.Sprintf("127.0.1.%d", base), fmt.Sprintf("127.0.1.%d", base+1), fmt.Sprintf("127.0.1.%d", base+2)
	r := &rollout{
		clientIP: ipC, client: viaProxy(ipC),
		apps:         map[string]*meshApp{"a": startMeshApp(t, "a", ipA, 10*time.Second), "b": startMeshApp(t, "b", ipB, 10*time.Second)},
		proxies:      map[string]*meshProxy{},
		endpointsIPs: map[string]string{"a": ipA, "b": ipB},
	}
	t.Cleanup(r.client.CloseIdleConnections)
	ws := []workload{{name: "client", ip: ipC, app: "client"},
		{name: "a", ip: ipA, app: "slow", appPort: r.apps["a"].port}, {name: "b", ip: ipB, app: "slow", appPort: r.apps["b"].port}}
	xds := startControlPlane(t, meshConfig(ws, extra...))
	for _, w := range ws {
		r.proxies[w.name] = startMeshProxy(t, xds, w, "--termination-drain-duration", drain.String())
	}
	for _, w := range ws {
		if out, err := runWait(t, w.ip, 30*time.Second); err != nil {
			t.Fatalf("proxy %s not ready: %v\n%s\n%s", w.name, err, out, r.proxies[w.name].logs)
		}
	}
	// Both endpoints answer through the client's proxy.
	seen := map[string]bool{}
	eventually(t, "both endpoints reachable through the client's proxy", func() (bool, string) {
		code, body, err := call(r.client, "http://slow:8000/who")
		if code == 200 {
			seen[body] = true
		}
		return seen["a"] && seen["b"], fmt.Sprint(code, body, err, seen)
	})
	return r
}

// startSlowRequest sends a 10 s request through the client's proxy and returns which endpoint took
// it and a channel with its outcome.
func (r *rollout) startSlowRequest(t *testing.T) (string, <-chan string) {
	t.Helper()
	res := make(chan string, 1)
	go func() {
		code, body, err := call(r.client, "http://slow:8000/slow")
		res <- fmt.Sprint(code, " ", body, " ", err)
	}()
	select {
	case <-r.apps["a"].entered:
		return "a", res
	case <-r.apps["b"].entered:
		return "b", res
	case <-time.After(20 * time.Second):
		t.Fatal("the slow request reached no app")
	}
	return "", nil
}

// TestRolloutDrainLetsInFlightRequestFinishAndSendsNewOnesElsewhere is the classic rollout failure
// fixed: a 10 s request in flight through client proxy → server proxy → app while the server's
// proxy gets SIGTERM (terminationDrainDuration 15 s) completes with 200; meanwhile new requests
// land on the other endpoint only, and the terminating workload's app still calls out through its
// proxy. The proxy then exits 0.
func TestRolloutDrainLetsInFlightRequestFinishAndSendsNewOnesElsewhere(t *testing.T) {
	t.Parallel()
	r := startRollout(t, 210, 15*time.Second)
	victim, res := r.startSlowRequest(t)
	other := map[string]string{"a": "b", "b": "a"}[victim]
	start := time.Now()
	if err := r.proxies[victim].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Not ready from now on: Kubernetes takes the endpoint out of the service.
	eventually(t, "terminating proxy reports not ready on 15021", func() (bool, string) {
		resp, err := http.Get("http://" + r.endpointsIPs[victim] + ":15021/healthz/ready")
		if err != nil {
			return false, err.Error()
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 503 && string(b) == "DRAINING\n", fmt.Sprint(resp.StatusCode, string(b))
	})
	// Nothing removed the endpoint from EDS (no kubelet here): its refused connections alone send
	// new requests to the other endpoint.
	before := r.apps[victim].hits.Load()
	for i := range 10 {
		code, body, err := call(r.client, "http://slow:8000/who")
		if code != 200 || body != other {
			t.Fatalf("request %d during the drain: %d %q %v, want 200 from %s", i, code, body, err, other)
		}
	}
	if n := r.apps[victim].hits.Load() - before; n != 0 {
		t.Errorf("the terminating endpoint got %d new requests", n)
	}
	// The terminating workload's app may still call out while it finishes.
	code, body, err := call(&http.Client{Timeout: 20 * time.Second},
		fmt.Sprintf("http://127.0.0.1:%d/callout", r.apps[victim].port))
	if code != 200 || body != other {
		t.Fatalf("outbound call from the terminating workload: %d %q %v", code, body, err)
	}

	if got := <-res; got != "200 slow done by "+victim+" <nil>" {
		t.Fatalf("in-flight request across SIGTERM: %s\n%s", got, r.proxies[victim].logs)
	}
	if err := r.proxies[victim].wait(t, 25*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, r.proxies[victim].logs)
	}
	t.Logf("terminating proxy exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}

// TestRolloutDrainShorterThanRequestCutsIt is the comparison, the hard kill: with
// terminationDrainDuration 5 s the same 10 s request is cut when the drain ends: the app sees its
// request aborted and the client (its proxy not retrying, as for a non-idempotent call) gets a
// 503. The proxy still exits 0.
func TestRolloutDrainShorterThanRequestCutsIt(t *testing.T) {
	t.Parallel()
	r := startRollout(t, 215, 5*time.Second, noRetries)
	victim, res := r.startSlowRequest(t)
	if err := r.proxies[victim].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.apps[victim].aborted:
	case <-time.After(20 * time.Second):
		t.Fatal("the app's request was not cut at the end of the drain")
	}
	got := <-res
	if !strings.HasPrefix(got, "503 upstream connect error or disconnect/reset before headers") {
		t.Fatalf("request outliving the drain: %s, want the client proxy's 503 for the reset", got)
	}
	t.Logf("cut request: %s", got)
	if err := r.proxies[victim].wait(t, 25*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, r.proxies[victim].logs)
	}
	if !strings.Contains(r.proxies[victim].logs.String(), "termination drain deadline") {
		t.Errorf("logs lack the drain deadline:\n%s", r.proxies[victim].logs)
	}
}

// TestAppCallingOutAtStartSucceedsAfterWait: `trellis-proxy wait` (the postStart hook) returns only
// once the proxy is ready, and the app's very first outbound request then succeeds; with no
// control plane to reach, `wait` gives up with a non-zero exit.
func TestAppCallingOutAtStartSucceedsAfterWait(t *testing.T) {
	t.Parallel()
	const ipApp, ipSrv, ipLost = "127.0.1.221", "127.0.1.222", "127.0.1.223"
	srvApp := startMeshApp(t, "srv", ipSrv, 0)
	ws := []workload{{name: "starter", ip: ipApp, app: "client"}, {name: "srv", ip: ipSrv, app: "slow", appPort: srvApp.port}}
	xds := startControlPlane(t, meshConfig(ws))
	startMeshProxy(t, xds, ws[1])
	if out, err := runWait(t, ipSrv, 30*time.Second); err != nil {
		t.Fatalf("server proxy: %v\n%s", err, out)
	}

	starter := startMeshProxy(t, xds, ws[0])
	out, err := runWait(t, ipApp, 30*time.Second)
	if err != nil {
		t.Fatalf("wait: %v\n%s\n%s", err, out, starter.logs)
	}
	c := viaProxy(ipApp)
	defer c.CloseIdleConnections()
	if code, body, err := call(c, "http://slow:8000/who"); code != 200 || body != "srv" {
		t.Fatalf("the app's first outbound request after wait: %d %q %v\n%s", code, body, err, starter.logs)
	}

	dead := freePort(t) // nothing listens there
	lost := startMeshProxy(t, fmt.Sprintf("127.0.0.1:%d", dead), workload{name: "lost", ip: ipLost, app: "client"})
	out, err = runWait(t, ipLost, 2*time.Second)
	if err == nil || !strings.Contains(out, "proxy not ready after") || !strings.Contains(out, "PRE_INITIALIZING") {
		t.Fatalf("wait without a control plane: %v\n%s\n%s", err, out, lost.logs)
	}
}

// TestJobCompletesWhenAppCallsQuitQuitQuit: a Job's app does its work through its proxy, then
// POSTs /quitquitquit on the status port; the proxy exits 0 promptly, so the Pod completes.
func TestJobCompletesWhenAppCallsQuitQuitQuit(t *testing.T) {
	t.Parallel()
	const ipJob, ipSrv = "127.0.1.225", "127.0.1.226"
	srvApp := startMeshApp(t, "srv", ipSrv, 0)
	ws := []workload{{name: "job", ip: ipJob, app: "client"}, {name: "srv", ip: ipSrv, app: "slow", appPort: srvApp.port}}
	xds := startControlPlane(t, meshConfig(ws))
	startMeshProxy(t, xds, ws[1])
	job := startMeshProxy(t, xds, ws[0], "--termination-drain-duration", "1h")
	for _, w := range ws {
		if out, err := runWait(t, w.ip, 30*time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", w.name, err, out)
		}
	}
	c := viaProxy(ipJob)
	for i := range 3 {
		if code, body, err := call(c, "http://slow:8000/who"); code != 200 || body != "srv" {
			t.Fatalf("job request %d: %d %q %v", i, code, body, err)
		}
	}
	c.CloseIdleConnections() // the app is done with the mesh
	resp, err := http.Post("http://"+ipJob+":15020/quitquitquit", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/quitquitquit: %d %q", resp.StatusCode, b)
	}
	start := time.Now()
	if err := job.wait(t, 15*time.Second); err != nil { // far less than its hour-long drain
		t.Fatalf("job proxy exit: %v\n%s", err, job.logs)
	}
	t.Logf("job proxy exited %v after /quitquitquit", time.Since(start).Round(time.Millisecond))
}

// testLogWriter sends the control plane's warnings to the test log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

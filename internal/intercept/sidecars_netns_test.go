package intercept

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/controlplane"
)

// TestTwoSidecarsInNetworkNamespaces is the interception proof: two hosts, each a network
// namespace with a real trellis-proxy (UID 1337) and `trellis-proxy iptables` rules, apps under
// another UID that know nothing of the mesh, and a control plane in a third namespace:
//
//	client 10.0.0.2 (sleep) <-> server 10.0.0.3, 10.0.1.3 (web: HTTP 8080 declared; 9090, 9999 not)
//	      10.1.1.2 <-> cp 10.1.1.1, 10.1.2.1 <-> 10.1.2.2
//
// The client calls the server by IP; the ServiceEntry gives the service that address.

const (
	envCPDir   = "TRELLIS_INTERCEPT_CP_DIR"
	envHeaders = "TRELLIS_INTERCEPT_HEADERS" // "name=value;name=value" for the get helper

	appUID = 1000
)

// controlPlaneHelper runs the control plane in file mode until stdin closes.
func controlPlaneHelper(addr, dir string) int {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	err := controlplane.Run(ctx, controlplane.Options{ConfigDir: dir, XDSAddress: addr,
		Ready: func(controlplane.Ready) { fmt.Println("ready") }})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// httpHelper is the server app: every address answers "web <local> from=<peer>".
func httpHelper(addrs []string) int {
	for _, a := range addrs {
		ln, err := net.Listen("tcp4", a)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			fmt.Fprintf(w, "web %s from=%s", local, host)
		}))
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// getHelper is the client app: one GET, printing "STATUS <code> <x-routed-by>\n<body>" or "ERROR ...".
func getHelper(url string) int {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		fmt.Println("ERROR", err)
		return 0
	}
	for _, kv := range strings.Split(os.Getenv(envHeaders), ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			if strings.EqualFold(k, "host") {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Println("ERROR", err)
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("STATUS %d %s\n%s", resp.StatusCode, resp.Header.Get("x-routed-by"), b)
	return 0
}

const sidecarsConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  addresses: [10.0.0.3]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: web}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: web, namespace: default}
spec: {address: 10.0.0.3, labels: {app: web}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep, namespace: default}
spec: {address: 10.0.0.2, labels: {app: sleep}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  http:
  - match: [{headers: {x-canary: {exact: "1"}}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: web.default.svc.cluster.local}}]
  - headers: {response: {set: {x-routed-by: trellis-vs}}}
    route: [{destination: {host: web.default.svc.cluster.local}}]
---
# No identity agent in this test: plaintext between the sidecars.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: DISABLE}}
`

const registryOnlySidecar = `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sleep, namespace: default}
spec:
  workloadSelector: {labels: {app: sleep}}
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`

// sidecarHosts is the running setup.
type sidecarHosts struct {
	t              *testing.T
	client, server string // namespaces
	helper         string
	cfgDir         string
}

func TestTwoSidecarsInNetworkNamespaces(t *testing.T) {
	requireNetns(t)
	began := time.Now()
	helper := helperBinary(t)
	dir, err := os.MkdirTemp("", "trellis-sidecars-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o755) // UID 1337 runs the proxy from here
	proxyBin := filepath.Join(dir, "trellis-proxy")
	if out, err := exec.Command("go", "build", "-o", proxyBin, "github.com/trellis-mesh/trellis/cmd/trellis-proxy").CombinedOutput(); err != nil {
		t.Fatalf("go build trellis-proxy: %v\n%s", err, out)
	}
	t.Logf("built trellis-proxy in %s", time.Since(began).Round(time.Millisecond))

	pid := os.Getpid()
	h := &sidecarHosts{t: t, helper: helper,
		client: fmt.Sprintf("trellis-sc-%d-client", pid), server: fmt.Sprintf("trellis-sc-%d-server", pid)}
	cp := fmt.Sprintf("trellis-sc-%d-cp", pid)
	for _, ns := range []string{h.client, h.server, cp} {
		sh(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	link := func(name, a, aAddr, b, bAddr string) (string, string) {
		va, vb := fmt.Sprintf("tsc%d%sa", pid, name), fmt.Sprintf("tsc%d%sb", pid, name)
		sh(t, "ip", "link", "add", va, "type", "veth", "peer", "name", vb)
		sh(t, "ip", "link", "set", va, "netns", a)
		sh(t, "ip", "link", "set", vb, "netns", b)
		sh(t, "ip", "-n", a, "addr", "add", aAddr, "dev", va)
		sh(t, "ip", "-n", b, "addr", "add", bAddr, "dev", vb)
		sh(t, "ip", "-n", a, "link", "set", va, "up")
		sh(t, "ip", "-n", b, "link", "set", vb, "up")
		return va, vb
	}
	vc, vs := link("h", h.client, "10.0.0.2/24", h.server, "10.0.0.3/24")
	sh(t, "ip", "-n", h.server, "addr", "add", "10.0.1.3/24", "dev", vs)
	sh(t, "ip", "-n", h.client, "route", "add", "10.0.1.0/24", "dev", vc)
	link("c", cp, "10.1.1.1/24", h.client, "10.1.1.2/24")
	link("s", cp, "10.1.2.1/24", h.server, "10.1.2.2/24")

	h.cfgDir = dir
	if err := os.WriteFile(filepath.Join(h.cfgDir, "config.yaml"), []byte(sidecarsConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	h.start(cp, 0, []string{envHelper + "=controlplane", envHelperTo + "=0.0.0.0:15010", envCPDir + "=" + h.cfgDir})
	h.start(h.server, appUID, []string{envHelper + "=http", envHelperTo + "=0.0.0.0:8080,0.0.0.0:9090,0.0.0.0:9999"})

	// Capture, then the proxies: the server captures every inbound port; the client leaves port
	// 9999 and 10.0.1.0/24 alone.
	sh(t, "ip", "netns", "exec", h.server, proxyBin, "iptables")
	sh(t, "ip", "netns", "exec", h.client, proxyBin, "iptables", "-o", "9999", "-x", "10.0.1.0/24")
	h.proxy(proxyBin, h.server, "10.1.2.1:15010", "sidecar~10.0.0.3~web.default~default.svc.cluster.local")
	h.proxy(proxyBin, h.client, "10.1.1.1:15010", "sidecar~10.0.0.2~sleep.default~default.svc.cluster.local")
	ready := time.Now()

	// A captured request reaches the app through both proxies, routed by the VirtualService.
	got := h.poll("http://10.0.0.3:8080/", "", func(s string) bool { return strings.HasPrefix(s, "STATUS 200 trellis-vs\n") })
	t.Logf("first request through both proxies %s after they started", time.Since(ready).Round(time.Millisecond))
	if !strings.Contains(got, "web 127.0.0.1:8080 from=127.0.0.1") {
		t.Errorf("the app should see the request from its own proxy (inbound cluster to 127.0.0.1): %q", got)
	}
	if n := h.stat(h.client, "cluster.outbound|8080||web.default.svc.cluster.local.upstream_rq_total"); n < 1 {
		t.Errorf("client proxy: outbound|8080||web upstream_rq_total = %d", n)
	}
	if n := h.stat(h.server, "cluster.inbound|8080||.upstream_rq_total"); n < 1 {
		t.Errorf("server proxy: inbound|8080|| upstream_rq_total = %d", n)
	}
	if got := h.get("http://10.0.0.3:8080/", "x-canary=1"); !strings.HasPrefix(got, "STATUS 418") {
		t.Errorf("the VirtualService's fault for x-canary: 1 should abort with 418, got %q", got)
	}

	// An unknown destination (a port no service declares) passes through both proxies.
	passBefore := h.stat(h.client, "cluster.PassthroughCluster.upstream_cx_total")
	inPassBefore := h.stat(h.server, "cluster.InboundPassthroughCluster.upstream_cx_total")
	if got := h.get("http://10.0.0.3:9090/", ""); !strings.HasPrefix(got, "STATUS 200") || !strings.Contains(got, "from=127.0.0.6") {
		t.Errorf("ALLOW_ANY: unknown destination should pass through (the app sees 127.0.0.6), got %q", got)
	}
	if d := h.stat(h.client, "cluster.PassthroughCluster.upstream_cx_total") - passBefore; d != 1 {
		t.Errorf("client PassthroughCluster upstream_cx_total moved by %d, want 1", d)
	}
	if d := h.stat(h.server, "cluster.InboundPassthroughCluster.upstream_cx_total") - inPassBefore; d != 1 {
		t.Errorf("server InboundPassthroughCluster upstream_cx_total moved by %d, want 1", d)
	}
	// An unknown Host on a service's HTTP port: allow_any.
	if got := h.get("http://10.0.0.3:8080/", "host=unknown.example:8080"); !strings.HasPrefix(got, "STATUS 200 \n") {
		t.Errorf("ALLOW_ANY: unknown host on port 8080 should pass through without the VirtualService, got %q", got)
	}

	// The excluded port and the excluded CIDR bypass the client proxy (the server still captures).
	outCx := func() uint64 {
		return h.stat(h.client, "listener.0.0.0.0_15001.downstream_cx_total") + h.stat(h.client, "cluster.PassthroughCluster.upstream_cx_total")
	}
	before := outCx()
	for _, url := range []string{"http://10.0.0.3:9999/", "http://10.0.1.3:9090/"} {
		if got := h.get(url, ""); !strings.HasPrefix(got, "STATUS 200") {
			t.Errorf("%s (excluded from capture) should reach the server, got %q", url, got)
		}
	}
	if after := outCx(); after != before {
		t.Errorf("excluded traffic went through the client proxy: its outbound counters moved %d -> %d", before, after)
	}

	// REGISTRY_ONLY (a Sidecar for the client): unknown destinations are refused, the service
	// still works.
	if err := os.WriteFile(filepath.Join(h.cfgDir, "sidecar.yaml"), []byte(registryOnlySidecar), 0o644); err != nil {
		t.Fatal(err)
	}
	inPassBefore = h.stat(h.server, "cluster.InboundPassthroughCluster.upstream_cx_total")
	h.poll("http://10.0.0.3:8080/", "host=unknown.example:8080", func(s string) bool { return strings.HasPrefix(s, "STATUS 502") })
	if got := h.get("http://10.0.0.3:9090/", ""); !strings.HasPrefix(got, "ERROR") {
		t.Errorf("REGISTRY_ONLY: unknown destination should be refused (BlackHoleCluster), got %q", got)
	}
	if d := h.stat(h.server, "cluster.InboundPassthroughCluster.upstream_cx_total") - inPassBefore; d != 0 {
		t.Errorf("REGISTRY_ONLY: the server's passthrough still saw %d connections", d)
	}
	if got := h.get("http://10.0.0.3:8080/", ""); !strings.HasPrefix(got, "STATUS 200 trellis-vs") {
		t.Errorf("REGISTRY_ONLY: the registered service should still work, got %q", got)
	}
	t.Logf("netns two-sidecar test took %s", time.Since(began).Round(time.Millisecond))
}

// start runs the helper binary in ns (as uid when non-zero) with env, until the test ends, and
// waits for its "ready".
func (h *sidecarHosts) start(ns string, uid int, env []string) {
	t := h.t
	t.Helper()
	cmd := h.inNetns(ns, uid, h.helper)
	cmd.Env = append(os.Environ(), env...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper %v in %s: %q %v", env, ns, line, err)
	}
}

// proxy runs trellis-proxy in ns as UID 1337, its log in the test's output on failure.
func (h *sidecarHosts) proxy(bin, ns, xds, node string) {
	t := h.t
	t.Helper()
	cmd := h.inNetns(ns, DefaultProxyUID, bin, "--xds-address", xds, "--node-id", node, "--log-level", "warning", "--drain-duration", "1s")
	log := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("trellis-proxy in %s:\n%s", ns, log)
		}
	})
}

func (h *sidecarHosts) inNetns(ns string, uid int, bin string, args ...string) *exec.Cmd {
	full := []string{"--net=/run/netns/" + ns}
	if uid != 0 {
		full = append(full, "--setuid", strconv.Itoa(uid), "--setgid", strconv.Itoa(uid))
	}
	return exec.Command("nsenter", append(append(full, "--", bin), args...)...)
}

// get runs the client app once, as a UID the mesh does not know, in the client namespace.
func (h *sidecarHosts) get(url, headers string) string {
	return h.getAs(h.client, appUID, url, headers)
}

func (h *sidecarHosts) getAs(ns string, uid int, url, headers string) string {
	h.t.Helper()
	cmd := h.inNetns(ns, uid, h.helper)
	cmd.Env = append(os.Environ(), envHelper+"=get", envHelperTo+"="+url, envHeaders+"="+headers)
	out, err := cmd.Output()
	if err != nil {
		h.t.Fatalf("get %s in %s: %v", url, ns, err)
	}
	return string(out)
}

// poll repeats a request until ok says so, within a generous deadline.
func (h *sidecarHosts) poll(url, headers string, ok func(string) bool) string {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := h.get(url, headers)
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("GET %s (%s): still %q after 60s", url, headers, got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stat reads one counter from the proxy's admin /stats in ns (0 when absent).
func (h *sidecarHosts) stat(ns, name string) uint64 {
	h.t.Helper()
	out := h.getAs(ns, 0, "http://127.0.0.1:15000/stats?filter="+strings.NewReplacer("|", "%7C").Replace(name), "")
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

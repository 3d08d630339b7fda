package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// slowBackend answers /slow only once release is closed, and everything else at once.
func slowBackend(t *testing.T) (port int, entered <-chan struct{}, release chan struct{}) {
	t.Helper()
	in, rel := make(chan struct{}, 1), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			in <- struct{}{}
			<-rel
		}
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port, in, rel
}

func startProxy(t *testing.T, backendPort int, args ...string) (p *proxyProcess, adminURL, listenerURL string) {
	t.Helper()
	bin := buildBinary(t)
	adminPort, listenerPort := freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, bootstrap, adminPort, listenerPort, backendPort), 0o600); err != nil {
		t.Fatal(err)
	}
	p = startBinary(t, bin, append([]string{"--config", cfg}, args...)...)
	adminURL = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	waitReady(t, adminURL)
	return p, adminURL, fmt.Sprintf("http://127.0.0.1:%d", listenerPort)
}

func waitDraining(t *testing.T, adminURL string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(adminURL + "/ready")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable && string(b) == "DRAINING\n" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy never reported DRAINING (%v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proxyProcess) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	waitErr := make(chan error, 1)
	go func() { waitErr <- p.cmd.Wait() }()
	select {
	case err := <-waitErr:
		return err
	case <-time.After(within):
		t.Fatalf("proxy did not exit within %v", within)
		return nil
	}
}

// inboundBootstrap is bootstrap with its listener marked INBOUND, as a sidecar's inbound
// listeners are.
var inboundBootstrap = strings.Replace(bootstrap, "  - name: l\n", "  - name: l\n    traffic_direction: INBOUND\n", 1)

func startInboundProxy(t *testing.T, backendPort int, env []string, args ...string) (p *proxyProcess, adminURL, listenerURL string) {
	t.Helper()
	bin := buildBinary(t)
	adminPort, listenerPort := freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, inboundBootstrap, adminPort, listenerPort, backendPort), 0o600); err != nil {
		t.Fatal(err)
	}
	p = &proxyProcess{cmd: exec.Command(bin, append([]string{"--config", cfg}, args...)...), logs: &bytes.Buffer{}}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	adminURL = fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	waitReady(t, adminURL)
	return p, adminURL, fmt.Sprintf("http://127.0.0.1:%d", listenerPort)
}

// TestSIGTERMRefusesNewInboundConnectionsAndFinishesInFlight: after SIGTERM the inbound listener
// refuses new connections at once, the request in flight still gets its 200 with Connection:
// close, and the process exits 0 as soon as it is done, well before the hour-long drain deadline.
func TestSIGTERMRefusesNewInboundConnectionsAndFinishesInFlight(t *testing.T) {
	t.Parallel()
	port, entered, release := slowBackend(t)
	proc, adminURL, base := startInboundProxy(t, port, nil, "--termination-drain-duration", "1h")

	inflight := make(chan string, 1)
	go func() {
		resp, err := http.Get(base + "/slow")
		if err != nil {
			inflight <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		inflight <- fmt.Sprint(resp.StatusCode, " ", string(b), " close=", resp.Close)
	}()
	<-entered
	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitDraining(t, adminURL)
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second); err == nil {
		c.Close()
		t.Fatal("the inbound listener still accepts connections during the termination drain")
	}
	close(release)
	if got := <-inflight; got != "200 done /slow close=true" {
		t.Fatalf("in-flight request across SIGTERM: %s", got)
	}
	if err := proc.wait(t, 15*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, proc.logs)
	}
	if !strings.Contains(proc.logs.String(), "no active connections left; exiting") {
		t.Errorf("logs lack the early exit:\n%s", proc.logs)
	}
}

// TestSIGTERMWithNothingInFlightExitsAtOnce is the native sidecar's stop: Kubernetes sends SIGTERM
// after the app has exited, nothing is in flight, and the proxy exits 0 without waiting out its
// hour-long drain.
func TestSIGTERMWithNothingInFlightExitsAtOnce(t *testing.T) {
	t.Parallel()
	port, _, _ := slowBackend(t)
	proc, _, base := startInboundProxy(t, port, nil, "--termination-drain-duration", "1h")
	if code, body := get(t, base+"/x"); code != 200 || body != "done /x" {
		t.Fatalf("before SIGTERM: %d %q", code, body)
	}
	http.DefaultClient.CloseIdleConnections()
	start := time.Now()
	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := proc.wait(t, 15*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, proc.logs)
	}
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}

// TestIstioDrainEnvironmentIsHonoured: EXIT_ON_ZERO_ACTIVE_CONNECTIONS=false (Istio's default)
// makes the proxy stay, DRAINING, for the whole TERMINATION_DRAIN_DURATION even with nothing in
// flight, then exit 0; a malformed value is refused before start.
func TestIstioDrainEnvironmentIsHonoured(t *testing.T) {
	t.Parallel()
	port, _, _ := slowBackend(t)
	proc, adminURL, _ := startInboundProxy(t, port, []string{"EXIT_ON_ZERO_ACTIVE_CONNECTIONS=false", "TERMINATION_DRAIN_DURATION=3s"})
	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitDraining(t, adminURL)
	// Still there, DRAINING, once the drain has begun: it waits out its 3 s.
	waitDraining(t, adminURL)
	if err := proc.wait(t, 15*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, proc.logs)
	}
	if !strings.Contains(proc.logs.String(), "exit_on_zero_active_connections=false") ||
		!strings.Contains(proc.logs.String(), "termination_drain=3s") {
		t.Errorf("logs do not show the environment's drain settings:\n%s", proc.logs)
	}

	cmd := exec.Command(buildBinary(t), "--config", "/nonexistent")
	cmd.Env = append(os.Environ(), "TERMINATION_DRAIN_DURATION=soon")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `$TERMINATION_DRAIN_DURATION: "soon"`) {
		t.Fatalf("bad TERMINATION_DRAIN_DURATION accepted: %v\n%s", err, out)
	}
}

// TestSecondSignalExitsAtOnce: with an hour-long drain that does not end early, a second SIGTERM
// ends the process without waiting for it.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	t.Parallel()
	port, _, _ := slowBackend(t)
	proc, adminURL, _ := startProxy(t, port, "--termination-drain-duration", "1h", "--exit-on-zero-active-connections=false")
	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitDraining(t, adminURL)
	if err := proc.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := proc.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(proc.logs.String(), "second interrupt: exiting without draining") {
		t.Fatalf("second signal: exit %v\n%s", err, proc.logs)
	}
}

// TestQuitQuitQuitExitsPromptly: /quitquitquit skips the drain period.
func TestQuitQuitQuitExitsPromptly(t *testing.T) {
	port, _, _ := slowBackend(t)
	proc, adminURL, _ := startProxy(t, port, "--drain-duration", "1h")
	resp, err := http.Post(adminURL+"/quitquitquit", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := proc.wait(t, 10*time.Second); err != nil {
		t.Fatalf("exit after /quitquitquit: %v\n%s", err, proc.logs)
	}
}

// TestComponentLogLevelFlag: --component-log-level raises one component, /logging shows it, and
// a bad component is refused before the proxy starts.
func TestComponentLogLevelFlag(t *testing.T) {
	port, _, _ := slowBackend(t)
	proc, adminURL, _ := startProxy(t, port, "--log-level", "warning", "--component-log-level", "admin:debug,http:error")
	code, body := get(t, adminURL+"/logging")
	if code != 200 || !strings.Contains(body, "  admin: debug\n") || !strings.Contains(body, "  http: error\n") ||
		!strings.Contains(body, "  upstream: warning\n") {
		t.Fatalf("/logging: %d %q", code, body)
	}
	proc.stopWithSIGTERM(t)
	if !strings.Contains(proc.logs.String(), "component=admin") || strings.Contains(proc.logs.String(), "component=main") {
		t.Errorf("admin should log at info (debug allowed), main not (warning):\n%s", proc.logs)
	}

	bin := buildBinary(t)
	out, err := runBinary(bin, "--component-log-level", "nosuch:debug")
	if err == nil || !strings.Contains(out, `--component-log-level: unknown logger "nosuch"`) {
		t.Fatalf("bad component accepted: %v\n%s", err, out)
	}
}

// runBinary runs trellis-proxy to completion (it must fail fast), returning its output.
func runBinary(bin string, args ...string) (string, error) {
	return runToCompletion(exec.Command(bin, args...))
}

// runToCompletion runs cmd, which must fail fast, returning its output; after 10 s it is killed.
func runToCompletion(cmd *exec.Cmd) (string, error) {
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		out, err = cmd.CombinedOutput()
		close(done)
	}()
	select {
	case <-done:
		return string(out), err
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return string(out), fmt.Errorf("still running after 10s")
	}
}

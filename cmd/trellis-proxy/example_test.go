package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// buildBinary builds trellis-proxy once per test run, into a directory TestMain removes.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "trellis-proxy-test-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		binPath = filepath.Join(dir, "trellis-proxy")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// withPorts is the committed example with its three ports replaced, each of which must appear exactly
// once, so the test breaks if the example stops saying what it is documented to say.
func withPorts(t *testing.T, src string, ports map[int]int) string {
	t.Helper()
	for from, to := range ports {
		old := fmt.Sprintf("port_value: %d}", from)
		if n := strings.Count(src, old); n != 1 {
			t.Fatalf("example: %q appears %d times, want once", old, n)
		}
		src = strings.Replace(src, old, fmt.Sprintf("port_value: %d}", to), 1)
	}
	return src
}

// proxyProcess is a running trellis-proxy binary.
type proxyProcess struct {
	cmd  *exec.Cmd
	logs *bytes.Buffer // stderr; read only after Wait
}

// startBinary runs trellis-proxy with args; the process is killed at cleanup
// if the test has not stopped it.
func startBinary(t *testing.T, bin string, args ...string) *proxyProcess {
	t.Helper()
	p := &proxyProcess{cmd: exec.Command(bin, args...), logs: &bytes.Buffer{}}
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	return p
}

// stopWithSIGTERM sends SIGTERM, as a kubelet does, and requires a clean
// exit (status 0) within 10 s.
func (p *proxyProcess) stopWithSIGTERM(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- p.cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("proxy did not exit after SIGTERM")
	}
}

func waitReady(t *testing.T, adminURL string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(adminURL + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy never became ready (%v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestFrontProxyExampleRunsUnderTheBinary runs examples/envoy-bootstrap/front-proxy.yaml, only its
// ports changed, in the real binary: requests reach the backend, the admin API answers, SIGTERM exits 0.
func TestFrontProxyExampleRunsUnderTheBinary(t *testing.T) {
	bin := buildBinary(t)
	src, err := os.ReadFile("../../examples/envoy-bootstrap/front-proxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend: %s %s", r.Method, r.URL.RequestURI())
	}))
	t.Cleanup(backend.Close)
	adminPort, listenerPort := freePort(t), freePort(t)
	cfg := filepath.Join(t.TempDir(), "front-proxy.yaml")
	rewritten := withPorts(t, string(src), map[int]int{
		9901:  adminPort,
		10000: listenerPort,
		8080:  backend.Listener.Addr().(*net.TCPAddr).Port,
	})
	if err := os.WriteFile(cfg, []byte(rewritten), 0o600); err != nil {
		t.Fatal(err)
	}

	proc := startBinary(t, bin, "--config", cfg, "--drain-duration", "2s")
	adminURL := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	waitReady(t, adminURL)

	for _, path := range []string{"/", "/api/items?page=2"} {
		code, body := get(t, fmt.Sprintf("http://127.0.0.1:%d%s", listenerPort, path))
		if want := "backend: GET " + path; code != http.StatusOK || body != want {
			t.Fatalf("GET %s through the proxy: %d %q, want 200 %q", path, code, body, want)
		}
	}
	code, dump := get(t, adminURL+"/config_dump")
	if code != http.StatusOK {
		t.Fatalf("/config_dump: %d %s", code, dump)
	}
	for _, want := range []string{`"front_proxy"`, `"local_route"`, `"service"`, fmt.Sprint(listenerPort)} {
		if !strings.Contains(dump, want) {
			t.Errorf("/config_dump lacks %s:\n%s", want, dump)
		}
	}

	proc.stopWithSIGTERM(t)
}

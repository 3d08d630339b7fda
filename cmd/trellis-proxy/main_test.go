package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

func TestParseMetadata(t *testing.T) {
	md, err := parseMetadata([]string{"INTERCEPTION_MODE=NONE", "LABELS=a=b", "EMPTY="})
	if err != nil || md["INTERCEPTION_MODE"] != "NONE" || md["LABELS"] != "a=b" || md["EMPTY"] != "" {
		t.Fatalf("got %v %v", md, err)
	}
	if _, err := parseMetadata([]string{"novalue"}); err == nil {
		t.Fatal("accepted KEY without =")
	}
}

const bootstrap = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: backend}}]}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestBinaryServesBootstrapAndExitsCleanlyOnSIGTERM builds trellis-proxy and runs it as a process.
func TestBinaryServesBootstrapAndExitsCleanlyOnSIGTERM(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello "+r.Host)
	})}
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(bln)
	t.Cleanup(func() { backend.Close() })
	adminPort, listenerPort := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, bootstrap, adminPort, listenerPort, bln.Addr().(*net.TCPAddr).Port), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := startBinary(t, bin, "--config", cfg, "--node-id", "router~127.0.0.1~gw.default~default.svc.cluster.local",
		"--metadata", "INTERCEPTION_MODE=NONE", "--log-level", "debug", "--drain-duration", "2s")

	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d", adminPort))
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/x", listenerPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("hello 127.0.0.1:%d", listenerPort); string(body) != want {
		t.Fatalf("got %q, want %q", body, want)
	}

	proc.stopWithSIGTERM(t)
}

package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const staticBootstrap = `
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: listener_0
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: service1}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: service1
    type: STATIC
    load_assignment:
      cluster_name: service1
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %s}}}}]}]
`

func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// listenerURL asks the admin API where a listener is bound.
func listenerURL(t *testing.T, admin, name string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		_, body := getBody(t, "http://"+admin+"/listeners")
		for line := range strings.SplitSeq(strings.TrimSpace(body), "\n") {
			if n, addr, ok := strings.Cut(line, "::"); ok && n == name {
				return "http://" + addr
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("listener %q never appeared", name)
	return ""
}

func TestRunServesStaticBootstrapAndDrainsOnCancel(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "backend"+r.URL.Path)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	t.Cleanup(func() { backend.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(staticBootstrap, port)), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			BootstrapPath: path, NodeID: "router~127.0.0.1~gw.default~default.svc.cluster.local",
			AdminAddress:  "127.0.0.1:1", // the bootstrap's admin address wins
			DrainDuration: 3 * time.Second, Logger: slog.New(slog.DiscardHandler),
			OnStarted: func(addr string) { started <- addr },
		})
	}()
	var admin string
	select {
	case admin = <-started:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	if code, body := getBody(t, "http://"+admin+"/ready"); code != 200 || body != "LIVE\n" {
		t.Fatalf("/ready: %d %q", code, body)
	}
	base := listenerURL(t, admin, "listener_0")
	if code, body := getBody(t, base+"/hello"); code != 200 || body != "backend/hello" {
		t.Fatalf("got %d %q", code, body)
	}

	inflight := make(chan string, 1)
	go func() {
		resp, err := http.Get(base + "/slow")
		if err != nil {
			inflight <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		inflight <- fmt.Sprint(resp.StatusCode, " ", string(b))
	}()
	<-entered
	cancel()
	// The termination drain: /ready says DRAINING, and this listener, which is not INBOUND, still
	// serves new connections (the app may call out while it finishes).
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := getBody(t, "http://"+admin+"/ready")
		if code == 503 && body == "DRAINING\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready after cancel: %d %q", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get(base + "/hello")
	if err != nil {
		t.Fatalf("new request during the drain period: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "backend/hello" {
		t.Fatalf("during drain: %d %q", resp.StatusCode, b)
	}
	close(release)
	if got := <-inflight; got != "200 backend/slow" {
		t.Fatalf("in-flight request during drain: %s", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second); err == nil {
		t.Error("listener still accepts after Run returned")
	}
}

func TestQuitQuitQuitStopsWithoutTheDrainPeriod(t *testing.T) {
	_, port, _ := net.SplitHostPort("127.0.0.1:1")
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(staticBootstrap, port)), 0o600); err != nil {
		t.Fatal(err)
	}
	started := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), Options{
			BootstrapPath: path, AdminAddress: "127.0.0.1:0",
			DrainDuration: time.Hour, Logger: slog.New(slog.DiscardHandler),
			OnStarted: func(addr string) { started <- addr },
		})
	}()
	var admin string
	select {
	case admin = <-started:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	resp, err := http.Post("http://"+admin+"/quitquitquit", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second): // far less than the hour-long drain period
		t.Fatal("Run did not return after /quitquitquit")
	}
}

func TestRunRejectsInvalidBootstrap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte("static_resources: {clusters: [{name: c, type: EDS, transport_socket: {name: tls}}]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Run(context.Background(), Options{BootstrapPath: path, AdminAddress: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), `static_resources.clusters[0]: Cluster "c": transport_socket`) {
		t.Fatalf("got %v", err)
	}
}

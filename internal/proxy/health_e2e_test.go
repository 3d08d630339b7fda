package proxy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testenv/xdsrecorder"

	"github.com/trellis-mesh/trellis/internal/proxy/apphealth"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsclient"
)

// syncBuffer is a log destination the test reads while the proxy writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProxyReportsItsApplicationsHealthToTheControlPlane(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	var hits atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(app.Close)
	appPort := app.Listener.Addr().(*net.TCPAddr).Port

	// What a VM's cluster.env holds for a WorkloadGroup with a probe.
	pc, err := apphealth.ParseProxyConfig(fmt.Appendf(nil, `
concurrency: 2
readinessProbe:
  periodSeconds: 1
  httpGet: {host: 127.0.0.1, port: %d, path: /ready}
`, appPort))
	if err != nil {
		t.Fatal(err)
	}
	wire := xdsrecorder.Start(t)
	cache, xdsAddr := wire.Cache, wire.Addr
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listenerAddr := ln.Addr().String()
	ln.Close()

	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			XDSAddress: xdsAddr, NodeID: e2eNode, ProxyConfig: pc,
			AdminAddress: "127.0.0.1:0", DrainDuration: time.Second,
			Logger:    slog.New(slog.NewTextHandler(logs, nil)),
			OnStarted: func(a string) { started <- a },
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	<-started

	// The control plane learns from the node that this proxy reports its health.
	waitFor(t, func() bool { return len(wire.Requests()) > 0 })
	first := wire.Requests()[0]
	probe := first.GetNode().GetMetadata().GetFields()[KeyProxyConfig].GetStructValue().GetFields()["readinessProbe"].GetStructValue()
	if port := probe.GetFields()["httpGet"].GetStructValue().GetFields()["port"].GetNumberValue(); port != float64(appPort) {
		t.Fatalf("node metadata PROXY_CONFIG = %v, want the readinessProbe on port %d", first.GetNode().GetMetadata().GetFields()[KeyProxyConfig], appPort)
	}

	// Not ready (no config yet): the app is not even asked, and nothing is reported.
	time.Sleep(1200 * time.Millisecond)
	if got := wire.RequestsOf(xdsclient.HealthInfoType); len(got) != 0 || hits.Load() != 0 {
		t.Fatalf("before the proxy is ready: %d reports, %d checks of the app; want none", len(got), hits.Load())
	}

	backends := map[string]string{"v1": "127.0.0.1:1", "v2": "127.0.0.1:1"}
	if err := cache.SetSnapshot(ctx, e2eNode, meshSnapshot(t, "1", listenerAddr, "v1", backends)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(wire.RequestsOf(xdsclient.HealthInfoType)) == 1 })
	if r := wire.RequestsOf(xdsclient.HealthInfoType)[0]; r.GetErrorDetail() != nil || r.GetNode() != nil {
		t.Fatalf("first report %v, want healthy, without the node", r)
	}

	status.Store(http.StatusServiceUnavailable)
	waitFor(t, func() bool { return len(wire.RequestsOf(xdsclient.HealthInfoType)) == 2 })
	d := wire.RequestsOf(xdsclient.HealthInfoType)[1].GetErrorDetail()
	want := fmt.Sprintf("HTTP GET http://127.0.0.1:%d/ready: status 503, want 200-399", appPort)
	if d.GetCode() != 13 || d.GetMessage() != want {
		t.Fatalf("unhealthy report error_detail %v, want code 13 and %q", d, want)
	}

	status.Store(http.StatusOK)
	waitFor(t, func() bool { return len(wire.RequestsOf(xdsclient.HealthInfoType)) == 3 })
	if r := wire.RequestsOf(xdsclient.HealthInfoType)[2]; r.GetErrorDetail() != nil {
		t.Fatalf("third report %v, want healthy again", r)
	}

	out := logs.String()
	if n := strings.Count(out, `msg="application healthy"`); n != 2 {
		t.Errorf("%d 'application healthy' log lines, want one per transition (2):\n%s", n, out)
	}
	if n := strings.Count(out, `msg="application unhealthy"`); n != 1 || !strings.Contains(out, "status 503") {
		t.Errorf("%d 'application unhealthy' log lines, want 1 with the reason:\n%s", n, out)
	}
}

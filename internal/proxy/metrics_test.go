package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/trellis-mesh/trellis/manifests"
)

// A TCP listener with Istio's stats filter before tcp_proxy, as a client sidecar has it; the
// upstream endpoint carries the istio.workload metadata the control plane sets.
const tcpStatsBootstrap = `
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
node:
  id: sidecar~127.0.0.1~client-v1.default~default.svc.cluster.local
  metadata:
    WORKLOAD_NAME: client-v1
    LABELS: {app: client, version: v1}
static_resources:
  listeners:
  - name: tcp_out
    traffic_direction: OUTBOUND
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: istio.stats
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/stats.PluginConfig
          value: {disable_host_header_fallback: true}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: db
          cluster: outbound|5432||db.data.svc.cluster.local
  clusters:
  - name: outbound|5432||db.data.svc.cluster.local
    type: STATIC
    load_assignment:
      cluster_name: outbound|5432||db.data.svc.cluster.local
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %s}}}
          metadata: {filter_metadata: {istio: {workload: "db-v2;data;db;v2;"}}}
`

// TCP connections through istio.stats are counted on the status port with their exact bytes, the
// destination named by the endpoint's istio.workload metadata.
func TestTCPStatsCountConnectionsAndBytesOnStatusPort(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c) // until the client's half-close
				_, _ = c.Write([]byte(strings.ToUpper(string(b)) + "!"))
			}()
		}
	}()
	_, port, _ := net.SplitHostPort(echo.Addr().String())
	b, err := ParseBootstrap([]byte(fmt.Sprintf(tcpStatsBootstrap, port)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	admin, status := make(chan string, 1), make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Bootstrap: b, StatusAddress: "127.0.0.1:0", DrainDuration: 100 * time.Millisecond,
			Logger:          slog.New(slog.DiscardHandler),
			OnStarted:       func(a string) { admin <- a },
			OnStatusStarted: func(s, _ string) { status <- s }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	statusAddr := <-status
	addr := strings.TrimPrefix(listenerURL(t, <-admin, "tcp_out"), "http://")

	for _, msg := range []string{"hello", "hi"} { // 7 bytes up, 9 down
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte(msg))
		_ = c.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != strings.ToUpper(msg)+"!" {
			t.Fatalf("echo %q, want %q", got, strings.ToUpper(msg)+"!")
		}
	}

	want := map[string]float64{
		"istio_tcp_connections_opened_total": 2, "istio_tcp_connections_closed_total": 2,
		"istio_tcp_received_bytes_total": 7, "istio_tcp_sent_bytes_total": 9,
	}
	labels := map[string]string{
		"reporter": "source", "source_workload": "client-v1", "source_app": "client", "source_version": "v1",
		"source_workload_namespace": "default", "destination_workload": "db-v2", "destination_workload_namespace": "data",
		"destination_app": "db", "destination_version": "v2", "destination_canonical_service": "db",
		"destination_canonical_revision": "v2", "destination_service": "db.data.svc.cluster.local",
		"destination_service_name": "db", "destination_service_namespace": "data", "request_protocol": "tcp",
		"response_flags": "-", "connection_security_policy": "unknown", "source_principal": "unknown",
		"destination_principal": "unknown",
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + statusAddr + "/stats/prometheus")
		if err != nil {
			t.Fatal(err)
		}
		var p expfmt.TextParser
		mfs, err := p.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("/stats/prometheus does not parse: %v", err)
		}
		// The Grafana dashboards query these families by Istio's labels.
		problems := manifests.ProxyContractViolations(mfs, func(m manifests.ProxyMetric) bool {
			return strings.HasPrefix(m.Name, "istio_tcp_")
		})
		for name, v := range want {
			ms := mfs[name].GetMetric()
			if len(ms) != 1 {
				problems = append(problems, fmt.Sprintf("%s: %d series, want 1", name, len(ms)))
				continue
			}
			got := map[string]string{}
			for _, l := range ms[0].GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, wv := range labels {
				if got[k] != wv {
					problems = append(problems, fmt.Sprintf("%s{%s} = %q, want %q", name, k, got[k], wv))
				}
			}
			if c := ms[0].GetCounter().GetValue(); c != v {
				problems = append(problems, fmt.Sprintf("%s = %v, want %v", name, c, v))
			}
		}
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status port metrics:\n%s", strings.Join(problems, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

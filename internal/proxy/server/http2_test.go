package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// h2Listener routes everything to cluster with the given HCM codec_type.
func h2Listener(t *testing.T, codec string) string {
	return `
name: l
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- filters:` + hcmFilter("l", "up", "      codec_type: "+codec)
}

const h2Cluster = `
name: up
type: STATIC
connect_timeout: 2s
{{if .H2}}http2_protocol_options: {}
{{end}}load_assignment:
  cluster_name: up
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Port}}}}}}]}]
`

func portOf(t *testing.T, addr net.Addr) int { return addr.(*net.TCPAddr).Port }

func TestHTTPVersionsTranslateBetweenDownstreamAndUpstream(t *testing.T) {
	up := protoBackend(t)
	for _, tc := range []struct {
		name         string
		h2Down, h2Up bool
	}{
		{"h2c to h2c", true, true},
		{"HTTP/1.1 to h2c", false, true},
		{"h2c to HTTP/1.1", true, false},
		{"HTTP/1.1 to HTTP/1.1", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newProxy(t, Options{})
			mustApply(t, p, ClusterType, msgs(clusterYAML(t, h2Cluster, map[string]any{"H2": tc.h2Up, "Port": portOf(t, up.Listener.Addr())})))
			mustApply(t, p, ListenerType, msgs(listenerYAML(t, h2Listener(t, "AUTO"), nil)))
			c := keepAliveClient(t)
			if tc.h2Down {
				c = h2cClient(t)
			}
			resp, err := c.Get("http://" + listenerAddr(t, p, "l") + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantDown, wantUp := 1, "HTTP/1.1"
			if tc.h2Down {
				wantDown = 2
			}
			if tc.h2Up {
				wantUp = "HTTP/2.0"
			}
			if resp.ProtoMajor != wantDown || string(b) != wantUp {
				t.Fatalf("downstream %s, upstream saw %q", resp.Proto, b)
			}
		})
	}
}

func TestCodecTypeLimitsTheDownstreamProtocol(t *testing.T) {
	up := protoBackend(t)
	for _, tc := range []struct {
		codec            string
		h1Works, h2Works bool
	}{
		{"AUTO", true, true},
		{"HTTP1", true, false},
		{"HTTP2", false, true},
	} {
		t.Run(tc.codec, func(t *testing.T) {
			p := newProxy(t, Options{})
			mustApply(t, p, ClusterType, msgs(clusterYAML(t, h2Cluster, map[string]any{"Port": portOf(t, up.Listener.Addr())})))
			mustApply(t, p, ListenerType, msgs(listenerYAML(t, h2Listener(t, tc.codec), nil)))
			url := "http://" + listenerAddr(t, p, "l") + "/"
			for _, client := range []struct {
				c    *http.Client
				want bool
				name string
			}{{keepAliveClient(t), tc.h1Works, "HTTP/1.1"}, {h2cClient(t), tc.h2Works, "h2c prior knowledge"}} {
				client.c.Timeout = 10 * time.Second
				resp, err := client.c.Get(url)
				ok := err == nil && resp.StatusCode == 200
				if err == nil {
					resp.Body.Close()
				}
				if ok != client.want {
					t.Errorf("%s client served=%v (%v), want %v", client.name, ok, err, client.want)
				}
			}
		})
	}
}

func TestGRPCHealthChecksCrossTheProxyWithTrailers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("reviews", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	p := newProxy(t, Options{})
	mustApply(t, p, ClusterType, msgs(clusterYAML(t, h2Cluster, map[string]any{"H2": true, "Port": portOf(t, ln.Addr())})))
	mustApply(t, p, ListenerType, msgs(listenerYAML(t, h2Listener(t, "AUTO"), nil)))
	cc, err := grpc.NewClient(listenerAddr(t, p, "l"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "reviews"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("unary Check: %v %v", resp, err)
	}
	// The status of a failed call travels in the trailers only.
	_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Check of an unknown service: %v, want NotFound from the trailers", err)
	}

	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "reviews"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING} {
		msg, err := stream.Recv()
		if err != nil || msg.GetStatus() != want {
			t.Fatalf("Watch: got %v %v, want %v", msg, err, want)
		}
		if want == healthpb.HealthCheckResponse_SERVING {
			hs.SetServingStatus("reviews", healthpb.HealthCheckResponse_NOT_SERVING)
		}
	}
}

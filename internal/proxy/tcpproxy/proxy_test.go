package tcpproxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/listener"
	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
	"github.com/trellis-mesh/trellis/internal/proxy/upstream"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// serve runs the proxy on one end of a loopback TCP connection and returns the other end and the
// connection's record, delivered once the proxy is done.
func serve(t *testing.T, p *Proxy) (net.Conn, <-chan streaminfo.Info) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	down, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan streaminfo.Info, 1)
	p.OnDone = func(si *streaminfo.Info) { done <- *si }
	go func() {
		defer down.Close()
		p.ServeConn(context.Background(), down, &listener.ConnInfo{})
	}()
	_ = client.SetDeadline(time.Now().Add(10 * time.Second))
	return client, done
}

func newProxy(t *testing.T, cfg *xdsconfig.TCPProxy, clusters map[string]*upstream.Cluster) (*Proxy, *stats.Store) {
	store := stats.NewStore()
	return New(cfg, func(name string) *upstream.Cluster { return clusters[name] }, store, slog.New(slog.DiscardHandler)), store
}

func deadAddress(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestConnectFailuresAreRetriedUpToMaxConnectAttemptsThenFlaggedUF(t *testing.T) {
	store := stats.NewStore()
	cl := upstream.New(upstream.Config{Name: "c", ConnectTimeout: 2 * time.Second,
		Endpoints: []upstream.Endpoint{{Address: deadAddress(t), Healthy: true}}}, store)
	p, pstore := newProxy(t, &xdsconfig.TCPProxy{StatPrefix: "t", Cluster: "c", MaxConnectAttempts: 3}, map[string]*upstream.Cluster{"c": cl})
	client, done := serve(t, p)
	if b, _ := io.ReadAll(client); len(b) != 0 {
		t.Fatalf("got %q", b)
	}
	si := <-done
	if si.Flags != streaminfo.UpstreamConnectionFailure || si.Attempts != 3 || si.UpstreamCluster != "c" || si.UpstreamHost == "" {
		t.Fatalf("record %+v (flags %s)", si, si.Flags)
	}
	if store.Counter("cluster.c.upstream_cx_connect_fail").Value() != 3 || pstore.Counter("tcp.t.upstream_cx_connect_attempts_exceeded").Value() != 1 {
		t.Fatal("connect failures not counted")
	}
}

func TestNoHealthyHostIsFlaggedUH(t *testing.T) {
	cl := upstream.New(upstream.Config{Name: "c"}, stats.NewStore())
	p, _ := newProxy(t, &xdsconfig.TCPProxy{StatPrefix: "t", Cluster: "c", MaxConnectAttempts: 1}, map[string]*upstream.Cluster{"c": cl})
	_, done := serve(t, p)
	if si := <-done; si.Flags != streaminfo.NoHealthyUpstream {
		t.Fatalf("flags %s", si.Flags)
	}
}

func TestIdleConnectionIsClosedAndBytesRecorded(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	go func() {
		c, err := up.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "hello")
		_, _ = io.Copy(io.Discard, c) // then silence, until the proxy gives up
	}()
	cl := upstream.New(upstream.Config{Name: "c", Endpoints: []upstream.Endpoint{{Address: up.Addr().String(), Healthy: true}}}, stats.NewStore())
	p, store := newProxy(t, &xdsconfig.TCPProxy{StatPrefix: "t", Cluster: "c", MaxConnectAttempts: 1, IdleTimeout: time.Second},
		map[string]*upstream.Cluster{"c": cl})
	client, done := serve(t, p)
	_, _ = io.WriteString(client, "hi")
	if b, _ := io.ReadAll(client); string(b) != "hello" {
		t.Fatalf("got %q", b)
	}
	si := <-done
	if si.BytesReceived != 2 || si.BytesSent != 5 || si.Flags != 0 {
		t.Fatalf("record %+v", si)
	}
	if store.Counter("tcp.t.idle_timeout").Value() != 1 {
		t.Fatal("idle_timeout not counted")
	}
}

package listener

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/tlstest"
	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// say is a connection handler that writes what it knows about the connection and closes.
type say string

func (s say) ServeConn(_ context.Context, c net.Conn, info *ConnInfo) {
	fmt.Fprintf(c, "%s sni=%s transport=%s alpn=%s", s, info.ServerName, info.TransportProtocol, strings.Join(info.ApplicationProtocols, ","))
}

// hold is a connection handler that keeps connections open until the client or the drain ends them.
type hold struct{ started chan struct{} }

func (h hold) ServeConn(ctx context.Context, c net.Conn, _ *ConnInfo) {
	h.started <- struct{}{}
	_, _ = io.WriteString(c, "held")
	go func() { <-ctx.Done(); c.Close() }()
	_, _ = io.Copy(io.Discard, c)
}

func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// helloOnly lets a TLS client write its ClientHello but read nothing back.
type helloOnly struct{ net.Conn }

func (helloOnly) Read([]byte) (int, error) { return 0, io.EOF }

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestTLSInspectorChoosesTheChainBySNIWithoutConsumingTheHello(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	m, store := newManager(t)
	terminated := Chain{
		Name:  "terminated",
		Match: xdsconfig.FilterChainMatch{ServerNames: []string{"web.example.com"}},
		TLS:   &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "web.example.com").TLS}, NextProtos: []string{"h2", "http/1.1"}},
		HTTP:  &HTTPChain{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "web over %s", r.Proto) })},
	}
	err := m.Apply([]Spec{{
		Name: "l", Address: "127.0.0.1:0", Bind: true, Version: "1",
		Filters: xdsconfig.ListenerFilters{TLSInspector: true, HTTPInspector: true, Timeout: 10 * time.Second},
		Chains: []Chain{
			terminated,
			{Name: "wild", Match: xdsconfig.FilterChainMatch{ServerNames: []string{"*.example.com"}}, Conn: say("wild")},
			{Name: "h2c", Match: xdsconfig.FilterChainMatch{TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"h2c"}}, Conn: say("h2c")},
		},
		Default: &Chain{Conn: say("default")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, m, "l")

	// TLS terminated in the chain, HTTP/2 by ALPN.
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "web.example.com", RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	if body, _ := get(t, &http.Client{Transport: tr}, "https://"+addr+"/"); body != "web over HTTP/2.0" {
		t.Fatalf("terminated chain: %q", body)
	}
	// The wildcard chain sees the ClientHello's SNI and ALPN; the raw hello bytes are still there
	// for whoever reads the connection.
	c := dial(t, addr)
	go func() {
		// The client only sends its hello: reading here would race readAll for the chain's answer.
		tc := tls.Client(helloOnly{c}, &tls.Config{ServerName: "api.example.com", NextProtos: []string{"istio"}, InsecureSkipVerify: true})
		_ = tc.Handshake()
	}()
	if got := readAll(t, c); !strings.HasPrefix(got, "wild sni=api.example.com transport=tls alpn=istio") {
		t.Fatalf("wildcard chain: %q", got)
	}
	// The HTTP inspector tells h2c prior knowledge from HTTP/1.1.
	c = dial(t, addr)
	_, _ = io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	if got := readAll(t, c); got != "h2c sni= transport=raw_buffer alpn=h2c" {
		t.Fatalf("h2c: %q", got)
	}
	c = dial(t, addr)
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if got := readAll(t, c); got != "default sni= transport=raw_buffer alpn=http/1.1" {
		t.Fatalf("HTTP/1.1: %q", got)
	}
	if store.Counter("tls_inspector.tls_found").Value() != 2 || store.Counter("http_inspector.http2_found").Value() != 1 {
		t.Fatal("inspector stats not counted")
	}
}

func TestConnectionMatchingNoChainIsClosed(t *testing.T) {
	m, store := newManager(t)
	err := m.Apply([]Spec{{
		Name: "l", Address: "127.0.0.1:0", Bind: true, Version: "1",
		Chains: []Chain{{Match: xdsconfig.FilterChainMatch{DestinationPort: 1}, Conn: say("never")}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, m, "l")
	if got := readAll(t, dial(t, addr)); got != "" {
		t.Fatalf("got %q, want the connection closed", got)
	}
	if got := store.Counter("listener." + strings.ReplaceAll(addr, ":", "_") + ".no_filter_chain_match").Value(); got != 1 {
		t.Fatalf("no_filter_chain_match = %d", got)
	}
}

func TestListenerFiltersTimeoutClosesOrContinues(t *testing.T) {
	for _, cont := range []bool{false, true} {
		m, _ := newManager(t)
		err := m.Apply([]Spec{{
			Name: "l", Address: "127.0.0.1:0", Bind: true, Version: "1",
			Filters: xdsconfig.ListenerFilters{TLSInspector: true, Timeout: 100 * time.Millisecond, ContinueOnTimeout: cont},
			Default: &Chain{Conn: say("served")},
		}})
		if err != nil {
			t.Fatal(err)
		}
		// The client says nothing, as server-first protocols do: the inspector gives up.
		got := readAll(t, dial(t, addrOf(t, m, "l")))
		if want := map[bool]string{false: "", true: "served sni= transport=raw_buffer alpn="}[cont]; got != want {
			t.Errorf("continue_on_listener_filters_timeout=%v: got %q, want %q", cont, got, want)
		}
	}
}

func TestUpdatedListenerKeepsItsTCPConnectionsAndDrainEndsThem(t *testing.T) {
	m, _ := newManager(t) // drain timeout 2s
	h := hold{started: make(chan struct{}, 1)}
	spec := Spec{Name: "l", Address: "127.0.0.1:0", Bind: true, Version: "1", Default: &Chain{Conn: h}}
	if err := m.Apply([]Spec{spec}); err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, m, "l")
	c := dial(t, addr)
	<-h.started
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "held" {
		t.Fatalf("%q %v", buf, err)
	}
	spec.Version, spec.Default = "2", &Chain{Conn: say("new")}
	if err := m.Apply([]Spec{spec}); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, dial(t, addr)); !strings.HasPrefix(got, "new") {
		t.Fatalf("new connection after the update: %q", got)
	}
	// The held connection is still open: a write goes through and nothing closed it.
	if _, err := io.WriteString(c, "still here"); err != nil {
		t.Fatal(err)
	}
	// Removing the listener drains it; the held connection is closed when the drain time is up.
	if err := m.Apply(nil); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c); got != "" {
		t.Fatalf("got %q after the drain", got)
	}
}

func TestHTTP1CodecOverTLSNeverNegotiatesH2(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	m, _ := newManager(t)
	err := m.Apply([]Spec{{
		Name: "l", Address: "127.0.0.1:0", Bind: true, Version: "1",
		Default: &Chain{
			TLS: &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "web.example.com").TLS}, NextProtos: []string{"h2", "http/1.1"}},
			HTTP: &HTTPChain{Codec: xdsconfig.CodecHTTP1,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "web.example.com", RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	if body, _ := get(t, &http.Client{Transport: tr}, "https://"+addrOf(t, m, "l")+"/"); body != "HTTP/1.1" {
		t.Fatalf("got %q", body)
	}
}

// Connections arriving while the listener is updated in place (as every xDS push that changes its
// chains does) are handled safely: run with -race.
func TestConnectionsDuringInPlaceUpdatesAreHandledSafely(t *testing.T) {
	m, store := newManager(t)
	spec := func(v int) Spec {
		return Spec{Name: "l", Address: "127.0.0.1:0", Bind: true, Version: strconv.Itoa(v),
			Chains: []Chain{{Match: xdsconfig.FilterChainMatch{DestinationPort: 1}, Conn: say("never")}}}
	}
	if err := m.Apply([]Spec{spec(0)}); err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, m, "l")
	const dialers, conns = 4, 100
	var wg sync.WaitGroup
	for range dialers {
		wg.Go(func() {
			for range conns {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Error(err)
					return
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				got, err := io.ReadAll(c)
				c.Close()
				if err != nil || len(got) != 0 {
					t.Errorf("got %q, %v; want the connection closed", got, err)
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for v := 1; ; v++ {
		select {
		case <-done:
		default:
			if err := m.Apply([]Spec{spec(v)}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		break
	}
	if addrOf(t, m, "l") != addr {
		t.Fatal("the listener was rebound; the updates were not in place")
	}
	if got := store.Counter("listener." + strings.ReplaceAll(addr, ":", "_") + ".no_filter_chain_match").Value(); got != dialers*conns {
		t.Fatalf("no_filter_chain_match = %d, want %d", got, dialers*conns)
	}
}

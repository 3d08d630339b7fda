package dnsproxy

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/miekg/dns"
	"google.golang.org/protobuf/types/known/anypb"
)

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Address = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s
}

func query(t *testing.T, network, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 10 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	resp, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s: %v", network, name, err)
	}
	return resp
}

func TestLargeUpstreamAnswerIsTruncatedOverUDPAndWholeOverTCP(t *testing.T) {
	up := startUpstream(t, externalAnswers(60))
	s := startServer(t, Config{Upstreams: []string{up}})

	udp := query(t, "udp", s.Addr(), "big.example.", dns.TypeA)
	if !udp.Truncated || len(udp.Answer) >= 60 {
		t.Fatalf("UDP answer: TC=%v with %d records, want TC and fewer than 60", udp.Truncated, len(udp.Answer))
	}
	tcp := query(t, "tcp", s.Addr(), "big.example.", dns.TypeA)
	if tcp.Truncated || len(tcp.Answer) != 60 || tcp.Rcode != dns.RcodeSuccess {
		t.Fatalf("TCP answer: TC=%v rcode=%d with %d records, want all 60", tcp.Truncated, tcp.Rcode, len(tcp.Answer))
	}
	// A client announcing a large EDNS0 buffer gets everything over UDP.
	c := &dns.Client{Net: "udp", Timeout: 10 * time.Second, UDPSize: 4096}
	m := new(dns.Msg)
	m.SetQuestion("big.example.", dns.TypeA)
	m.SetEdns0(4096, false)
	resp, _, err := c.Exchange(m, s.Addr())
	if err != nil || resp.Truncated || len(resp.Answer) != 60 {
		t.Fatalf("UDP with EDNS0 4096: err=%v resp=%v", err, resp)
	}
}

func TestUpstreamTimeoutAnswersServfail(t *testing.T) {
	// An upstream that reads queries and never answers, on UDP and TCP.
	pc, _ := listenBoth(t)
	s := startServer(t, Config{Upstreams: []string{pc.LocalAddr().String()}, Timeout: 300 * time.Millisecond})

	for _, network := range []string{"udp", "tcp"} {
		start := time.Now()
		resp := query(t, network, s.Addr(), "example.com.", dns.TypeA)
		if resp.Rcode != dns.RcodeServerFailure {
			t.Fatalf("%s: rcode %s, want SERVFAIL", network, dns.RcodeToString[resp.Rcode])
		}
		t.Logf("%s: SERVFAIL after %v (timeout 300ms)", network, time.Since(start))
	}
}

func TestUnreachableUpstreamFallsBackToTheNext(t *testing.T) {
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.LocalAddr().String()
	dead.Close() // nothing listens: ICMP port unreachable, an error at once
	up := startUpstream(t, externalAnswers(1))
	s := startServer(t, Config{Upstreams: []string{deadAddr, up}})
	resp := query(t, "udp", s.Addr(), "example.com.", dns.TypeA)
	if len(resp.Answer) != 1 || resp.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
		t.Fatalf("answer %v", resp.Answer)
	}
}

func TestPerServiceListenerGivesTheVIP(t *testing.T) {
	tcp, _ := anypb.New(&tcpv3.TcpProxy{StatPrefix: "x", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "outbound|3306||mysql.db.svc.cluster.local"}})
	l := &listenerv3.Listener{Name: "10.96.3.4_3306", Address: &corev3.Address{},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tcp}}}}}}
	table := Build(Resources{Listeners: []*listenerv3.Listener{l}}, "default", "")
	for _, name := range []string{"mysql.db.svc.cluster.local.", "mysql.db.", "MySQL.DB.svc."} {
		h, _, _ := table.Lookup(name)
		if h == nil || len(h.V4) != 1 || h.V4[0] != netip.MustParseAddr("10.96.3.4") {
			t.Fatalf("%s: %+v", name, h)
		}
	}
	if h, _, _ := table.Lookup("mysql."); h != nil {
		t.Fatal("short name of another namespace's service answered")
	}
}

// FuzzDNSQuery feeds arbitrary bytes as a query to the handler: no panic, and every answer packs.
func FuzzDNSQuery(f *testing.F) {
	for _, name := range []string{"reviews.default.svc.cluster.local.", "reviews.", "x.default.svc.cluster.local.default.svc.cluster.local.", "example.com."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	up := startUpstreamF(f)
	s, err := New(Config{Upstreams: []string{up}, Namespace: "default", Timeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	tcp, _ := anypb.New(&tcpv3.TcpProxy{StatPrefix: "x", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "outbound|9080||reviews.default.svc.cluster.local"}})
	s.SetTable(Build(Resources{Listeners: []*listenerv3.Listener{{Name: "10.96.0.9_9080",
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "tcp", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tcp}}}}}}}}, "default", ""))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := new(dns.Msg)
		if r.Unpack(b) != nil {
			return
		}
		w := &recorder{}
		s.ServeDNS(w, r)
		if w.msg != nil {
			if _, err := w.msg.Pack(); err != nil {
				t.Fatalf("answer does not pack: %v", err)
			}
		}
	})
}

func startUpstreamF(f *testing.F) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: externalAnswers(60)}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ActivateAndServe() }()
	f.Cleanup(func() { _ = srv.ShutdownContext(context.Background()); <-done })
	return pc.LocalAddr().String()
}

// recorder is a dns.ResponseWriter that keeps the answer, as from a UDP client.
type recorder struct{ msg *dns.Msg }

func (r *recorder) LocalAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15053} }
func (r *recorder) RemoteAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (r *recorder) WriteMsg(m *dns.Msg) error   { r.msg = m; return nil }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) Close() error                { return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}

// listenBoth is listenUDPAndTCP on a free loopback port, closed when the test ends.
func listenBoth(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	pc, ln, err := listenUDPAndTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	return pc, ln
}

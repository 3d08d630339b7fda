package dnsproxy

import (
	"context"
	"net"
	"testing"

	"github.com/miekg/dns"
)

// startUpstream runs a real DNS server on 127.0.0.1 (UDP and TCP, one port) answering with h.
func startUpstream(t *testing.T, h dns.HandlerFunc) string {
	t.Helper()
	pc, ln := listenBoth(t)
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		done, started := make(chan struct{}), make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { defer close(done); _ = srv.ActivateAndServe() }()
		<-started // a server shut down before it starts would keep serving
		t.Cleanup(func() { _ = srv.ShutdownContext(context.Background()); <-done })
	}
	return pc.LocalAddr().String()
}

// externalAnswers answers A queries for example.com with 192.0.2.1 and big.example with n
// records (over 512 bytes); everything else NXDOMAIN.
func externalAnswers(n int) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		switch r.Question[0].Name {
		case "example.com.":
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
		case "big.example.":
			for i := range n {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "big.example.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(198, 51, 100, byte(i+1))})
			}
		default:
			m.Rcode = dns.RcodeNameError
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncate(dns.MinMsgSize) // a real server truncates over UDP too
		}
		_ = w.WriteMsg(m)
	}
}

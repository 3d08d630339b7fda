package upstream

import (
	"context"
	"crypto/tls"
	"io"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
	"github.com/trellis-mesh/trellis/internal/proxy/tlstest"
)

func TestUpstreamTLSResumesSessionsAndSendsSNIAndALPN(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	srvCfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "db.example.com").TLS}, NextProtos: []string{"istio", "x"}}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	states := make(chan tls.ConnectionState, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() == nil {
				states <- tc.ConnectionState()
				_, _ = io.WriteString(tc, "x") // lets the client read its session ticket
			}
			tc.Close()
		}
	}()
	cl := New(Config{Name: "db", Endpoints: []Endpoint{{Address: ln.Addr().String(), Healthy: true}},
		TLS: &TLS{Config: &tls.Config{RootCAs: ca.Pool()}, SNI: "db.example.com", ALPN: []string{"istio"},
			Sessions: tls.NewLRUClientSessionCache(1)}}, stats.NewStore())
	for i := range 2 {
		c, err := cl.Dial(context.Background(), cl.Pick())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.ReadAll(c)
		c.Close()
		st := <-states
		if st.ServerName != "db.example.com" || st.NegotiatedProtocol != "istio" {
			t.Fatalf("server saw SNI %q ALPN %q", st.ServerName, st.NegotiatedProtocol)
		}
		if st.DidResume != (i == 1) {
			t.Fatalf("connection %d: resumed=%v", i, st.DidResume)
		}
	}
	if cl.Stats.CxTotal.Value() != 2 || cl.Stats.CxActive.Value() != 0 {
		t.Fatalf("cx total %d active %d", cl.Stats.CxTotal.Value(), cl.Stats.CxActive.Value())
	}
}

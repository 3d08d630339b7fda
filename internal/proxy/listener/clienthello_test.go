package listener

import (
	"crypto/tls"
	"net"
	"slices"
	"testing"
	"time"
)

// realClientHello returns the bytes crypto/tls sends first as a client.
func realClientHello(t testing.TB, serverName string, alpn ...string) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		c := tls.Client(client, &tls.Config{ServerName: serverName, NextProtos: alpn, InsecureSkipVerify: true})
		_ = c.Handshake() // fails once the server side closes
		client.Close()
	}()
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := server.Read(buf)
		out = append(out, buf[:n]...)
		if _, st := parseClientHello(out); st != helloNeedMore || err != nil {
			return out
		}
	}
}

func TestClientHelloYieldsSNIAndALPN(t *testing.T) {
	hello := realClientHello(t, "api.example.com", "h2", "http/1.1")
	h, st := parseClientHello(hello)
	if st != helloDone || h.serverName != "api.example.com" || !slices.Equal(h.alpn, []string{"h2", "http/1.1"}) {
		t.Fatalf("got %+v state %d", h, st)
	}
	for n := range len(hello) {
		if _, st := parseClientHello(hello[:n]); st != helloNeedMore {
			t.Fatalf("a %d-byte prefix of a ClientHello gave state %d, want need-more", n, st)
		}
	}
}

func TestClientHelloSplitAcrossRecordsIsReassembled(t *testing.T) {
	hello := realClientHello(t, "split.example.com", "h2")
	body := hello[recordHeaderLen:]
	half := len(body) / 2
	var two []byte
	for _, part := range [][]byte{body[:half], body[half:]} {
		two = append(two, 0x16, 3, 1, byte(len(part)>>8), byte(len(part)))
		two = append(two, part...)
	}
	h, st := parseClientHello(two)
	if st != helloDone || h.serverName != "split.example.com" {
		t.Fatalf("got %+v state %d", h, st)
	}
}

func TestNonTLSBytesAreNotAClientHello(t *testing.T) {
	for _, in := range []string{"GET / HTTP/1.1\r\n", "PRI * HTTP/2.0\r\n", "\x16\x02\x00\x00\x01", "\x16\x03\x01\x00\x04\x02\x00\x00\x00"} {
		if _, st := parseClientHello([]byte(in)); st != helloNotTLS {
			t.Errorf("%q: state %d, want not TLS", in, st)
		}
	}
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(realClientHello(f, "fuzz.example.com", "h2", "http/1.1"))
	f.Add(realClientHello(f, ""))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, st := parseClientHello(b)
		if st != helloDone && (h.serverName != "" || h.alpn != nil) {
			t.Fatalf("state %d with results %+v", st, h)
		}
		if len(h.serverName) > len(b) {
			t.Fatal("server name longer than the input")
		}
	})
}

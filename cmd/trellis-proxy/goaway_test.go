package main

import (
	"bytes"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestSIGTERMSendsGOAWAYOnInboundHTTP2: an HTTP/2 (prior knowledge) connection to an inbound
// listener with a request in flight gets a GOAWAY once SIGTERM arrives, and its request still
// completes with 200 on that connection.
func TestSIGTERMSendsGOAWAYOnInboundHTTP2(t *testing.T) {
	t.Parallel()
	port, entered, release := slowBackend(t)
	proc, adminURL, base := startInboundProxy(t, port, nil, "--termination-drain-duration", "1h")

	c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "app"}, {":path", "/slow"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	<-entered
	if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitDraining(t, adminURL)

	// Read until the GOAWAY; only then let the request finish.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	dec := hpack.NewDecoder(4096, nil)
	goaway, status, body := false, "", ""
	for status == "" || !strings.HasSuffix(body, "/slow") {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading frames (goaway %v, status %q, body %q): %v", goaway, status, body, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			if f.ErrCode != http2.ErrCodeNo {
				t.Fatalf("GOAWAY with error %v", f.ErrCode)
			}
			if !goaway {
				goaway = true
				close(release)
			}
		case *http2.HeadersFrame:
			fields, err := dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				t.Fatal(err)
			}
			for _, hf := range fields {
				if hf.Name == ":status" {
					status = hf.Value
				}
			}
		case *http2.DataFrame:
			body += string(f.Data())
		}
	}
	if !goaway || status != "200" || body != "done /slow" {
		t.Fatalf("goaway %v, status %q, body %q", goaway, status, body)
	}
	c.Close()
	if err := proc.wait(t, 15*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, proc.logs)
	}
}

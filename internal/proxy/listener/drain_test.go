package listener

import (
	"net"
	"net/http"
	"testing"
	"time"
)

func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGracefulDrainKeepsAcceptingWithConnectionCloseThenStops(t *testing.T) {
	m, _ := newManager(t) // drain timeout 2s
	if err := m.Apply([]Spec{{Name: "a", Address: "127.0.0.1:0", Bind: true, Version: "1", Handler: text("a")}}); err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, m, "a")
	client := newClient(t)
	if _, reused := get(t, client, "http://"+addr+"/"); reused {
		t.Fatal("first request reused a connection")
	}
	m.Drain(false, true)
	if !m.Draining() {
		t.Fatal("Draining() false after Drain")
	}
	// Still accepting during the drain period, but each response closes its connection.
	for range 2 {
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("request during the drain period: %v", err)
		}
		resp.Body.Close()
		if !resp.Close { // set by Connection: close, which the client then strips from Header
			t.Fatalf("response during drain lacks Connection: close (%v)", resp.Header)
		}
	}
	waitUntil(t, "the drained listener stops accepting", func() bool { return !dialable(addr) })
}

func TestGracefulDrainSendsHTTP2ClientsAway(t *testing.T) {
	m, _ := newManager(t)
	if err := m.Apply([]Spec{{Name: "a", Address: "127.0.0.1:0", Bind: true, Version: "1", Handler: text("a")}}); err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, m, "a")
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("not HTTP/2: %s", resp.Proto)
	}
	m.Drain(false, true)
	// The next stream is answered, and then the server's GOAWAY makes the client dial anew.
	if body, _ := get(t, client, "http://"+addr+"/"); body != "a" {
		t.Fatalf("got %q", body)
	}
	waitUntil(t, "the client opens a new connection after GOAWAY", func() bool {
		_, reused := get(t, client, "http://"+addr+"/")
		return !reused
	})
}

func TestDrainInboundOnlyStopsInboundListenersAtOnce(t *testing.T) {
	m, _ := newManager(t)
	specs := []Spec{
		{Name: "in", Address: "127.0.0.1:0", Bind: true, Version: "1", Handler: text("in"), Inbound: true},
		{Name: "out", Address: "127.0.0.1:0", Bind: true, Version: "1", Handler: text("out")},
	}
	if err := m.Apply(specs); err != nil {
		t.Fatal(err)
	}
	in, out := addrOf(t, m, "in"), addrOf(t, m, "out")
	m.Drain(true, false)
	if dialable(in) {
		t.Error("inbound listener still accepts after drain_listeners?inboundonly")
	}
	if body, _ := get(t, newClient(t), "http://"+out+"/"); body != "out" {
		t.Errorf("outbound listener: %q", body)
	}
	// An LDS update inside the stopped scope does not bring the listener back.
	specs[0].Version, specs[1].Version = "2", "2"
	if err := m.Apply(specs); err != nil {
		t.Fatal(err)
	}
	if dialable(in) {
		t.Error("LDS restarted a drained inbound listener")
	}
	if body, _ := get(t, newClient(t), "http://"+out+"/"); body != "out" {
		t.Errorf("outbound listener after LDS: %q", body)
	}
}

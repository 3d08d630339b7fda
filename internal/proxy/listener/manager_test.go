package listener

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
)

func text(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, s) })
}

func newManager(t *testing.T) (*Manager, *stats.Store) {
	t.Helper()
	store := stats.NewStore()
	m := NewManager(slog.New(slog.DiscardHandler), store, 2*time.Second)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.Shutdown(ctx)
	})
	return m, store
}

func addrOf(t *testing.T, m *Manager, name string) string {
	t.Helper()
	for _, l := range m.Listeners() {
		if l.Name == name {
			return l.Address
		}
	}
	t.Fatalf("listener %q not running", name)
	return ""
}

// get fetches a URL with client, reporting whether the connection was reused.
func get(t *testing.T, client *http.Client, url string) (body string, reused bool) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
	}))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), reused
}

func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func TestUnchangedListenerKeepsItsSocketAndConnections(t *testing.T) {
	m, store := newManager(t)
	spec := Spec{Name: "a", Address: "127.0.0.1:0", Bind: true, Version: "1", Handler: text("one")}
	if err := m.Apply([]Spec{spec}); err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, m, "a")
	client := newClient(t)
	if body, _ := get(t, client, "http://"+addr+"/"); body != "one" {
		t.Fatalf("got %q", body)
	}
	spec.Handler = text("ignored: same version")
	if err := m.Apply([]Spec{spec, {Name: "b", Address: "127.0.0.1:0", Bind: true, Version: "1", Handler: text("b")}}); err != nil {
		t.Fatal(err)
	}
	if addrOf(t, m, "a") != addr {
		t.Fatal("listener a was rebound")
	}
	body, reused := get(t, client, "http://"+addr+"/")
	if body != "one" || !reused {
		t.Fatalf("got %q reused=%v", body, reused)
	}
	if store.Counter("listener_manager.listener_added").Value() != 2 {
		t.Fatal("listener_added not counted")
	}
}

func TestChangedListenerOnSameAddressServesNewConfigWithoutRebinding(t *testing.T) {
	m, _ := newManager(t)
	client := newClient(t)
	fixed := freePort(t)
	if err := m.Apply([]Spec{{Name: "f", Address: fixed, Bind: true, Version: "1", Handler: text("one")}}); err != nil {
		t.Fatal(err)
	}
	get(t, client, "http://"+fixed+"/")
	if err := m.Apply([]Spec{{Name: "f", Address: fixed, Bind: true, Version: "2", Handler: text("two")}}); err != nil {
		t.Fatal(err)
	}
	body, reused := get(t, client, "http://"+fixed+"/")
	if body != "two" || !reused {
		t.Fatalf("got %q reused=%v; want the new handler on the kept connection", body, reused)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestRemovedListenerStopsAcceptingAndDrainsInFlightRequests(t *testing.T) {
	m, store := newManager(t)
	entered, release := make(chan struct{}), make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "finished")
	})
	if err := m.Apply([]Spec{{Name: "a", Address: "127.0.0.1:0", Bind: true, Version: "1", Handler: slow}}); err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, m, "a")
	done := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			done <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- string(b)
	}()
	<-entered
	if err := m.Apply(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("removed listener still accepts connections")
	}
	if got := store.Gauge("listener_manager.total_listeners_draining").Value(); got != 1 {
		t.Fatalf("draining gauge %d", got)
	}
	close(release)
	if got := <-done; got != "finished" {
		t.Fatalf("in-flight request: %q", got)
	}
	if store.Counter("listener_manager.listener_removed").Value() != 1 {
		t.Fatal("listener_removed not counted")
	}
}

func TestBindFailureLeavesRunningListenersUntouched(t *testing.T) {
	m, _ := newManager(t)
	if err := m.Apply([]Spec{{Name: "a", Address: "127.0.0.1:0", Bind: true, Version: "1", Handler: text("one")}}); err != nil {
		t.Fatal(err)
	}
	addr := addrOf(t, m, "a")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	err = m.Apply([]Spec{
		{Name: "b", Address: "127.0.0.1:0", Bind: true, Version: "1", Handler: text("b")},
		{Name: "c", Address: busy.Addr().String(), Bind: true, Version: "1", Handler: text("c")},
	})
	if err == nil || !strings.Contains(err.Error(), `listener "c": bind`) {
		t.Fatalf("got %v", err)
	}
	if got := m.Listeners(); len(got) != 1 || got[0].Address != addr {
		t.Fatalf("listeners after failed update: %+v", got)
	}
	if body, _ := get(t, newClient(t), "http://"+addr+"/"); body != "one" {
		t.Fatalf("got %q", body)
	}
}

func TestListenerMayMoveToAnAddressAnotherIsLeaving(t *testing.T) {
	m, _ := newManager(t)
	fixed := freePort(t)
	if err := m.Apply([]Spec{{Name: "old", Address: fixed, Bind: true, Version: "1", Handler: text("old")}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply([]Spec{{Name: "new", Address: fixed, Bind: true, Version: "1", Handler: text("new")}}); err != nil {
		t.Fatal(err)
	}
	if body, _ := get(t, newClient(t), "http://"+fixed+"/"); body != "new" {
		t.Fatalf("got %q", body)
	}
}

func TestVirtualListenerBindsNothing(t *testing.T) {
	m, _ := newManager(t)
	if err := m.Apply([]Spec{{Name: "v", Address: "127.0.0.1:1", Bind: false, Version: "1", Handler: text("")}}); err != nil {
		t.Fatal(err)
	}
	if got := m.Listeners(); len(got) != 1 || got[0].Bind {
		t.Fatalf("got %+v", got)
	}
}

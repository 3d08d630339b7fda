package server

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

func upgradeListener(t *testing.T, upgradeConfigs string) string {
	return `
name: ws
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- filters:` + hcmFilter("ws", "ws", upgradeConfigs)
}

func TestWebSocketEchoesThroughTheProxy(t *testing.T) {
	echo := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) {
		var msg string
		for websocket.Message.Receive(c, &msg) == nil {
			if websocket.Message.Send(c, "echo: "+msg) != nil {
				return
			}
		}
	}))
	t.Cleanup(echo.Close)
	p := newProxy(t, Options{})
	mustApply(t, p, ClusterType, msgs(staticCluster("ws", echo.Listener.Addr().String())))
	mustApply(t, p, ListenerType, msgs(listenerYAML(t, upgradeListener(t, `      upgrade_configs: [{upgrade_type: websocket}]`), nil)))
	addr := listenerAddr(t, p, "ws")

	cfg, err := websocket.NewConfig("ws://"+addr+"/chat", "http://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	for i := range 3 {
		want := fmt.Sprintf("message %d", i)
		if err := websocket.Message.Send(conn, want); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(conn, &got); err != nil || got != "echo: "+want {
			t.Fatalf("got %q %v", got, err)
		}
	}
}

func TestUpgradeWithoutAnEnabledUpgradeConfigIsForbidden(t *testing.T) {
	up := newBackend(t, "up", nil)
	p := newProxy(t, Options{})
	mustApply(t, p, ClusterType, msgs(staticCluster("ws", up.addr)))
	mustApply(t, p, ListenerType, msgs(listenerYAML(t, upgradeListener(t, `      upgrade_configs: [{upgrade_type: websocket, enabled: false}, {upgrade_type: h2c}]`), nil)))
	addr := listenerAddr(t, p, "ws")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("got %d, want 403", resp.StatusCode)
	}
	if up.lastRequest() != nil {
		t.Fatal("the refused upgrade reached the upstream")
	}
	// A plain request on the same listener still goes through.
	if code, body, _ := do(t, keepAliveClient(t), "GET", "http://"+addr+"/", "", nil); code != 200 || !strings.Contains(body, "up") {
		t.Fatalf("plain request: %d %q", code, body)
	}
}

func TestWebSocketOutlivesItsRemovedListenerUntilTheDrainEnds(t *testing.T) {
	echo := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) {
		var msg string
		for websocket.Message.Receive(c, &msg) == nil {
			if websocket.Message.Send(c, msg) != nil {
				return
			}
		}
	}))
	t.Cleanup(echo.Close)
	p := newProxy(t, Options{DrainTimeout: 5 * time.Second})
	mustApply(t, p, ClusterType, msgs(staticCluster("ws", echo.Listener.Addr().String())))
	mustApply(t, p, ListenerType, msgs(listenerYAML(t, upgradeListener(t, `      upgrade_configs: [{upgrade_type: websocket}]`), nil)))
	addr := listenerAddr(t, p, "ws")
	conn, err := websocket.Dial("ws://"+addr+"/", "", "http://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	mustApply(t, p, ListenerType, nil)
	var got string
	if websocket.Message.Send(conn, "during drain") != nil || websocket.Message.Receive(conn, &got) != nil || got != "during drain" {
		t.Fatalf("the upgraded connection did not survive the start of the drain: %q", got)
	}
	// When the drain time is up the proxy closes it.
	if err := websocket.Message.Receive(conn, &got); err == nil {
		t.Fatalf("still open after the drain: %q", got)
	}
}

// A route's upgrade_configs override the connection manager's for the types it lists: /off refuses
// WebSocket the connection manager enables, and a type the connection manager disables can be
// switched on for one route.
func TestRouteUpgradeConfigsOverrideTheConnectionManagers(t *testing.T) {
	upgrades := make(chan string, 4)
	up := newBackend(t, "up", func(w http.ResponseWriter, r *http.Request) {
		upgrades <- r.URL.Path + " " + r.Header.Get("Upgrade")
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", r.Header.Get("Upgrade"))
		w.WriteHeader(http.StatusSwitchingProtocols)
	})
	p := newProxy(t, Options{})
	mustApply(t, p, ClusterType, msgs(staticCluster("ws", up.addr)))
	mustApply(t, p, ListenerType, msgs(listenerYAML(t, `
name: ws
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: ws
      upgrade_configs: [{upgrade_type: websocket}, {upgrade_type: custom, enabled: false}]
      route_config:
        virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
          - {match: {prefix: /off}, route: {cluster: ws, upgrade_configs: [{upgrade_type: websocket, enabled: false}]}}
          - {match: {prefix: /custom}, route: {cluster: ws, upgrade_configs: [{upgrade_type: custom, enabled: true}]}}
          - {match: {prefix: /}, route: {cluster: ws}}
      http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
`, nil)))
	addr := listenerAddr(t, p, "ws")
	for _, tc := range []struct {
		path, upgrade string
		want          int
	}{
		{"/chat", "websocket", http.StatusSwitchingProtocols},
		{"/off", "websocket", http.StatusForbidden},
		{"/custom", "custom", http.StatusSwitchingProtocols},
		{"/chat", "custom", http.StatusForbidden},
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", tc.path, tc.upgrade)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatalf("%s %s: %v", tc.path, tc.upgrade, err)
		}
		if resp.StatusCode != tc.want {
			t.Errorf("%s with Upgrade: %s: got %d, want %d", tc.path, tc.upgrade, resp.StatusCode, tc.want)
		}
	}
	close(upgrades)
	var reached []string
	for u := range upgrades {
		reached = append(reached, u)
	}
	if want := []string{"/chat websocket", "/custom custom"}; !slices.Equal(reached, want) {
		t.Errorf("upgrades that reached the upstream: %q, want %q", reached, want)
	}
}

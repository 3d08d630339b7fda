package rbac_test

import (
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/server"
)

// echoUpstream answers each connection with "<n>:<what it read>" after the client's FIN, and counts
// connections.
func echoUpstream(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				fmt.Fprintf(c, "%d:%s", len(b), b)
			}()
		}
	}()
	return ln.Addr().String(), &conns
}

// tcpProxy is a proxy with a TCP listener "tcp" whose chain runs the network RBAC filter with
// config rbac (YAML body), then tcp_proxy to the echo upstream.
func tcpProxy(t *testing.T, rbac string) (p *server.Proxy, addr string, upstreamConns *atomic.Int64) {
	t.Helper()
	up, conns := echoUpstream(t)
	p = newProxy(t)
	apply(t, p, server.ClusterType, staticCluster(t, "echo", up))
	apply(t, p, server.ListenerType, yamlTo(t, &listenerv3.Listener{}, `
name: tcp
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- filters:
  - name: envoy.filters.network.rbac
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
`+indent(rbac, "      ")+`
  - name: envoy.filters.network.tcp_proxy
    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: echo, cluster: echo}
`, nil))
	return p, listenerAddr(t, p, "tcp"), conns
}

// exchange writes msg, half-closes and reads the answer.
func exchange(t *testing.T, addr, msg string) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

func TestNetworkRBACLetsAllowedConnectionsThroughTheTCPProxy(t *testing.T) {
	p, addr, _ := tcpProxy(t, `
stat_prefix: tcp.
shadow_rules_stat_prefix: istio_dry_run_allow_
rules:
  policies:
    ns[foo]-policy[tcp]-rule[0]:
      permissions: [{and_rules: {rules: [{or_rules: {rules: [{destination_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}]}}]}}]
      principals: [{and_ids: {ids: [{or_ids: {ids: [{direct_remote_ip: {address_prefix: 127.0.0.1, prefix_len: 32}}]}}]}}]
shadow_rules:
  policies:
    ns[foo]-policy[dry-run]-rule[0]:
      permissions: [{destination_port: 1}]
      principals: [{any: true}]`)
	got, err := exchange(t, addr, "hello")
	if err != nil || got != "5:hello" {
		t.Fatalf("got %q %v, want the echo", got, err)
	}
	st := p.Stats()
	for name, want := range map[string]uint64{
		"tcp.rbac.allowed": 1,
		"tcp.rbac.denied":  0,
		"tcp.rbac.istio_dry_run_allow_shadow_denied":  1,
		"tcp.rbac.istio_dry_run_allow_shadow_allowed": 0,
	} {
		if got := st.Counter(name).Value(); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

func TestNetworkRBACClosesDeniedConnectionsBeforeDialling(t *testing.T) {
	p, addr, conns := tcpProxy(t, `
stat_prefix: tcp.
rules:
  action: DENY
  policies:
    ns[foo]-policy[deny-loopback]-rule[0]:
      permissions: [{any: true}]
      principals: [{and_ids: {ids: [{not_id: {remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}}]}}]`)
	if got, err := exchange(t, addr, "hello"); got != "" {
		t.Fatalf("a denied connection got %q (%v)", got, err)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the upstream saw %d connections", n)
	}
	if got := p.Stats().Counter("tcp.rbac.denied").Value(); got != 1 {
		t.Fatalf("tcp.rbac.denied = %d", got)
	}
}

func TestNetworkRBACRejectsWhatItCannotEnforce(t *testing.T) {
	p := newProxy(t)
	for name, cfg := range map[string]string{
		"filter_state principal": `
stat_prefix: tcp.
rules:
  policies:
    p: {permissions: [{any: true}], principals: [{filter_state: {key: io.istio.peer_principal, string_match: {exact: x}}}]}`,
		"CEL condition": `
stat_prefix: tcp.
rules:
  policies:
    p: {permissions: [{any: true}], principals: [{any: true}], condition: {const_expr: {bool_value: true}}}`,
	} {
		l := yamlTo(t, &listenerv3.Listener{}, `
name: tcp
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- filters:
  - name: envoy.filters.network.rbac
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
`+indent(cfg, "      ")+`
  - name: envoy.filters.network.tcp_proxy
    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: echo, cluster: echo}
`, nil)
		err := p.OnResources(server.ListenerType, msgs(l))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

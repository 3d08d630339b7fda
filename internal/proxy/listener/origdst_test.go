package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/xdsconfig"
)

// where is a connection handler that says which chain serves the connection and what local address
// it matched and sees.
type where string

func (w where) ServeConn(_ context.Context, c net.Conn, info *ConnInfo) {
	fmt.Fprintf(c, "%s matched=%s local=%s", w, info.Local, c.LocalAddr())
}

// fakeOriginalDst stands in for SO_ORIGINAL_DST (which needs an iptables REDIRECT; the netns test
// covers the real one): each client source IP (127.0.0.N) has its original destination.
func fakeOriginalDst(dsts map[netip.Addr]netip.AddrPort) func(net.Conn) (netip.AddrPort, error) {
	return func(c net.Conn) (netip.AddrPort, error) {
		src := addrPort(c.RemoteAddr()).Addr()
		if d, ok := dsts[src]; ok {
			return d, nil
		}
		return netip.AddrPort{}, errors.New("not redirected")
	}
}

func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestUseOriginalDstHandsConnectionsToTheListenerOnTheirOriginalDestination(t *testing.T) {
	m, store := newManager(t)
	m.origDst = fakeOriginalDst(map[netip.Addr]netip.AddrPort{
		netip.MustParseAddr("127.0.0.11"): netip.MustParseAddrPort("10.0.0.5:80"),
		netip.MustParseAddr("127.0.0.12"): netip.MustParseAddrPort("10.0.0.6:80"),
		netip.MustParseAddr("127.0.0.13"): netip.MustParseAddrPort("10.0.0.7:7000"),
		netip.MustParseAddr("127.0.0.14"): netip.MustParseAddrPort("10.0.0.8:1234"),
	})
	specs := []Spec{
		{Name: "virtualOutbound", Address: "127.0.0.1:0", Bind: true, UseOriginalDst: true, Version: "1",
			Chains:  []Chain{{Name: "7000", Match: xdsconfig.FilterChainMatch{DestinationPort: 7000}, Conn: where("port-7000-chain")}},
			Default: &Chain{Conn: where("passthrough")}},
		{Name: "10.0.0.5_80", Address: "10.0.0.5:80", Version: "1", Default: &Chain{Conn: where("exact")}},
		{Name: "0.0.0.0_80", Address: "0.0.0.0:80", Version: "1",
			Chains: []Chain{{Name: "ten", Match: xdsconfig.FilterChainMatch{PrefixRanges: []netip.Prefix{netip.MustParsePrefix("10.0.0.6/32")}}, Conn: where("wildcard-prefix-chain")}}},
		{Name: "plain", Address: "127.0.0.1:0", Bind: true, Version: "1", Default: &Chain{Conn: where("plain")}},
	}
	if err := m.Apply(specs); err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Listeners() {
		if !l.Bind && l.Address != "10.0.0.5:80" && l.Address != "0.0.0.0:80" {
			t.Errorf("listener %s: address %s", l.Name, l.Address)
		}
	}
	outbound := addrOf(t, m, "virtualOutbound")
	outPort := netip.MustParseAddrPort(outbound).Port()
	for _, tc := range []struct{ src, want string }{
		{"127.0.0.11", "exact matched=10.0.0.5:80 local=10.0.0.5:80"},
		{"127.0.0.12", "wildcard-prefix-chain matched=10.0.0.6:80 local=10.0.0.6:80"},
		{"127.0.0.13", "port-7000-chain matched=10.0.0.7:7000 local=10.0.0.7:7000"},
		{"127.0.0.14", "passthrough matched=10.0.0.8:1234 local=10.0.0.8:1234"},
		// Not redirected: the listener serves it with its own address.
		{"127.0.0.15", fmt.Sprintf("passthrough matched=127.0.0.1:%d local=127.0.0.1:%d", outPort, outPort)},
	} {
		if got := readAll(t, dialFrom(t, tc.src, outbound)); got != tc.want {
			t.Errorf("from %s: got %q, want %q", tc.src, got, tc.want)
		}
	}
	// A listener without use_original_dst never hands off, even for a redirected connection.
	if got := readAll(t, dialFrom(t, "127.0.0.11", addrOf(t, m, "plain"))); !strings.HasPrefix(got, "plain ") {
		t.Errorf("plain listener: got %q", got)
	}
	for name, want := range map[string]uint64{
		"listener.10.0.0.5_80.downstream_cx_total":                                  1,
		"listener.0.0.0.0_80.downstream_cx_total":                                   1,
		"listener." + fmt.Sprintf("127.0.0.1_%d", outPort) + ".downstream_cx_total": 3,
	} {
		if got := store.Counter(name).Value(); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}

	// Once the exact listener is gone, its destination falls to the wildcard one; once that is gone
	// too, to the accepting listener's own chains.
	if err := m.Apply([]Spec{specs[0], specs[2], specs[3]}); err != nil {
		t.Fatal(err)
	}
	// 0.0.0.0_80 has no chain for 10.0.0.5 and no default chain: the connection is closed, as
	// Envoy does, not served by the accepting listener.
	if got := readAll(t, dialFrom(t, "127.0.0.11", outbound)); got != "" {
		t.Errorf("after removing 10.0.0.5_80: got %q, want the wildcard listener to close it", got)
	}
	if n := store.Counter("listener.0.0.0.0_80.no_filter_chain_match").Value(); n != 1 {
		t.Errorf("listener.0.0.0.0_80.no_filter_chain_match = %d, want 1", n)
	}
	if err := m.Apply([]Spec{specs[0], specs[3]}); err != nil {
		t.Fatal(err)
	}
	if got, want := readAll(t, dialFrom(t, "127.0.0.11", outbound)), "passthrough matched=10.0.0.5:80"; !strings.HasPrefix(got, want) {
		t.Errorf("after removing 0.0.0.0_80: got %q, want %q", got, want)
	}
}

func TestVirtualListenerServesHTTPHandedToIt(t *testing.T) {
	m, _ := newManager(t)
	m.origDst = fakeOriginalDst(map[netip.Addr]netip.AddrPort{
		netip.MustParseAddr("127.0.0.21"): netip.MustParseAddrPort("10.1.2.3:9080"),
	})
	err := m.Apply([]Spec{
		{Name: "virtualOutbound", Address: "127.0.0.1:0", Bind: true, UseOriginalDst: true, Version: "1", Default: &Chain{Conn: where("passthrough")}},
		{Name: "0.0.0.0_9080", Address: "0.0.0.0:9080", Version: "1", Handler: text("http on 9080")},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := dialFrom(t, "127.0.0.21", addrOf(t, m, "virtualOutbound"))
	if _, err := fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: reviews:9080\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c); !strings.Contains(got, "200 OK") || !strings.Contains(got, "http on 9080") {
		t.Fatalf("got %q, want the 0.0.0.0_9080 HTTP chain's response", got)
	}
}

func TestOriginalDstListenerFilterRestoresTheAddressWithoutHandoff(t *testing.T) {
	m, _ := newManager(t)
	m.origDst = fakeOriginalDst(map[netip.Addr]netip.AddrPort{
		netip.MustParseAddr("127.0.0.31"): netip.MustParseAddrPort("10.0.0.9:9080"),
		netip.MustParseAddr("127.0.0.32"): netip.MustParseAddrPort("10.0.0.9:5555"),
	})
	err := m.Apply([]Spec{
		{Name: "virtualInbound", Address: "127.0.0.1:0", Bind: true, Version: "1",
			Filters: xdsconfig.ListenerFilters{OriginalDst: true},
			Chains:  []Chain{{Name: "9080", Match: xdsconfig.FilterChainMatch{DestinationPort: 9080}, Conn: where("inbound-9080")}},
			Default: &Chain{Conn: where("inbound-passthrough")}},
		// An outbound listener on the same port must not take inbound traffic.
		{Name: "0.0.0.0_9080", Address: "0.0.0.0:9080", Version: "1", Default: &Chain{Conn: where("outbound-9080")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	in := addrOf(t, m, "virtualInbound")
	for _, tc := range []struct{ src, want string }{
		{"127.0.0.31", "inbound-9080 matched=10.0.0.9:9080 local=10.0.0.9:9080"},
		{"127.0.0.32", "inbound-passthrough matched=10.0.0.9:5555 local=10.0.0.9:5555"},
	} {
		if got := readAll(t, dialFrom(t, tc.src, in)); got != tc.want {
			t.Errorf("from %s: got %q, want %q", tc.src, got, tc.want)
		}
	}
}

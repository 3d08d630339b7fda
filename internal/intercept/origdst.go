package intercept

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h): the destination a connection had
// before a nat REDIRECT rewrote it.
const soOriginalDst = 80

var loopback = netip.MustParseAddr("127.0.0.1")

// OriginalDst returns where a redirected connection was going, read from conntrack with
// getsockopt(SOL_IP, SO_ORIGINAL_DST). For a connection that was not redirected it is the
// connection's own local address.
func OriginalDst(conn net.Conn) (netip.AddrPort, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, errors.New("original destination: not a socket connection")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var (
		mreq *syscall.IPv6Mreq
		gerr error
	)
	// The option fills a sockaddr_in (16 bytes); IPv6Mreq is the 20-byte struct syscall can read it into.
	if err := raw.Control(func(fd uintptr) {
		mreq, gerr = syscall.GetsockoptIPv6Mreq(int(fd), syscall.SOL_IP, soOriginalDst)
	}); err != nil {
		return netip.AddrPort{}, err
	}
	if gerr != nil {
		return netip.AddrPort{}, &net.OpError{Op: "getsockopt SO_ORIGINAL_DST", Net: "tcp", Err: gerr}
	}
	b := mreq.Multiaddr
	port := binary.BigEndian.Uint16(b[2:4])
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}), port), nil
}

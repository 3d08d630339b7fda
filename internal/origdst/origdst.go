// Package origdst reads a redirected TCP connection's original destination (SO_ORIGINAL_DST), what
// Envoy's use_original_dst and ORIGINAL_DST clusters are built on. It depends on nothing but the
// standard library, so both the proxy and the iptables tooling use it.
package origdst

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"unsafe"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h): the destination a connection had
// before a nat REDIRECT rewrote it.
const soOriginalDst = 80

var errNotSocket = errors.New("original destination: not a socket connection")

// Lookup returns where a redirected connection was going, read from conntrack with
// getsockopt(SOL_IP, SO_ORIGINAL_DST). For a connection that was not redirected it is the
// connection's own local address; for one conntrack does not know (no nat table) it fails.
func Lookup(conn net.Conn) (netip.AddrPort, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, errNotSocket
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	// A sockaddr_in: family, port (big endian), IPv4 address, padding.
	var (
		sa    [16]byte
		errno syscall.Errno
	)
	if err := raw.Control(func(fd uintptr) {
		n := uint32(len(sa))
		_, _, errno = syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.SOL_IP, soOriginalDst,
			uintptr(unsafe.Pointer(&sa[0])), uintptr(unsafe.Pointer(&n)), 0)
	}); err != nil {
		return netip.AddrPort{}, err
	}
	if errno != 0 {
		return netip.AddrPort{}, &net.OpError{Op: "getsockopt SO_ORIGINAL_DST", Net: "tcp", Err: errno}
	}
	port := binary.BigEndian.Uint16(sa[2:4])
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{sa[4], sa[5], sa[6], sa[7]}), port), nil
}

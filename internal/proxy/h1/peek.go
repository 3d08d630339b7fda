package h1

import (
	"crypto/tls"
	"syscall"
)

// peerClosed reports whether the upstream closed (or wrote to) pc while it sat in the pool, with
// one non-blocking MSG_PEEK: Envoy's event loop notices such closes before reuse, and so must we,
// because a request written to a connection the upstream already closed fails with nothing read,
// and a non-idempotent one must not be replayed. The remaining window (a close racing the write)
// is the one Envoy has too.
func (pc *pconn) peerClosed() bool {
	if pc.br.Buffered() > 0 {
		return true // unsolicited bytes: out of step
	}
	if pc.raw == nil {
		c := pc.conn
		// Over TLS, pending bytes may be a record the client has not read yet (a session
		// ticket), not a response: only a close counts there.
		tc, isTLS := c.(*tls.Conn)
		if isTLS {
			c = tc.NetConn()
		}
		sc, ok := c.(syscall.Conn)
		if !ok {
			return false
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		pc.raw = raw
		pc.peek = func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), pc.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			pc.peekClosed = (n > 0 && !isTLS) || (err == nil && n == 0) || (err != nil && err != syscall.EAGAIN && err != syscall.EINTR)
			return true
		}
	}
	pc.peekClosed = false
	if err := pc.raw.Read(pc.peek); err != nil {
		return true
	}
	return pc.peekClosed
}

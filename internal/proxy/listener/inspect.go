package listener

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/stats"
)

// ConnInfo is what is known about a connection when its filter chain is chosen: its addresses
// and what the listener filters found.
type ConnInfo struct {
	// Local is the address the connection was accepted on, or for a use_original_dst listener the
	// connection's original destination. It is what destination_port and prefix_ranges match.
	Local, Remote netip.AddrPort
	// ServerName is the SNI the TLS inspector found, in lower case.
	ServerName string
	// TransportProtocol is "tls" when the TLS inspector saw a ClientHello, else "raw_buffer".
	TransportProtocol string
	// ApplicationProtocols are the ALPN protocols a TLS client offered, or what the HTTP
	// inspector detected ("http/1.1", "http/1.0", "h2c").
	ApplicationProtocols []string
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// conn is an accepted connection: bytes the listener filters peeked at are read again first, and
// closing it counts it gone from the listener's active connections exactly once.
type conn struct {
	net.Conn
	peeked  []byte
	once    sync.Once
	onClose func()
	// local, when set, is the original destination a use_original_dst listener found: what
	// LocalAddr reports, so that HTTP, RBAC and ORIGINAL_DST clusters see it. It lives in the conn,
	// with its IP bytes, so setting it allocates nothing.
	local   net.TCPAddr
	localIP [16]byte
}

// setLocal makes LocalAddr report dst.
func (c *conn) setLocal(dst netip.AddrPort) {
	a := dst.Addr()
	var n int
	if a.Is4() {
		a4 := a.As4()
		n = copy(c.localIP[:], a4[:])
	} else {
		a16 := a.As16()
		n = copy(c.localIP[:], a16[:])
	}
	c.local = net.TCPAddr{IP: c.localIP[:n], Port: int(dst.Port())}
}

func (c *conn) LocalAddr() net.Addr {
	if c.local.IP != nil {
		return &c.local
	}
	return c.Conn.LocalAddr()
}

func (c *conn) Read(p []byte) (int, error) {
	if len(c.peeked) > 0 {
		n := copy(p, c.peeked)
		c.peeked = c.peeked[n:]
		if len(c.peeked) == 0 {
			c.peeked = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *conn) Close() error {
	c.once.Do(c.onClose)
	return c.Conn.Close()
}

// CloseWrite half-closes a TCP connection, for proxies passing a FIN on.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// peekMore reads once more from the socket into the peeked bytes.
func (c *conn) peekMore() error {
	if cap(c.peeked)-len(c.peeked) < 512 {
		grown := make([]byte, len(c.peeked), max(2*cap(c.peeked), 2048))
		copy(grown, c.peeked)
		c.peeked = grown
	}
	n, err := c.Conn.Read(c.peeked[len(c.peeked):cap(c.peeked)])
	c.peeked = c.peeked[:len(c.peeked)+n]
	if n > 0 {
		return nil
	}
	return err
}

// inspectStats are the listener filters' Envoy-named counters.
type inspectStats struct {
	tlsFound, tlsNotFound, sniFound, sniNotFound, alpnFound, alpnNotFound *stats.Counter
	http10Found, http11Found, http2Found, httpNotFound                    *stats.Counter
}

func newInspectStats(s *stats.Store) inspectStats {
	return inspectStats{
		tlsFound:     s.Counter("tls_inspector.tls_found"),
		tlsNotFound:  s.Counter("tls_inspector.tls_not_found"),
		sniFound:     s.Counter("tls_inspector.sni_found"),
		sniNotFound:  s.Counter("tls_inspector.sni_not_found"),
		alpnFound:    s.Counter("tls_inspector.alpn_found"),
		alpnNotFound: s.Counter("tls_inspector.alpn_not_found"),
		http10Found:  s.Counter("http_inspector.http10_found"),
		http11Found:  s.Counter("http_inspector.http11_found"),
		http2Found:   s.Counter("http_inspector.http2_found"),
		httpNotFound: s.Counter("http_inspector.http_not_found"),
	}
}

var errInspectTimeout = errors.New("listener filters timed out")

// inspect runs the TLS and HTTP inspectors over c's first bytes, within timeout (0: none). It
// returns errInspectTimeout when the time ran out, which the caller may choose to continue from.
func inspect(c *conn, info *ConnInfo, tlsInspector, httpInspector bool, timeout time.Duration, st *inspectStats) error {
	if timeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	}
	err := func() error {
		if tlsInspector {
			if err := inspectTLS(c, info, st); err != nil {
				return err
			}
		}
		if httpInspector && info.TransportProtocol != "tls" {
			return inspectHTTP(c, info, st)
		}
		return nil
	}()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errInspectTimeout
	}
	return err
}

func inspectTLS(c *conn, info *ConnInfo, st *inspectStats) error {
	for {
		h, state := parseClientHello(c.peeked)
		switch {
		case state == helloDone:
			st.tlsFound.Inc()
			info.TransportProtocol = "tls"
			info.ServerName = lower(h.serverName)
			info.ApplicationProtocols = h.alpn
			if h.serverName != "" {
				st.sniFound.Inc()
			} else {
				st.sniNotFound.Inc()
			}
			if len(h.alpn) > 0 {
				st.alpnFound.Inc()
			} else {
				st.alpnNotFound.Inc()
			}
			return nil
		case state == helloNotTLS, len(c.peeked) >= maxHelloLen:
			// Not TLS: the connection goes on as raw_buffer, as with Envoy.
			st.tlsNotFound.Inc()
			return nil
		}
		if err := c.peekMore(); err != nil {
			return err
		}
	}
}

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxRequestLine bounds how far the HTTP inspector looks for the end of the request line.
const maxRequestLine = 8 << 10

func inspectHTTP(c *conn, info *ConnInfo, st *inspectStats) error {
	for {
		b := c.peeked
		n := min(len(b), len(h2Preface))
		switch {
		case n > 0 && string(b[:n]) == h2Preface[:n]:
			if n == len(h2Preface) {
				st.http2Found.Inc()
				info.ApplicationProtocols = []string{"h2c"}
				return nil
			}
		case bytes.IndexByte(b, '\n') >= 0:
			line := b[:bytes.IndexByte(b, '\n')]
			line = bytes.TrimSuffix(line, []byte{'\r'})
			switch {
			case bytes.HasSuffix(line, []byte(" HTTP/1.1")):
				info.ApplicationProtocols = []string{"http/1.1"}
				st.http11Found.Inc()
			case bytes.HasSuffix(line, []byte(" HTTP/1.0")):
				info.ApplicationProtocols = []string{"http/1.0"}
				st.http10Found.Inc()
			default:
				st.httpNotFound.Inc()
			}
			return nil
		case len(b) >= maxRequestLine:
			st.httpNotFound.Inc()
			return nil
		}
		if err := c.peekMore(); err != nil {
			return err
		}
	}
}

// lower is strings.ToLower without the allocation when s is lower case already, as SNI is.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

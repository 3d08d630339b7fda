package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
)

// The accept loop and each accepted connection's path: original-destination handoff,
// listener filters, filter chain match, and the chain's handler.

func (m *Manager) serve(l *running) {
	if l.stopped {
		return
	}
	set, _ := m.buildSet(l.spec, nil)
	l.set.Store(set)
	if l.ln == nil {
		return // served by handoff from a use_original_dst listener
	}
	m.log.Info("listener started", "listener", l.name, "address", l.ln.Addr().String())
	go func() {
		defer close(l.served)
		for {
			c, err := l.ln.Accept()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				if !errors.Is(err, net.ErrClosed) {
					m.log.Error("listener stopped", "listener", l.name, "error", err)
				}
				return
			}
			l.conns.add(c)
			go m.handle(l, c)
		}
	}()
}

// handle runs the listener filters on a new connection, picks its filter chain, terminates TLS
// when the chain says so, and hands the connection to the chain.
//
// A listener with the original_dst listener filter first makes the connection's original
// destination its local address. A use_original_dst listener does that too, and hands the
// connection to the listener without a socket on that address, if any: its listener filters,
// chains and counters serve it from then on, while the accepting listener still tracks it for
// draining (and its context ends a TCP proxy's connections).
func (m *Manager) handle(accepting *running, raw net.Conn) {
	l := accepting
	c := &conn{Conn: raw}
	handedOff := false
	defer func() {
		if !handedOff {
			accepting.conns.done(raw)
		}
	}()
	set := l.set.Load()
	info := ConnInfo{Local: addrPort(raw.LocalAddr()), Remote: addrPort(raw.RemoteAddr()), TransportProtocol: "raw_buffer"}
	if set.useOriginalDst || set.filters.OriginalDst {
		if dst, err := m.origDst(raw); err == nil && dst.IsValid() {
			dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
			if dst != info.Local {
				info.Local = dst
				c.setLocal(dst)
			}
			// The original_dst listener filter alone restores the address; use_original_dst also
			// hands the connection over.
			if t := m.handoffTarget(dst); t != nil && set.useOriginalDst {
				if ts := t.set.Load(); ts != nil {
					l, set = t, ts
				}
			}
		} else if err != nil {
			m.log.Debug("original destination unknown; serving on the accepting listener", "listener", l.name, "error", err)
		}
	}
	l.cxTotal.Inc()
	l.cxActive.Inc()
	c.onClose = l.cxActive.Dec
	if f := set.filters; f.TLSInspector || f.HTTPInspector {
		err := inspect(c, &info, f.TLSInspector, f.HTTPInspector, f.Timeout, &m.inspect)
		switch {
		case errors.Is(err, errInspectTimeout):
			l.preTimeout.Inc()
			if !f.ContinueOnTimeout {
				_ = c.Close()
				return
			}
		case err != nil:
			_ = c.Close()
			return
		}
	}
	rc := selectChain(set.chains, &info)
	if rc == nil {
		rc = set.def
	}
	if rc == nil {
		l.noChain.Inc()
		m.log.Debug("no filter chain matches the connection", "listener", l.name, "remote", info.Remote,
			"server_name", info.ServerName, "transport", info.TransportProtocol)
		_ = c.Close()
		return
	}
	var nc net.Conn = c
	if rc.cfg.TLS != nil {
		tc := tls.Server(c, rc.cfg.TLS)
		ctx, cancel := l.ctx, context.CancelFunc(func() {})
		if t := rc.cfg.TLSHandshakeTimeout; t > 0 {
			ctx, cancel = context.WithTimeout(ctx, t)
		}
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			l.tlsFail.Inc()
			m.log.Debug("TLS handshake failed", "listener", l.name, "remote", info.Remote, "error", err)
			_ = tc.Close()
			return
		}
		l.tlsOK.Inc()
		if info.ServerName == "" {
			info.ServerName = lower(tc.ConnectionState().ServerName)
		}
		nc = tc
	}
	if rc.http != nil {
		// The HTTP server owns the connection now, and drains it; the listener still counts it
		// until it closes, so upgraded (hijacked) connections get the drain time and no more.
		handedOff = true
		c.onClose = func() {
			l.cxActive.Dec()
			accepting.conns.done(raw)
		}
		rc.http.srv.ServeConn(nc)
		return
	}
	rc.cfg.Conn.ServeConn(accepting.ctx, nc, &info)
	_ = nc.Close()
}

package upstream

import (
	"context"
	"crypto/tls"
	"net"
	"time"
)

// TLS is a cluster's upstream TLS origination (Envoy's UpstreamTlsContext), parsed once.
type TLS struct {
	// Config carries the client certificate, the verification (done in VerifyConnection, since
	// Envoy checks the chain and SANs but never the host name unless asked) and the cipher settings.
	// It is shared and never modified; each cluster clones it to add its own session cache.
	Config *tls.Config
	// SNI is the server name sent; empty sends none, as Envoy.
	SNI string
	// ALPN is what the cluster offers; empty means by the cluster's protocol ("h2" or "http/1.1"),
	// as Envoy's HTTP connection pools do.
	ALPN []string
	// Sessions caches TLS sessions for resumption (max_session_keys; nil disables it). It belongs to
	// the parsed cluster config, so a cluster keeps it as long as its config is unchanged.
	Sessions tls.ClientSessionCache
}

// clientConfig returns a TLS client config of t for connections speaking proto ("h2",
// "http/1.1", or "" for raw TCP), with its session cache; nil for plaintext.
func clientConfig(t *TLS, proto string) *tls.Config {
	if t == nil {
		return nil
	}
	cfg := t.Config.Clone()
	cfg.ServerName = t.SNI
	cfg.ClientSessionCache = t.Sessions
	switch {
	case len(t.ALPN) > 0 && proto == "h2":
		// The transport speaks h2 whatever the server picks, so only h2 may be offered.
		cfg.NextProtos = []string{"h2"}
	case len(t.ALPN) > 0 && proto == "http/1.1":
		cfg.NextProtos = []string{"http/1.1"}
	case len(t.ALPN) > 0:
		cfg.NextProtos = t.ALPN
	case proto != "":
		cfg.NextProtos = []string{proto}
	}
	return cfg
}

// tlsClient wraps conn in TLS to the cluster and completes the handshake within the connect
// timeout; a failed handshake is a connect failure, as Envoy counts it.
func (c *Cluster) tlsClient(ctx context.Context, conn net.Conn, cfg *tls.Config, deadline time.Time) (net.Conn, error) {
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return tc, nil
}

// withTLS wraps dial so that it originates TLS, when the cluster (or, with
// transport_socket_matches, the host's transport) says so. The transport using it still believes it
// speaks plaintext (HTTP/1.1, or HTTP/2 with prior knowledge), which is exactly what it must write
// inside the TLS connection once ALPN has agreed on that protocol.
// proto is what the connections carry ("h2", "http/1.1", or "" for raw TCP).
func (c *Cluster) withTLS(dial dialFunc, proto string) dialFunc {
	// One config per transport: index 0 is the cluster's transport_socket.
	cfgs := []*tls.Config{clientConfig(c.cfg.TLS, proto)}
	for _, m := range c.cfg.TransportMatches {
		cfgs = append(cfgs, clientConfig(m.TLS, proto))
	}
	if len(cfgs) == 1 && cfgs[0] == nil {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ts, _, _, _ := c.transportTarget(addr)
		cfg := cfgs[0]
		if ts > 0 && ts < len(cfgs) {
			cfg = cfgs[ts]
		}
		conn, err := dial(ctx, network, addr)
		if err != nil || cfg == nil {
			return conn, err
		}
		if err != nil {
			return nil, err
		}
		tc, err := c.tlsClient(ctx, conn, cfg, time.Now().Add(c.cfg.ConnectTimeout))
		if err != nil {
			c.Stats.CxConnectFail.Inc()
			return nil, &ConnectError{Address: addr, Err: err}
		}
		return tc, nil
	}
}

// Dial opens a connection to host for a raw TCP proxy: within the cluster's connect timeout, over
// TLS when the cluster originates it, counted in the cluster's upstream_cx_* stats.
// It is the HTTP transports' dialer, so max_connections and the per-host counters cover TCP
// proxy connections too, as in Envoy.
func (c *Cluster) Dial(ctx context.Context, host *Host) (net.Conn, error) {
	return c.withTLS(c.dialer(), "")(ctx, "tcp", host.Target())
}

// CloseWrite half-closes the connection when the one underneath can (TCP, TLS), so a TCP proxy can
// pass a FIN on.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Package listener owns trellis-proxy's listening sockets: it reconciles the running listeners with
// the desired set after every LDS update, the way Envoy's listener manager does, and hands each
// accepted connection to one of the listener's filter chains.
//
// Per connection: the listener filters (tls_inspector: SNI and ALPN peeked from the ClientHello;
// http_inspector: HTTP/1.x or h2c prior knowledge) read the first bytes without consuming them,
// within listener_filters_timeout; the filter chain is chosen by Envoy's FilterChainMatch order
// (match.go), else the default chain, else the connection is closed; the chain terminates TLS if it
// says so and serves the connection with HTTP (a ConnServer: the proxy's own HTTP/1.1 codec,
// net/http for HTTP/2 over TLS; see NewConnServer) or a connection handler (the TCP proxy).
//
//   - A listener whose config did not change keeps its socket and its connections.
//   - A changed listener on the same address keeps its socket. An HTTP chain that keeps its name,
//     match, codec and idle timeout keeps its server and connections, which serve the new handler; other
//     HTTP chains' servers drain. TCP connections keep running with the handler they started with.
//   - A listener that is removed or moves to another address stops accepting at once and drains:
//     requests in flight complete (keep-alive connections are closed after their current response),
//     TCP connections may go on, within the drain timeout, after which remaining connections are
//     closed.
//   - Drain (Envoy's /drain_listeners, and shutdown) stops every listener, or the inbound ones, at
//     once; or gracefully: for a drain period they keep accepting while every response closes its
//     connection (HTTP/1 Connection: close, HTTP/2 GOAWAY), then they stop.
//   - New sockets are bound before anything else changes, so an update that cannot bind (address in
//     use) fails as a whole and leaves the running listeners untouched.
//
// It takes its configuration types (filter chain matches, codec) from xdsconfig; it must not depend
// on Envoy protos, on the routing or upstream packages, or on the control plane.
package listener

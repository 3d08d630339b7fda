// Package listener owns trellis-proxy's listening sockets: it reconciles the running listeners with
// the desired set after every LDS update, the way Envoy's listener manager does.
//
//   - A listener whose config did not change keeps its socket and its connections.
//   - A changed listener on the same address keeps its socket; new requests use the new handler
//     while requests under way finish with the old one.
//   - A listener that is removed or moves to another address stops accepting at once and drains:
//     requests in flight complete (keep-alive connections are closed after their current response)
//     within the drain timeout, after which remaining connections are closed.
//   - Drain (Envoy's /drain_listeners, and shutdown) stops every listener, or the inbound ones, at
//     once; or gracefully: for a drain period they keep accepting while every response closes its
//     connection (HTTP/1 Connection: close, HTTP/2 GOAWAY), then they stop.
//   - New sockets are bound before anything else changes, so an update that cannot bind (address in
//     use) fails as a whole and leaves the running listeners untouched.
//
// It must not depend on Envoy protos, on the routing or upstream packages, or on the control plane.
package listener

// Package hcm is trellis-proxy's HTTP connection manager and router. For each request on a listener
// it finds the route (internal/proxy/route), runs the HTTP filter chain (internal/proxy/filters:
// fault, CORS, local rate limit, ...), then either answers itself (redirect, direct response) or
// picks a cluster and a host (internal/proxy/upstream), forwards the request with Envoy's header
// handling, retries as the route's retry policy allows (a fresh host and a replayed body each try),
// sends shadow copies to mirror clusters, and streams the response back. When it cannot, it answers
// with Envoy's local replies (404 no route, 503 no cluster / no healthy upstream / connect failure,
// 504 timeout), as trailers-only gRPC responses to gRPC clients.
//
// Every request gets a streaminfo.Info (response flags, response code details, upstream, bytes,
// timings) in a pooled per-request struct; HTTPConnectionManager.OnComplete receives it when the
// request is done (access logs). It keeps the http.<stat_prefix>.* and cluster.<name>.* stats.
//
// HTTP Upgrade requests (WebSocket) are forwarded when the connection manager's upgrade_configs
// enable their type, and spliced after 101 (upgrade.go); others are refused with 403.
//
// A Handler is immutable. The routes and clusters it uses come from a Snapshot it loads once per
// request, so a config push never changes a request already under way. With no HTTP filters
// configured the filter chain costs nothing per request.
//
// Timeouts: the route timeout bounds every try together; x-envoy-upstream-rq-timeout-ms and
// x-envoy-upstream-rq-per-try-timeout-ms from the downstream replace the route's values (Envoy
// honours them from trusted downstreams; trellis-proxy has no notion of an untrusted one yet) and
// are never forwarded. A gRPC request's grpc-timeout replaces the route timeout when the route sets
// max_grpc_timeout or max_stream_duration.grpc_timeout_header_max.
//
// It serves through net/http for now; routing and load balancing live in packages that do not, so a
// later codec can replace this one. It must not depend on Envoy protos or the control plane.
package hcm

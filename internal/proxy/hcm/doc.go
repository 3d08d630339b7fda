// Package hcm is trellis-proxy's HTTP connection manager and router: for each request on a listener it
// finds the route (internal/proxy/route), picks a cluster and a host (internal/proxy/upstream),
// forwards the request with Envoy's header handling, streams the response back, answers with Envoy's
// local replies when it cannot (404 no route, 503 no cluster / no healthy upstream / connect failure,
// 504 timeout), and keeps the http.<stat_prefix>.* and cluster.<name>.* stats.
//
// HTTP Upgrade requests (WebSocket) are forwarded when the connection manager's upgrade_configs
// enable their type, and spliced after 101 (upgrade.go); others are refused with 403.
//
// A Handler is immutable. The routes and clusters it uses come from a Snapshot it loads once per
// request, so a config push never changes a request already under way.
//
// It serves through net/http for now; routing and load balancing live in packages that do not, so a
// later codec can replace this one. It must not depend on Envoy protos or the control plane.
package hcm

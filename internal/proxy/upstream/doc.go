// Package upstream is trellis-proxy's cluster manager side: a Cluster is a named set of endpoints,
// a load balancer choosing among them, and a pool of keep-alive connections to them.
//
// A Cluster is built from a Config (which internal/proxy/xdsconfig makes from Envoy's Cluster) and
// given endpoints with SetEndpoints (from the inline load_assignment or from EDS). Endpoint updates
// swap an immutable host set atomically; the load balancer's position and each host's counters
// survive them, and the owner keeps the same *Cluster across config pushes that do not change the
// cluster itself, so connection pools and LB state are not reset by unrelated changes.
//
// Connections use net/http's Transport for now (HTTP/1.1 keep-alive, or cleartext HTTP/2 for
// clusters configured for it); the load-balancing code does not depend on it.
//
// It must not depend on Envoy protos or on the control plane.
package upstream

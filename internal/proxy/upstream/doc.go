// Package upstream is trellis-proxy's cluster manager side: a Cluster is a named set of endpoints,
// a load balancer choosing among them, circuit breakers, outlier detection, active health checks,
// and a pool of keep-alive connections, each following Envoy's semantics.
//
// A Cluster is built from a Config (which internal/proxy/xdsconfig makes from Envoy's Cluster) and
// given endpoints with SetEndpoints (from the inline load_assignment or from EDS). Hosts are kept
// by address across endpoint updates, so their counters, health-check sessions, outlier state
// (consecutive failures, ejections) survive EDS pushes; the owner keeps the same *Cluster across
// config pushes that do not change the cluster itself.
//
// Files: host.go (a host and its Envoy health flags), lb.go (priority load with the
// overprovisioning factor, panic threshold, locality weights, round robin, random, least request),
// hash.go (ring hash and Maglev tables), circuit.go (max_connections, max_pending_requests,
// max_requests, max_retries), outlier.go (consecutive 5xx / gateway / local-origin failures,
// success rate, failure percentage, ejection and its timer), healthcheck.go (one HTTP or TCP
// checker goroutine per host). The load balancer's view is an immutable host set rebuilt when
// endpoints or health change, so picking a host does not allocate. Close stops every goroutine a
// cluster owns.
//
// Connections use net/http's Transport for now; limits are enforced outside it (a request slot
// before the round trip, connection slots in the dialer), so another RoundTripper can replace it.
//
// It must not depend on Envoy protos or on the control plane.
package upstream

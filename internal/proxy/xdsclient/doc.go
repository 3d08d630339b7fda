// Package xdsclient is trellis-proxy's ADS client: one gRPC stream to the control plane
// (envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources) carrying
// Listener, RouteConfiguration, Cluster and ClusterLoadAssignment resources, state-of-the-world.
//
// It speaks the protocol the way Envoy does, so any conforming xDS server works:
//
//   - On every new stream it asks for CDS, EDS, LDS and RDS in that order (Envoy's make-before-break
//     order). CDS and LDS are legacy wildcard subscriptions (no names); EDS and RDS carry the names set
//     with Subscribe and are only requested once that set is non-empty. The node is sent on the first
//     request of each stream only (Envoy's set_node_on_first_message_only), and each request carries
//     the last ACKed version of its type so a server can skip resending what the proxy already has.
//   - Each response is decoded and validated (type URL, protobuf, protoc-gen-validate rules, unique
//     names) and handed to the Watcher; the response is ACKed (version_info = its version) when the
//     Watcher accepts it and NACKed (version_info = the last ACKed version, error_detail with code
//     INVALID_ARGUMENT) when decoding fails or the Watcher returns an error.
//   - Responses are processed one at a time on one goroutine, which is also the only one that sends.
//     A Subscribe made inside OnResources (the usual case: EDS names come from the clusters just
//     received) is sent after that response's ACK, and does not deadlock.
//   - EDS and RDS are not "state of the world" on the wire: a response may carry only some of the
//     subscribed resources. The client keeps the accepted resources of each type and always gives the
//     Watcher the complete current set (every subscribed name it has a resource for). Resources the
//     client did not subscribe to are dropped, as the protocol says; dropping a name with Subscribe
//     forgets its resource without calling the Watcher (the Watcher made that decision itself).
//   - Withdrawing every EDS/RDS name sends a request with an empty name list. On a stream where a
//     non-empty list was already sent this means "nothing" (not wildcard), per the protocol; on a new
//     stream nothing is sent for that type at all, because a first empty request would be read as a
//     legacy wildcard subscription.
//   - A response identical (proto.Equal) to the set the Watcher already holds is ACKed without calling
//     the Watcher, so reconnects and no-op pushes cost nothing downstream.
//   - Some servers (go-control-plane's snapshot cache among them) answer a NACK by resending the same
//     version at once. The client holds a resent, already-rejected version back for a growing delay
//     (200ms doubling to 5s) before trying it again, so a bad config cannot turn into a busy loop.
//   - A broken stream is reopened with capped exponential backoff (100ms doubling to 5s, jittered,
//     reset after a stream that delivered a response). Accepted resources and ACKed versions survive
//     reconnects; the Watcher keeps its config meanwhile.
//   - SetHealth carries the application's health check (internal/proxy/apphealth) to the control
//     plane the way Istio's agent does: a request of type HealthInfoType
//     ("type.googleapis.com/istio.v1.HealthInformation") with no names, version or nonce, and
//     error_detail {code INTERNAL, message: why} when the application is unhealthy. The server never
//     answers it. It goes out when the state changes and again on every new stream, after the
//     stream's first discovery requests (never first: the node travels on the first message only),
//     so a reconnect or another control plane replica learns the current state.
//
// Only the state-of-the-world variant is implemented: no delta (incremental) xDS, no TLS to the
// control plane yet, and no other resource types (SDS, RTDS, ECDS).
//
// It must not depend on anything from the control plane (internal/xds, internal/translate,
// internal/config) nor on go-control-plane's server, cache or resource packages: only the generated
// Envoy API types, gRPC and protobuf. The tests use a real go-control-plane server, in test files only.
package xdsclient

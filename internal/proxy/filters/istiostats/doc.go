// Package istiostats is Istio's telemetry filter, istio.stats, for HTTP connection managers and
// (as a network filter before tcp_proxy) for TCP proxies: it records Istio's standard metrics
// (istio_requests_total, istio_request_duration_milliseconds, istio_request_bytes,
// istio_response_bytes, istio_tcp_*) with Istio's standard labels into the proxy's
// istiometrics.Telemetry, which the status server renders on 15020.
//
// It also does Istio's HTTP metadata exchange, which Istio runs as a separate filter
// (istio.metadata_exchange): an outbound request carries the proxy's identity in
// x-envoy-peer-metadata and x-envoy-peer-metadata-id, the inbound side reads and strips them and
// answers with its own identity in the response, which the outbound side reads and strips in turn.
// Neither the app nor anything beyond the mesh sees them. Without a peer's headers the destination
// of an outbound request comes from its host's istio.workload endpoint metadata, the destination
// service from the cluster name (outbound|port|subset|host) or else the Host header.
//
// The reporter is "destination" on listeners whose traffic_direction is INBOUND (or with the
// config's reporter SERVER_GATEWAY), "source" otherwise, as Istio decides.
//
// Config: stats.PluginConfig, given directly or in a udpa/xds TypedStruct as Istio sends it.
// Honoured: reporter, disable_host_header_fallback; accepted: debug, stat_prefix "istio"; every
// other field is rejected with its path.
package istiostats

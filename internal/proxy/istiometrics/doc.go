// Package istiometrics is a proxy's Istio telemetry state: who the proxy is (its workload identity,
// read from Istio's node metadata keys), how that identity travels to peers (Istio's metadata
// exchange headers and the istio.workload endpoint metadata), and the registry of Istio's standard
// metrics (istio_requests_total, istio_request_duration_milliseconds, ...) rendered in the
// Prometheus text format for the status port (15020).
//
// Each proxy owns one Telemetry: `trellis up` runs many proxies in one process, so nothing here is
// global. The registry's series are looked up by comparable keys built by the istio.stats filters
// (internal/proxy/filters/istiostats) without allocating; a series is created, and its labels
// rendered, once. This package depends on nothing else in the proxy.
package istiometrics

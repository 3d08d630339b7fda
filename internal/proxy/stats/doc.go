// Package stats holds trellis-proxy's counters and gauges and renders them in Envoy's admin text
// format ("name: value" lines, sorted by name) and in Prometheus's text format, with Envoy's default
// tag extraction turning name segments into labels (envoy_cluster_name, envoy_response_code_class...).
//
// Metrics are created by name at config time and the returned pointers are kept by whoever counts;
// the request path only does atomic adds. Asking for an existing name returns the same metric, which
// is how counters survive config pushes (a cluster rebuilt by CDS keeps its upstream_rq_total).
//
// It must not depend on any other part of the proxy, on net/http or on Envoy protos.
package stats

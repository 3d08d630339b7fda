// Package manifests holds what operators deploy beside Trellis: Grafana
// dashboards (grafana/*.json) and Prometheus scrape configurations
// (prometheus/*.yaml). The dashboards are embedded so that tools can install
// them, and this package names the proxy metrics they may use.
//
// Dashboards query only Istio's standard metric and label names (and the
// control plane's istiod-named metrics), so dashboards written for Istio
// work on Trellis and these work on Istio.
package manifests

import "embed"

// Dashboards are the Grafana dashboard JSON files, under "grafana/".
//
//go:embed grafana/*.json
var Dashboards embed.FS

// MetricType is a Prometheus metric type, which decides the sample names a
// family exposes (a histogram h exposes h_bucket, h_sum and h_count).
type MetricType int

const (
	Counter MetricType = iota
	Histogram
)

// ProxyMetric is one metric family a proxy exports on 15020
// /stats/prometheus.
type ProxyMetric struct {
	Name string
	Type MetricType
}

// ProxyMetrics is the contract between the dashboards and trellis-proxy:
// Istio's standard metrics (CONSOLE_API.md, docs/proxy-observability.md).
// Dashboards may use these and nothing else from a proxy; the dashboards
// test enforces that. A test that scrapes a real proxy should check that it
// exports every family listed here, with ProxyLabels.
var ProxyMetrics = []ProxyMetric{
	{"istio_requests_total", Counter},
	{"istio_request_duration_milliseconds", Histogram},
	{"istio_request_bytes", Histogram},
	{"istio_response_bytes", Histogram},
	{"istio_tcp_sent_bytes_total", Counter},
	{"istio_tcp_received_bytes_total", Counter},
	{"istio_tcp_connections_opened_total", Counter},
	{"istio_tcp_connections_closed_total", Counter},
}

// ProxyLabels are Istio's standard labels on every ProxyMetrics family
// (histograms add "le" to their buckets).
var ProxyLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_app", "source_version", "source_principal",
	"destination_workload", "destination_workload_namespace", "destination_app", "destination_version",
	"destination_service", "destination_service_name", "destination_service_namespace", "destination_principal",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
}

// SampleNames are the series names a family exposes in Prometheus's text
// format.
func (m ProxyMetric) SampleNames() []string {
	if m.Type == Histogram {
		return []string{m.Name + "_bucket", m.Name + "_sum", m.Name + "_count"}
	}
	return []string{m.Name}
}

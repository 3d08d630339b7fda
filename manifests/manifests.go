// Package manifests holds what operators deploy beside Trellis: Grafana
// dashboards (grafana/*.json) and Prometheus scrape configurations
// (prometheus/*.yaml). The dashboards are embedded so that tools can install
// them, and this package names the proxy metrics they may use.
//
// Dashboards query only Istio's standard metric and label names (and the
// control plane's istiod-named metrics), so dashboards written for Istio
// work on Trellis and these work on Istio.
package manifests

import (
	"embed"
	"fmt"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
)

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
// test enforces that. Tests that scrape real proxies check they export every
// family listed here, with ProxyLabels (ProxyContractViolations).
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

// ProxyLabels are Istio's standard labels on the ProxyMetrics families
// (histograms add "le" to their buckets); the TCP families lack the
// response ones (ProxyMetric.Labels).
var ProxyLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_app", "source_version", "source_principal",
	"destination_workload", "destination_workload_namespace", "destination_app", "destination_version",
	"destination_service", "destination_service_name", "destination_service_namespace", "destination_principal",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
}

// httpOnlyLabels are the ProxyLabels Istio puts on request metrics only.
var httpOnlyLabels = []string{"response_code", "grpc_response_status"}

// Labels are the standard labels every series of the family carries.
func (m ProxyMetric) Labels() []string {
	if strings.HasPrefix(m.Name, "istio_tcp_") {
		return without(ProxyLabels, httpOnlyLabels)
	}
	return ProxyLabels
}

// SampleNames are the series names a family exposes in Prometheus's text
// format.
func (m ProxyMetric) SampleNames() []string {
	if m.Type == Histogram {
		return []string{m.Name + "_bucket", m.Name + "_sum", m.Name + "_count"}
	}
	return []string{m.Name}
}

// ProxyContractViolations checks families scraped from a real proxy's
// /stats/prometheus against ProxyMetrics and ProxyLabels: every listed family
// for which include returns true must be there, of its type, and every one of
// its series must carry its Labels (Istio has a few more, such as the
// canonical service ones). It returns one line per problem.
func ProxyContractViolations(families map[string]*dto.MetricFamily, include func(ProxyMetric) bool) []string {
	var problems []string
	for _, m := range ProxyMetrics {
		if !include(m) {
			continue
		}
		mf, ok := families[m.Name]
		if !ok {
			problems = append(problems, m.Name+": not exported")
			continue
		}
		want := dto.MetricType_COUNTER
		if m.Type == Histogram {
			want = dto.MetricType_HISTOGRAM
		}
		if mf.GetType() != want {
			problems = append(problems, fmt.Sprintf("%s: type %v, want %v", m.Name, mf.GetType(), want))
		}
		for _, s := range mf.GetMetric() {
			var names []string
			for _, l := range s.GetLabel() {
				names = append(names, l.GetName())
			}
			if missing := without(m.Labels(), names); len(missing) > 0 {
				problems = append(problems, fmt.Sprintf("%s: series without the labels %v", m.Name, missing))
				break
			}
		}
	}
	return problems
}

// without returns the names in want that are not in have.
func without(want, have []string) []string {
	var out []string
	for _, n := range want {
		if !slices.Contains(have, n) {
			out = append(out, n)
		}
	}
	return out
}

package xds

import (
	"strconv"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// The xDS types Trellis serves, in the order of the per-type metric arrays.
const (
	typeCDS = iota
	typeEDS
	typeLDS
	typeRDS
	numTypes
)

// metricTypes are istiod's short type names, the "type" label of its
// per-type metrics (v3.GetMetricType in istio).
var metricTypes = [numTypes]string{"cds", "eds", "lds", "rds"}

// typeIndex maps a type URL to its metric array index; -1 for types Trellis
// does not serve (the library answers those without them being counted).
func typeIndex(url string) int {
	switch url {
	case resourcev3.ClusterType:
		return typeCDS
	case resourcev3.EndpointType:
		return typeEDS
	case resourcev3.ListenerType:
		return typeLDS
	case resourcev3.RouteType:
		return typeRDS
	}
	return -1
}

// Buckets are istiod's, so that histogram_quantile over a dashboard built
// for istiod reads the same.
var (
	pushTimeBuckets    = []float64{.01, .1, 1, 3, 5, 10, 20, 30}
	convergenceBuckets = []float64{.1, .5, 1, 3, 5, 10, 20, 30}
	queueTimeBuckets   = []float64{.1, .5, 1, 3, 5, 10, 20, 30}
	configSizeBuckets  = []float64{1, 10000, 1000000, 4000000, 10000000, 40000000}
)

// Metrics are the xDS server's Prometheus metrics, named and labelled as
// istiod's (pilot/pkg/xds/monitoring.go, pkg/xds/monitoring.go) so that
// dashboards and alerts written for istiod work unchanged.
//
// Per-type series are resolved once here, so recording on the push path is
// an array index and an atomic add, with no label lookups or allocations.
type Metrics struct {
	connected      *prometheus.GaugeVec // pilot_xds{version}
	pushes         [numTypes]prometheus.Counter
	pushTime       [numTypes]prometheus.Observer
	configSize     [numTypes]prometheus.Observer
	rejects        [numTypes]prometheus.Counter
	rejectsByNode  [numTypes]*prometheus.GaugeVec // pilot_xds_<type>_reject{node,err}
	internalErrors prometheus.Counter
	convergence    prometheus.Observer
	queueTime      prometheus.Observer
}

// NewMetrics creates the xDS metrics and registers them with reg. With a
// nil reg they are created but exported nowhere, so a Server never has to
// check whether it is instrumented. It panics if reg already holds metrics
// of the same names, a programming error (each control plane instance owns
// its registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	pushes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pilot_xds_pushes",
		Help: "xDS responses sent to proxies, by type (cds, eds, lds, rds).",
	}, []string{"type"})
	pushTime := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pilot_xds_push_time",
		Help:    "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
		Buckets: pushTimeBuckets,
	}, []string{"type"})
	configSize := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pilot_xds_config_size_bytes",
		Help:    "Distribution of configuration sizes pushed to clients",
		Buckets: configSizeBuckets,
	}, []string{"type"})
	rejects := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pilot_total_xds_rejects",
		Help: "Total number of XDS responses from pilot rejected by proxy.",
	}, []string{"type"})
	m := &Metrics{
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pilot_xds",
			Help: "Number of endpoints connected to this pilot using XDS.",
		}, []string{"version"}),
		internalErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pilot_total_xds_internal_errors",
			Help: "Total number of internal XDS errors in pilot.",
		}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pilot_proxy_convergence_time",
			Help:    "Delay in seconds between config change and a proxy receiving all required configuration.",
			Buckets: convergenceBuckets,
		}),
		queueTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pilot_proxy_queue_time",
			Help:    "Time in seconds, a proxy is in the push queue before being dequeued.",
			Buckets: queueTimeBuckets,
		}),
	}
	collectors := []prometheus.Collector{m.connected, pushes, pushTime, configSize, rejects,
		m.internalErrors, m.convergence.(prometheus.Collector), m.queueTime.(prometheus.Collector)}
	for i, t := range metricTypes {
		m.pushes[i] = pushes.WithLabelValues(t)
		m.pushTime[i] = pushTime.WithLabelValues(t)
		m.configSize[i] = configSize.WithLabelValues(t)
		m.rejects[i] = rejects.WithLabelValues(t)
		// Kept for istiod compatibility: istiod still exports these
		// per-node gauges beside pilot_total_xds_rejects.
		m.rejectsByNode[i] = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pilot_xds_" + t + "_reject",
			Help: "Pilot rejected " + t + " configs.",
		}, []string{"node", "err"})
		collectors = append(collectors, m.rejectsByNode[i])
	}
	if reg != nil {
		reg.MustRegister(collectors...)
	}
	return m
}

func (m *Metrics) proxyConnected(version string)    { m.connected.WithLabelValues(version).Inc() }
func (m *Metrics) proxyDisconnected(version string) { m.connected.WithLabelValues(version).Dec() }

// sent counts one response of type t carrying size bytes of resources.
func (m *Metrics) sent(t, size int) {
	if t < 0 {
		return
	}
	m.pushes[t].Inc()
	m.configSize[t].Observe(float64(size))
}

// rejected counts a NACK of type t from node with the gRPC status code the
// proxy reported (istiod's "err" label).
func (m *Metrics) rejected(t int, node string, code int32) {
	if t < 0 {
		return
	}
	m.rejects[t].Inc()
	m.rejectsByNode[t].WithLabelValues(node, strconv.Itoa(int(code))).Inc()
}

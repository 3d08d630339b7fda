package model

import "strconv"

// Istio's names for the health of WorkloadEntries whose proxy probes its
// workload (a WorkloadGroup's probe, run by the proxy from its ProxyConfig
// readinessProbe, reported on its ADS stream).
const (
	// HealthChecksAnnotation "true" on a WorkloadEntry makes it an
	// endpoint only while its Healthy condition is True. Auto-registration
	// sets it for proxies that have a readinessProbe.
	HealthChecksAnnotation = "proxy.istio.io/health-checks-enabled"
	// ConditionHealthy is the status condition that carries the last
	// report: "True", or "False" with the probe's error as its message.
	ConditionHealthy = "Healthy"
	// ConditionReady is a Pod's readiness (Kubernetes' PodReady): a Pod a
	// ServiceEntry selects is an endpoint only while it is True.
	ConditionReady = "Ready"
)

// WorkloadHealthy reports whether we may serve traffic, as istiod decides:
// a WorkloadEntry without health checks always may; one with them only
// once a report said Healthy, so that a new entry gets no traffic before
// its first probe passed (isHealthy); a Pod only while it is Ready.
func WorkloadHealthy(we *WorkloadEntry) bool {
	if we.Kind == "Pod" {
		c := we.Condition(ConditionReady)
		return c != nil && c.Status == "True"
	}
	if on, _ := strconv.ParseBool(we.Annotations[HealthChecksAnnotation]); !on {
		return true
	}
	c := we.Condition(ConditionHealthy)
	return c != nil && c.Status == "True"
}

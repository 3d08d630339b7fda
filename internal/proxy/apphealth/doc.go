// Package apphealth is trellis-proxy's application health check: Istio's ProxyConfig
// readinessProbe (the probe of a WorkloadGroup, handed to a VM's proxy in $PROXY_CONFIG), run the
// way Istio's agent runs it (pilot-agent, pkg/istio-agent/health), with the outcome reported to the
// control plane so that an auto-registered WorkloadEntry is an endpoint only while its app is
// healthy.
//
// ParseProxyConfig reads PROXY_CONFIG (YAML or JSON): the whole document becomes the node metadata
// PROXY_CONFIG, and its readinessProbe is validated into a Probe. A Runner checks the probe (HTTP
// GET, TCP connect, exec or gRPC health) together with the proxy's own readiness, and calls Report
// on transitions only: it starts unhealthy without saying so, reports healthy once
// successThreshold checks in a row pass, and unhealthy once failureThreshold checks in a row fail
// after that. Sending the report (Istio's HealthInformation request on the ADS stream) is the xDS
// client's job, not this package's.
//
// The probe types are local structs with Istio's JSON names rather than istio.io/api's
// networking and mesh packages, which would pull a large part of Istio's API into the proxy. Like
// the rest of internal/proxy, nothing here may import the control plane.
package apphealth

// Package proxy runs a trellis-proxy: it loads the Envoy bootstrap, builds the xDS node, and wires the
// runtime (internal/proxy/server), the admin API (internal/proxy/admin), the ADS client
// (internal/proxy/xdsclient) and, given Istio's readinessProbe, the application health check
// (internal/proxy/apphealth, reporting through the ADS client) together until its context ends,
// then drains. cmd/trellis-proxy is a
// thin flag parser over Run, and `trellis up` calls Run in-process, one per workload.
//
// trellis-proxy consumes standard Envoy xDS v3 only, so it runs under any conforming control plane
// (istiod included). Nothing under internal/proxy may import k8s.io/client-go, go-control-plane's
// server or cache packages, or the control plane (internal/config, internal/translate, internal/xds,
// internal/model); a test enforces this.
package proxy

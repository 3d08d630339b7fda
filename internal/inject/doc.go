// Package inject adds the Trellis sidecar to pods, as Istio's sidecar injector does: the policy
// (which pods get a proxy), the template (what is added: the istio-init container that installs
// the iptables capture rules, and the istio-proxy container running trellis-proxy, configured
// from the pod's effective ProxyConfig settings), and the mutating admission webhook that applies
// it in a cluster. `trellis inject` applies the same template to YAML files.
//
// The container, annotation and label names are Istio's (istio-init, istio-proxy,
// sidecar.istio.io/status, security.istio.io/tlsMode, ...) so kubectl habits, dashboards and
// tools written for Istio keep working.
package inject

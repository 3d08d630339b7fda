// Package translate turns the mesh configuration model into the Envoy v3
// resources one proxy needs: listeners, route configurations, clusters and
// cluster load assignments, named the way Istio names them so existing
// tooling and habits carry over.
//
// Translation is pure: a *model.Snapshot and a *model.Proxy in, resources or
// an error out. It must not do I/O, log, or depend on gRPC, Kubernetes, any
// config source or the xDS server; those sit upstream (internal/config,
// internal/model) or downstream (internal/xds) of it.
//
// One file per concern: outbound.go (the sidecar's virtualOutbound listener
// and its "15001" routes), inbound.go, gateway.go, routes.go (VirtualService
// http routes), clusters.go, endpoints.go and hcm.go (shared listener and
// connection-manager helpers).
package translate

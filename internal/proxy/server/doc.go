// Package server is the trellis-proxy runtime: Proxy holds the current configuration (static
// resources from the bootstrap plus whatever LDS, RDS, CDS and EDS delivered), turns every update into
// the proxy's own config through internal/proxy/xdsconfig, and applies it: listeners through
// internal/proxy/listener, routes and clusters by publishing a new immutable snapshot that request
// handlers (internal/proxy/hcm) load once per request.
//
// Proxy implements the xDS client's Watcher (OnResources) and subscribes to the RDS and EDS names the
// current listeners and clusters need. An update that fails to convert or to bind is rejected as a
// whole (the caller NACKs it) and the previous config keeps serving. A route naming a cluster that
// does not exist yet is not an error: such requests get a 503 until the cluster arrives.
//
// Unchanged clusters (proto.Equal) keep their *upstream.Cluster, hence their connection pools, load
// balancer position and host counters, across pushes.
//
// It must not depend on the control plane (internal/config, internal/translate, internal/xds,
// internal/model) nor on go-control-plane's server or cache packages.
package server
